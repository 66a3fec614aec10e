"""Keyframes and motion on SMPL armatures and retargeted rigs: ``key_pose``, ``key_sequence`` (bulk),
``load_amass``. On an armature ``smpl_rig.blender`` did not build, the bones ``smpl_rig.blender_retarget``
drives are keyed (and its root bone's location).

Blender glue over ``smpl_rig.blender`` (recognising and reading the armature) and ``smpl_rig.bones`` (the
formula). Keys store quaternions sign-aligned with the previous key, never Euler. Version-specific
animation APIs (slotted actions from Blender 4.4 on) are chosen by ``bpy.app.version``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import bpy
import numpy as np

from . import amass, bones, frames
from . import rotations as rot
from . import blender_retarget
from .blender import bone_frames_of, corrective_key_blocks, is_smpl_armature, require_poseable, rest_joints
from .body import NUM_POSE_FEATURES, pose_corrective_features
from .skeleton import JOINT_NAMES, NUM_JOINTS

__all__ = ["key_pose", "key_sequence", "load_amass", "add_pose_asset", "AmassImport", "DEFAULT_AMASS_FPS"]

DEFAULT_AMASS_FPS = amass.DEFAULT_FPS
_SLOTTED_ACTIONS = bpy.app.version >= (4, 4, 0)
_FCURVE_GROUP_ARG = bpy.app.version >= (5, 0, 0)
_INTERPOLATION = {"CONSTANT": 0, "LINEAR": 1, "BEZIER": 2}


# --- animation curves ------------------------------------------------------------------------------------

def _channels(id_data, action_name: str):
    """What holds the F-curves animating ``id_data`` (both kinds have ``.fcurves`` and ``.groups``): its
    slot's channelbag on Blender ≥ 4.4 (slotted actions), the action itself before. Creates the action,
    slot, layer and strip when missing."""
    anim = id_data.animation_data or id_data.animation_data_create()
    if anim.action is None:
        anim.action = bpy.data.actions.new(action_name)
    action = anim.action
    if not _SLOTTED_ACTIONS:
        return action
    slot = anim.action_slot
    if slot is None:
        slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
        anim.action_slot = slot
    return _slot_channels(action, slot)


def _slot_channels(action, slot):
    """The channelbag of ``slot`` in ``action``'s first layer and strip (created when missing)."""
    layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
    strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(slot, ensure=True)


def _fcurve(channels, data_path: str, index: int, group: str):
    """The F-curve for (data_path, index), created in ``group`` when missing."""
    curve = channels.fcurves.find(data_path, index=index)
    if curve is not None:
        return curve
    if not _SLOTTED_ACTIONS:
        return channels.fcurves.new(data_path, index=index, action_group=group)
    if _FCURVE_GROUP_ARG:
        return channels.fcurves.new(data_path, index=index, group_name=group)
    curve = channels.fcurves.new(data_path, index=index)   # Blender 4.4–4.5: group set afterwards
    curve.group = channels.groups.get(group) or channels.groups.new(group)
    return curve


def _key_frames(curve) -> np.ndarray:
    count = len(curve.keyframe_points)
    co = np.empty(2 * count, dtype=np.float32)
    curve.keyframe_points.foreach_get("co", co)
    return co[0::2].astype(np.float64)


def _neighbour_key_value(curves, frame: float, *, or_after: bool) -> np.ndarray | None:
    """Values of a multi-channel property (one curve per channel) at its last key before ``frame``; with
    ``or_after``, at its first key after when none is before. None when there is no such key."""
    times = _key_frames(curves[0])
    before, after = times[times < frame - 1e-4], times[times > frame + 1e-4]
    if len(before):
        reference = before.max()
    elif or_after and len(after):
        reference = after.min()
    else:
        return None
    return np.array([c.evaluate(reference) for c in curves], dtype=np.float64)


