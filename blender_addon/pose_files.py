"""Pose files the add-on exports and imports: SMPL parameters as .npz or .json. No bpy here.

Both hold one pose in the SMPL model frame as axis-angle, the layout SMPL tools expect:
``global_orient`` (3,) and ``body_pose`` (23 × 3 = 69,). Import also accepts a flat ``poses`` array of
72+ numbers (AMASS-style; the first frame and first 72 values are used, and an AMASS file's Z-up
orientation is NOT converted: import those through ``smpl_rig.blender_keys.load_amass``) and a ``rotmat``
(24, 3, 3) array. Files are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smpl_rig import rotations
from smpl_rig.skeleton import JOINT_NAMES, NUM_JOINTS

from .chat_state import PoseFormatError, check_rotmats

JSON_FORMAT = "posegpt-pose"
JSON_VERSION = 1


def _rotvecs_to_rotmats(rotvec) -> np.ndarray:
    rotvec = np.asarray(rotvec, dtype=np.float64)
    if rotvec.size < NUM_JOINTS * 3:
        raise PoseFormatError(f"an axis-angle pose needs {NUM_JOINTS * 3} numbers, got {rotvec.size}")
    return check_rotmats(rotations.rotvec_to_rotmat(rotvec.reshape(-1)[: NUM_JOINTS * 3].reshape(NUM_JOINTS, 3)))


def _from_mapping(data) -> np.ndarray:
    """(24, 3, 3) from a dict-like of arrays with any of the accepted layouts."""
    keys = set(data.keys())
    if "rotmat" in keys:
        return check_rotmats(np.asarray(data["rotmat"], dtype=np.float64).reshape(NUM_JOINTS, 3, 3))
    if {"global_orient", "body_pose"} <= keys:
        flat = np.concatenate([np.asarray(data["global_orient"], dtype=np.float64).reshape(-1)[:3],
                               np.asarray(data["body_pose"], dtype=np.float64).reshape(-1)[:69]])
        return _rotvecs_to_rotmats(flat)
    if "poses" in keys:
        poses = np.asarray(data["poses"], dtype=np.float64)
        return _rotvecs_to_rotmats(poses.reshape(-1, poses.shape[-1])[0] if poses.ndim > 1 else poses)
    if "rotvec" in keys:
        return _rotvecs_to_rotmats(data["rotvec"])
    raise PoseFormatError("no pose found: expected 'global_orient' + 'body_pose', 'poses', 'rotvec' or "
                          f"'rotmat', found {sorted(keys)}")


def save_pose(path, rotmats) -> Path:
    """Write an SMPL-frame pose (24, 3, 3) to ``path``; the suffix (.npz or .json) picks the format."""
    path = Path(path)
    rotvec = rotations.rotmat_to_rotvec(check_rotmats(rotmats))          # (24, 3)
    if path.suffix.lower() == ".npz":
        np.savez(path, global_orient=rotvec[0], body_pose=rotvec[1:].reshape(-1),
                 frame=np.array("smpl"), joint_names=np.array(JOINT_NAMES))
    elif path.suffix.lower() == ".json":
        path.write_text(json.dumps({
            "format": JSON_FORMAT, "version": JSON_VERSION, "frame": "smpl",
            "joint_names": list(JOINT_NAMES),
            "global_orient": rotvec[0].tolist(), "body_pose": rotvec[1:].reshape(-1).tolist()}, indent=1))
    else:
        raise ValueError(f"pose files end in .npz or .json, not {path.suffix!r}")
    return path


def load_pose(path) -> np.ndarray:
    """Read a pose file written by ``save_pose`` (or another SMPL-parameter file) → (24, 3, 3) float64."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "frame" in data.files and str(data["frame"]) != "smpl":
                raise PoseFormatError(f"{path.name} is in the {str(data['frame'])!r} frame, not 'smpl'")
            return _from_mapping({k: data[k] for k in data.files if k not in ("frame", "joint_names")})
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise PoseFormatError(f"{path.name} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PoseFormatError(f"{path.name} must hold a JSON object")
        if data.get("frame", "smpl") != "smpl":
            raise PoseFormatError(f"{path.name} is in the {data['frame']!r} frame, not 'smpl'")
        return _from_mapping({k: v for k, v in data.items() if k not in ("format", "version", "frame",
                                                                          "joint_names")})
    raise PoseFormatError(f"pose files end in .npz or .json, not {path.suffix!r}")
