"""Benchmark: posing an SMPL armature, and bulk keying against a per-frame keyframe_insert loop.

Run:  .venv/bin/python bench/bench_armature.py          (headless bpy module, about 10 s)

Prints:
  pose_apply_ms          median time of one ``apply_pose`` on the mannequin armature (validation,
                         conversion, 24 bone writes)
  pose_apply_eval_ms     the same plus the view-layer update that moves the bones and deforms the mesh
  pose_apply_correctives_ms  one ``apply_pose`` on a synthetic SMPL body with its 207 corrective shape keys
  keying_loop_ms         keying FRAMES frames with ``pose_bone.keyframe_insert`` per bone per frame
                         (quaternions already computed: the loop pays only for keying)
  keying_bulk_ms         ``key_sequence`` on the same motion (conversion and sign alignment included)
  bulk_keying_speedup    keying_loop_ms / keying_bulk_ms, measured side by side in this run (target ≥ 20)
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from smpl_rig import blender as smpl_blender  # noqa: E402
from smpl_rig import blender_keys as smpl_keys  # noqa: E402
from smpl_rig import body as smpl_body  # noqa: E402
from smpl_rig import rotations as rot  # noqa: E402
from smpl_rig.skeleton import JOINT_NAMES  # noqa: E402

FRAMES = 1000
POSE_REPEATS = 300
SEED = 0


def fresh_armature(body):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return smpl_blender.build_armature(body)


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_pose_apply(body, poses):
    obj = fresh_armature(body)
    cycle = iter(range(10**9))
    apply_ms = median_ms(lambda: smpl_blender.apply_pose(obj, poses[next(cycle) % len(poses)]), POSE_REPEATS)

    def apply_and_evaluate():
        smpl_blender.apply_pose(obj, poses[next(cycle) % len(poses)])
        bpy.context.view_layer.update()
    return apply_ms, median_ms(apply_and_evaluate, POSE_REPEATS // 3)


def bench_keying(body, motion):
    # Per-frame loop: the way most scripts key a motion.
    obj = fresh_armature(body)
    quats = rot.quat_wxyz_align_signs(smpl_blender.pose_bone_quaternions(obj, motion), axis=0)  # (FRAMES, 24, 4)
    pose_bones = [obj.pose.bones[name] for name in JOINT_NAMES]
    start = time.perf_counter()
    for frame in range(FRAMES):
        for i, pose_bone in enumerate(pose_bones):
            pose_bone.rotation_quaternion = quats[frame, i].tolist()
            pose_bone.keyframe_insert("rotation_quaternion", frame=frame + 1, group=pose_bone.name)
    loop_ms = 1000 * (time.perf_counter() - start)

    # Bulk: one keyframe_points.add + foreach_set per F-curve.
    obj = fresh_armature(body)
    start = time.perf_counter()
    smpl_keys.key_sequence(obj, motion, fps=bpy.context.scene.render.fps, start_frame=1)
    bulk_ms = 1000 * (time.perf_counter() - start)
    return loop_ms, bulk_ms


def main():
    rng = np.random.default_rng(SEED)
    mannequin = smpl_body.load("mannequin")
    poses = rot.rotvec_to_rotmat(rng.normal(0, 0.5, (64, 24, 3)))
    apply_ms, apply_eval_ms = bench_pose_apply(mannequin, poses)

    from smpl_fixtures import write_synthetic_smpl
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "SMPL_NEUTRAL.npz"
        write_synthetic_smpl(path, fmt="npz", seed=SEED, num_vertices=6890)
        smpl = smpl_body.load(str(path))
    smpl_obj = fresh_armature(smpl)
    cycle = iter(range(10**9))
    correctives_ms = median_ms(lambda: smpl_blender.apply_pose(smpl_obj, poses[next(cycle) % len(poses)]),
                               POSE_REPEATS)

    t = np.linspace(0, 4 * np.pi, FRAMES)[:, None, None]
    motion = rot.rotvec_to_rotmat(rng.normal(0, 0.6, (1, 24, 3)) * np.sin(t) + rng.normal(0, 0.3, (1, 24, 3)))
    loop_ms, bulk_ms = bench_keying(mannequin, motion)

    print(f"pose_apply_ms: {apply_ms:.3f}")
    print(f"pose_apply_eval_ms: {apply_eval_ms:.3f}")
    print(f"pose_apply_correctives_ms: {correctives_ms:.3f}")
    print(f"keying_loop_ms: {loop_ms:.1f}")
    print(f"keying_bulk_ms: {bulk_ms:.1f}")
    print(f"bulk_keying_speedup: {loop_ms / bulk_ms:.1f}")


if __name__ == "__main__":
    main()