def _write_keys(curve, frames_: np.ndarray, values: np.ndarray, interpolation: int) -> None:
    """Replace the curve's keys in [frames_.min(), frames_.max()] by (frames_, values) in one bulk write."""
    points = curve.keyframe_points
    count = len(points)
    lo, hi = frames_.min() - 1e-4, frames_.max() + 1e-4
    if count:
        co = np.empty(2 * count, dtype=np.float32)
        kinds = np.empty(count, dtype=np.int32)
        points.foreach_get("co", co)
        points.foreach_get("interpolation", kinds)
        keep = (co[0::2] < lo) | (co[0::2] > hi)
        frames_ = np.concatenate([co[0::2][keep], frames_])
        values = np.concatenate([co[1::2][keep], values])
        kinds = np.concatenate([kinds[keep], np.full(len(values) - keep.sum(), interpolation, dtype=np.int32)])
        order = np.argsort(frames_, kind="stable")
        frames_, values, kinds = frames_[order], values[order], kinds[order]
        if hasattr(points, "clear"):
            points.clear()
        else:                      # Blender 3.4 has no clear()
            while len(points):
                points.remove(points[-1], fast=True)
    else:
        kinds = np.full(len(frames_), interpolation, dtype=np.int32)
    points.add(len(frames_))
    points.foreach_set("co", np.stack([frames_, values], -1).astype(np.float32).ravel())
    points.foreach_set("interpolation", kinds)
    curve.update()


def _insert_key(curve, frame: float, value: float) -> None:
    curve.keyframe_points.insert(frame, value, options={"FAST"})


def _quat_curves(channels, name: str):
    path = f'pose.bones["{name}"].rotation_quaternion'
    return [_fcurve(channels, path, k, name) for k in range(4)]


def _location_curves(channels, name: str):
    path = f'pose.bones["{name}"].location'
    return [_fcurve(channels, path, k, name) for k in range(3)]


def _corrective_curves(key_blocks):
    channels = _channels(key_blocks.id_data, f"{key_blocks.id_data.name}_correctives")
    return [_fcurve(channels, f'key_blocks["{key_blocks[k + 1].name}"].value', 0, "pose correctives")
            for k in range(NUM_POSE_FEATURES)]


def _keyed_bones(obj) -> tuple[list, str | None]:
    """The bones whose rotations carry a pose, and the bone whose location carries the translation."""
    if is_smpl_armature(obj) or getattr(obj, "type", None) != "ARMATURE":
        require_poseable(obj)                            # says what is wrong with a non-armature
        return list(JOINT_NAMES), JOINT_NAMES[0]
    calibration = blender_retarget.calibrate(obj)        # ValueError with the one sentence for other rigs
    if obj.mode == "EDIT":
        raise ValueError(f"armature {obj.name!r} is in Edit Mode; switch to Object or Pose Mode to key it")
    return list(calibration.names), calibration.root


def key_pose(obj, frame: float) -> None:
    """Keyframe the armature's current pose at ``frame``: rotation quaternions of the 24 bones (each
    sign-aligned with that bone's previous key, so interpolation takes the short way), the pelvis location
    when it is translated or already animated, and the pose-corrective shape-key values. On a retargeted
    rig: its driven bones and its root bone's location."""
    names, location_bone = _keyed_bones(obj)
    frame = float(frame)
    if not math.isfinite(frame):
        raise ValueError(f"frame must be a finite number, got {frame}")
    other_modes = [n for n in names if obj.pose.bones[n].rotation_mode != "QUATERNION"]
    if other_modes:
        raise ValueError(f"bones {', '.join(other_modes)} are not in quaternion rotation mode; SMPL keys are "
                         f"quaternions (apply_pose sets that mode)")
    channels = _channels(obj, f"{obj.name}_action")
    for name in names:
        pose_bone = obj.pose.bones[name]
        curves = _quat_curves(channels, name)
        quat = np.array(pose_bone.rotation_quaternion, dtype=np.float64)   # w, x, y, z
        previous = _neighbour_key_value(curves, frame, or_after=True)
        if previous is not None and float(previous @ quat) < 0:
            quat = -quat
            pose_bone.rotation_quaternion = quat.tolist()   # same rotation, now continuous with the keys
        for curve, value in zip(curves, quat):
            _insert_key(curve, frame, float(value))
            curve.update()
    if location_bone is not None:
        root = obj.pose.bones[location_bone]
        location_animated = channels.fcurves.find(f'pose.bones["{location_bone}"].location') is not None
        if location_animated or any(abs(v) > 0 for v in root.location):
            for curve, value in zip(_location_curves(channels, location_bone), root.location):
                _insert_key(curve, frame, float(value))
                curve.update()
    key_blocks = corrective_key_blocks(obj) if is_smpl_armature(obj) else None
    if key_blocks is not None:
        for k, curve in enumerate(_corrective_curves(key_blocks)):
            _insert_key(curve, frame, float(key_blocks[k + 1].value))
            curve.update()


