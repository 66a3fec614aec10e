"""The licence-free default body: a skinned wooden mannequin on SMPL's 24-joint skeleton.

The asset ``smpl_rig/data/mannequin.npz`` is derived from the Apache-2.0 package ``mannequin-x``
(notice: ``smpl_rig/data/MANNEQUIN_LICENSE.txt``); ``scripts/make_mannequin.py`` regenerates it. It has
no shape or pose-corrective blendshapes: its rest joints are given, not regressed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .skeleton import JOINT_NAMES, NUM_JOINTS
from .smpl_file import BodyModelError

__all__ = ["MANNEQUIN_LICENSE_PATH", "MANNEQUIN_PATH", "read_mannequin", "read_rest_joints"]

MANNEQUIN_PATH = Path(__file__).resolve().parent / "data" / "mannequin.npz"
MANNEQUIN_LICENSE_PATH = MANNEQUIN_PATH.with_name("MANNEQUIN_LICENSE.txt")


def read_mannequin(path: Path = MANNEQUIN_PATH) -> dict:
    """The mannequin's arrays: ``rest_joints`` (24, 3), ``vertices`` (V, 3), ``weights`` (V, 24) float64 (rows
    sum to 1), ``faces`` (F, 3) int32. ``smpl_rig.body.load("mannequin")`` makes the ``Body``."""
    if not path.is_file():
        raise BodyModelError(f"the mannequin asset is missing ({path}); run scripts/make_mannequin.py")
    with np.load(path, allow_pickle=False) as data:
        missing = {"rest_joints", "vertices", "faces", "weights", "joint_names"} - set(data.files)
        if missing:
            raise BodyModelError(f"{path.name} lacks {', '.join(sorted(missing))}; regenerate it")
        if tuple(data["joint_names"]) != JOINT_NAMES:
            raise BodyModelError(f"{path.name} is not in SMPL joint order; regenerate it")
        rest_joints = data["rest_joints"].astype(np.float64)
        vertices = data["vertices"].astype(np.float64)
        faces = data["faces"].astype(np.int32)
        weights = data["weights"].astype(np.float64)
    if rest_joints.shape != (NUM_JOINTS, 3) or vertices.ndim != 2 or vertices.shape[1] != 3 \
            or faces.ndim != 2 or faces.shape[1] != 3 or weights.shape != (len(vertices), NUM_JOINTS):
        raise BodyModelError(f"{path.name} has wrong shapes: joints {rest_joints.shape}, vertices "
                             f"{vertices.shape}, faces {faces.shape}, weights {weights.shape}")
    # Stored as float32: renormalise so the rows sum to 1 to float64 precision, as Body promises.
    weights /= weights.sum(1, keepdims=True)
    return {"rest_joints": rest_joints, "vertices": vertices, "faces": faces, "weights": weights}


def read_rest_joints(path: Path = MANNEQUIN_PATH) -> np.ndarray:
    """Only the mannequin's (24, 3) float64 rest joints: an .npz member loads on its own, so this skips the
    mesh (a millisecond instead of a few hundred; the chat's stick figures need only the skeleton)."""
    if not path.is_file():
        raise BodyModelError(f"the mannequin asset is missing ({path}); run scripts/make_mannequin.py")
    with np.load(path, allow_pickle=False) as data:
        if tuple(data["joint_names"]) != JOINT_NAMES or data["rest_joints"].shape != (NUM_JOINTS, 3):
            raise BodyModelError(f"{path.name} is not in SMPL joint order; regenerate it")
        return data["rest_joints"].astype(np.float64)
