"""Benchmark: SMPL poses retargeted onto a generated Rigify rig, against the SMPL armature side by side.

Run:  .venv/bin/python bench/bench_retarget.py          (headless bpy module, about 30 s: Rigify generates)

Prints:
  retarget_mean_deg       mean angle between each mapped bone segment of the Rigify rig (FK controls driven,
                          joints read on its ORG- bones) and the same segment of the mannequin posed with the
                          same rotations, over POSES poses of the project's corpus (target ≤ 1)
  retarget_max_deg        the largest of those angles (target ≤ 3)
  retarget_branch_max_deg the largest angle of the branch segments (pelvis → hips, spine3 → collars), which
                          depend on the rig's rest proportions, not on the pose (informational)
  retarget_apply_ms       median time of one ``blender_retarget.apply_pose`` on the Rigify rig (no floor contact)
  smpl_apply_ms           median time of one ``blender.apply_pose`` on the mannequin's SMPL armature, same run
  retarget_apply_ratio    retarget_apply_ms / smpl_apply_ms (target ≤ 2)
  retarget_metarig_apply_ms  the same apply on Rigify's metarig
  retarget_floor_apply_ms apply with floor contact on (one view-layer evaluation and a mesh read more)
  retarget_calibrate_ms   reading the Rigify rig once (cached afterwards)
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import bpy
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import rig_fixtures  # noqa: E402
from bench_armature import median_ms  # noqa: E402  (timed the same way as the SMPL rig's figures)
from smpl_rig import blender as smpl_blender  # noqa: E402
from smpl_rig import blender_retarget, frames, kinematics, retarget  # noqa: E402
from smpl_rig.body import load  # noqa: E402
from smpl_rig.skeleton import JOINT_NAMES  # noqa: E402
from training.corpus.generator import PoseGenerator  # noqa: E402

POSES = 200
REPEATS = 300
SEED = 14


def segment_errors(rig, poses, mannequin):
    mapping = blender_retarget.rig_mapping(rig)
    mapped = np.array([j in mapping.joints for j in JOINT_NAMES])
    options = blender_retarget.ApplyOptions(floor_contact=False)
    out = {}
    for branches in (False, True):
        segments = retarget.mapped_segments(mapped, branches=branches)
        errors = []
        for rotmats in poses:
            blender_retarget.apply_pose(rig, rotmats, options=options)
            got = blender_retarget.world_joint_positions(rig, mapping)
            want = frames.smpl_points_to_blender(kinematics.forward_kinematics(mannequin.rest_joints, rotmats).joints)
            errors.append(retarget.direction_angles_deg(retarget.segment_directions(got, segments),
                                                        retarget.segment_directions(want, segments)))
        out[branches] = np.array(errors)
    return out[False], out[True]


def main():
    generator = PoseGenerator(seed=SEED)
    poses = np.array([generator.sample().rotmat for _ in range(POSES)])
    mannequin = load("mannequin")
    cycle = iter(range(10**9))
    next_pose = lambda: poses[next(cycle) % POSES]
    off = blender_retarget.ApplyOptions(floor_contact=False)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    smpl = smpl_blender.build_armature(mannequin)
    rigify = rig_fixtures.rigify_generated()
    metarig = rig_fixtures.rigify_metarig()
    start = time.perf_counter()
    blender_retarget.calibrate(rigify)
    calibrate_ms = 1000 * (time.perf_counter() - start)

    errors, with_branches = segment_errors(rigify, poses, mannequin)
    branch_only = with_branches.max(0)
    retarget_ms, smpl_ms, metarig_ms = [], [], []
    for _ in range(3):                  # interleaved, so both see the same machine load
        smpl_ms.append(median_ms(lambda: smpl_blender.apply_pose(smpl, next_pose()), REPEATS // 3))
        for rig, times in ((rigify, retarget_ms), (metarig, metarig_ms)):
            times.append(median_ms(lambda: blender_retarget.apply_pose(rig, next_pose(), options=off), REPEATS // 3))
    floor_ms = median_ms(lambda: blender_retarget.apply_pose(rigify, next_pose()), 30)
    retarget_apply, smpl_apply = statistics.median(retarget_ms), statistics.median(smpl_ms)

    print(f"retarget_mean_deg: {errors.mean():.4f}")
    print(f"retarget_max_deg: {errors.max():.4f}")
    print(f"retarget_branch_max_deg: {branch_only.max():.2f}")
    print(f"retarget_apply_ms: {retarget_apply:.3f}")
    print(f"smpl_apply_ms: {smpl_apply:.3f}")
    print(f"retarget_apply_ratio: {retarget_apply / smpl_apply:.2f}")
    print(f"retarget_metarig_apply_ms: {statistics.median(metarig_ms):.3f}")
    print(f"retarget_floor_apply_ms: {floor_ms:.2f}")
    print(f"retarget_calibrate_ms: {calibrate_ms:.0f}")


if __name__ == "__main__":
    main()