def add_pose_asset(obj, name: str):
    """Put the armature's current pose in the Pose Library: a new one-frame action holding the quaternions
    of the bones a pose drives (and the root location when it is moved), marked as an asset. The armature's
    own animation is not touched. Returns the action."""
    names, location_bone = _keyed_bones(obj)
    action = bpy.data.actions.new(name)
    if _SLOTTED_ACTIONS:
        channels = _slot_channels(action, action.slots.new(id_type=obj.id_type, name=obj.name))
    else:
        channels = action
    pose_bones = obj.pose.bones
    for bone in names:
        for curve, value in zip(_quat_curves(channels, bone), pose_bones[bone].rotation_quaternion):
            _insert_key(curve, 1.0, float(value))
    if location_bone is not None and any(abs(v) > 0 for v in pose_bones[location_bone].location):
        for curve, value in zip(_location_curves(channels, location_bone), pose_bones[location_bone].location):
            _insert_key(curve, 1.0, float(value))
    action.asset_mark()
    return action


def _scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def _retargeted_keys(obj, names, location_bone, rotmats, translations):
    """Quaternions (n, k, 4) of the driven bones and root locations (n, 3) for each pose, by posing the rig
    (``blender_retarget.apply_pose`` without floor contact) and reading the bones back."""
    options = blender_retarget.ApplyOptions(floor_contact=False)
    pose_bones = obj.pose.bones
    quats = np.empty((len(rotmats), len(names), 4))
    locations = np.zeros((len(rotmats), 3))
    for t, pose in enumerate(rotmats):
        blender_retarget.apply_pose(obj, pose, options=options,
                                    translation=None if translations is None else translations[t])
        quats[t] = [tuple(pose_bones[n].rotation_quaternion) for n in names]
        if location_bone is not None:
            locations[t] = tuple(pose_bones[location_bone].location)
    return quats, locations


def key_sequence(obj, poses, fps: float | None = None, start_frame: float | None = None, *,
                 translations=None, global_orient: str = "keep", interpolation: str = "LINEAR") -> np.ndarray:
    """Keyframe a motion in bulk (one ``keyframe_points.add`` + ``foreach_set`` per F-curve).

    poses: (n, 24, 3) axis-angle, (n, 24, 3, 3), (n, 24, 6) 6D or (n, 24, 4) wxyz, SMPL frame.
    fps: the motion's frame rate (default: the scene's); pose k is placed at time k / fps, i.e. on frame
        ``start_frame + k / fps × scene fps`` (fractional frames when the rates differ: resample first,
        as ``load_amass`` does, to land on whole frames).
    start_frame: frame of pose 0 (default: the scene's current frame).
    translations: optional (n, 3) SMPL ``transl`` per pose, keyed on the pelvis location.
    global_orient: "keep" or "upright" (joint 0 replaced by identity).
    interpolation: "LINEAR" (default), "BEZIER" or "CONSTANT" for the new keys.

    Quaternions are sign-aligned over time (and with any key just before the range); keys already in the
    range are replaced, keys outside it kept. Pose-corrective shape-key values are keyed too. Everything
    is validated before any key is written. Returns the frames used (n,).
    """
    names, location_bone = _keyed_bones(obj)
    bones.check_global_orient(global_orient)
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}")
    try:
        array = np.asarray(poses, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"poses must be an array of numbers: {error}") from None
    if array.ndim < 3 or array.shape[0] == 0:
        raise ValueError(f"poses must be (n, 24, ...) with n ≥ 1, got shape {array.shape}")
    rotmats = np.array(rot.pose_to_rotmat(array, num_joints=NUM_JOINTS), dtype=np.float64)
    if rotmats.shape[1:] != (NUM_JOINTS, 3, 3) or rotmats.ndim != 4:
        raise ValueError(f"poses must be (n, 24, ...) for one motion, got shape {array.shape}")
    bones.check_rotmats(rotmats, "poses")
    count = len(rotmats)
    translations = bones.check_translation(translations, count)
    scene = bpy.context.scene
    scene_fps = _scene_fps(scene)
    fps = scene_fps if fps is None else float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    start = float(scene.frame_current if start_frame is None else start_frame)
    if not math.isfinite(start):
        raise ValueError(f"start_frame must be finite, got {start_frame}")
    if global_orient == "upright":
        rotmats[:, 0] = np.eye(3)

    frame_numbers = start + np.arange(count) * (scene_fps / fps)
    if is_smpl_armature(obj):
        bone_frames = bone_frames_of(obj)
        quats = bones.pose_bone_quats(bone_frames, rotmats)                          # (n, 24, 4)
        locations = bones.pelvis_location(bone_frames, np.zeros((count, 3)) if translations is None else translations)
    else:
        quats, locations = _retargeted_keys(obj, names, location_bone, rotmats, translations)
    quats = rot.quat_wxyz_align_signs(quats, axis=0)
    channels = _channels(obj, f"{obj.name}_action")
    kind = _INTERPOLATION[interpolation]
    for i, name in enumerate(names):
        curves = _quat_curves(channels, name)
        previous = _neighbour_key_value(curves, frame_numbers[0], or_after=False)
        if previous is not None and float(previous @ quats[0, i]) < 0:
            quats[:, i] *= -1   # continue the keys already before this range without a flip
        for k, curve in enumerate(curves):
            _write_keys(curve, frame_numbers, quats[:, i, k], kind)
    location_path = f'pose.bones["{location_bone}"].location'
    if location_bone is not None and (translations is not None or channels.fcurves.find(location_path) is not None):
        # No translations over a range of an already translated motion means "at rest", as in apply_pose.
        for k, curve in enumerate(_location_curves(channels, location_bone)):
            _write_keys(curve, frame_numbers, locations[:, k], kind)
    key_blocks = corrective_key_blocks(obj) if is_smpl_armature(obj) else None
    if key_blocks is not None:
        features = pose_corrective_features(rotmats)
        for k, curve in enumerate(_corrective_curves(key_blocks)):
            _write_keys(curve, frame_numbers, features[:, k], kind)
    return frame_numbers


# --- AMASS ------------------------------------------------------------------------------------------------

@dataclass
class AmassImport:
    """What ``load_amass`` keyed: ``num_frames`` scene frames from ``start_frame`` to ``end_frame``,
    covering ``duration_s`` seconds of a motion recorded at ``source_fps`` (``scene_fps`` in the scene);
    ``betas`` as stored in the file (the armature keeps its own rest skeleton)."""
    num_frames: int
    start_frame: int
    end_frame: int
    source_fps: float
    scene_fps: float
    duration_s: float
    betas: np.ndarray


def load_amass(path, obj, *, fps: float | None = None, start_frame: int | None = None,
               set_frame_range: bool = True) -> AmassImport:
    """Import an AMASS-layout ``.npz`` motion onto an SMPL armature.

    The file holds ``poses`` (n, 156) SMPL-H or (n, 72) SMPL axis-angle (also (n, 165) SMPL-X, (n, 66)),
    ``trans`` (n, 3) (optional), ``betas`` (optional), and ``mocap_frame_rate`` or ``mocap_framerate``.
    fps: the motion's frame rate, overriding the file's; when neither gives one, 120 fps with a warning.
    start_frame: first scene frame (default: the scene's start frame).
    set_frame_range: extend the scene's frame range to show the whole motion.

    AMASS data is Z-up: the global orientation and translation are re-expressed in the SMPL frame about
    the armature's rest pelvis (``smpl_rig.frames``). The motion is resampled by TIME onto the scene's
    frame rate (slerp between neighbouring recorded poses), so its duration is kept, then keyed with
    ``key_sequence``. The armature keeps its own rest skeleton (the file's betas are returned, not applied).
    On a retargeted rig the pivot is the mannequin's rest pelvis and translations are scaled to the rig.
    """
    _keyed_bones(obj)
    motion = amass.read_amass(path, fps=fps)
    rotmats, translations = motion.rotmats(), motion.translations.copy()

    # Z-up → SMPL frame; the global rotation pivots about the rest pelvis J0.
    pelvis_rest = rest_joints(obj)[0] if is_smpl_armature(obj) else blender_retarget.reference_joints()[0]
    rotmats[:, 0] = frames.amass_to_smpl_orient(rotmats[:, 0])
    _, translations = frames.change_global_frame(np.eye(3), frames.AMASS_TO_SMPL, translations, pelvis_rest)

    scene = bpy.context.scene
    scene_fps = _scene_fps(scene)
    rotmats, translations, duration = amass.resample_by_time(rotmats, translations, motion.fps, scene_fps)
    start = int(scene.frame_start if start_frame is None else start_frame)
    key_sequence(obj, rotmats, fps=scene_fps, start_frame=start, translations=translations)
    end = start + len(rotmats) - 1
    if set_frame_range:
        scene.frame_start = min(scene.frame_start, start)
        scene.frame_end = max(scene.frame_end, end)
    return AmassImport(num_frames=len(rotmats), start_frame=start, end_frame=end, source_fps=motion.fps,
                       scene_fps=scene_fps, duration_s=duration, betas=motion.betas)
