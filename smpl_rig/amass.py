"""AMASS motion files: the one reader of their layout, shared by the Blender import and training.

An AMASS ``.npz`` holds ``poses`` (n, W) axis-angle in AMASS's Z-up frame, where W is 156 (SMPL-H, the
usual case), 165 (SMPL-X), 72 (SMPL) or 66 (body only); ``trans`` (n, 3); ``betas``; and the frame rate as
``mocap_frame_rate`` or (older releases) ``mocap_framerate``. Joints 0..21 mean the same body joints in
every layout. SMPL's hand joints 22/23 exist only in the 72-wide layout; elsewhere they get the IDENTITY
rotation (SMPL-H/X hands are articulated fingers: the published PoseScript loader wrongly read the first
finger joints there).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import rotations as rot
from .skeleton import NUM_JOINTS

POSE_WIDTHS = (66, 72, 156, 165)
NUM_SHARED_BODY_JOINTS = 22         # joints 0..21: the same in SMPL, SMPL-H and SMPL-X
DEFAULT_FPS = 120.0                 # most AMASS subsets; used only when a file states no rate


def poses_to_rotmat(poses) -> np.ndarray:
    """AMASS axis-angle poses (..., 66 | 72 | 156 | 165) → SMPL local rotations (..., 24, 3, 3), joints
    22/23 identity unless the layout is SMPL's own 72. The global orientation stays in the file's frame."""
    poses = np.asarray(poses, dtype=np.float64)
    width = poses.shape[-1] if poses.ndim else 0
    if width not in POSE_WIDTHS:
        raise ValueError(f"AMASS 'poses' must be (..., 72), (..., 156), (..., 165) or (..., 66), got {poses.shape}")
    rotvecs = np.zeros(poses.shape[:-1] + (NUM_JOINTS, 3))
    if width == 72:
        rotvecs[:] = poses.reshape(poses.shape[:-1] + (NUM_JOINTS, 3))
    else:
        body = poses[..., : NUM_SHARED_BODY_JOINTS * 3]
        rotvecs[..., :NUM_SHARED_BODY_JOINTS, :] = body.reshape(poses.shape[:-1] + (NUM_SHARED_BODY_JOINTS, 3))
    return rot.rotvec_to_rotmat(rotvecs)


@dataclass
class AmassMotion:
    """A motion as stored: ``poses`` (n, W) axis-angle, ``translations`` (n, 3) and the global orientation
    in AMASS's Z-up frame; ``fps`` the recording rate; ``betas`` (B,) as stored."""
    poses: np.ndarray
    translations: np.ndarray
    betas: np.ndarray
    fps: float
    gender: str | None = None

    def __len__(self) -> int:
        return len(self.poses)

    @property
    def duration_s(self) -> float:
        return (len(self.poses) - 1) / self.fps

    def rotmats(self, frames=slice(None)) -> np.ndarray:
        """SMPL local rotations (k, 24, 3, 3) of the selected frames (global orientation still Z-up)."""
        return poses_to_rotmat(self.poses[frames])


def _frame_rate(data, fps) -> float:
    if fps is not None:
        rate = float(fps)
    elif "mocap_frame_rate" in data.files:
        rate = float(data["mocap_frame_rate"])
    elif "mocap_framerate" in data.files:
        rate = float(data["mocap_framerate"])
    else:
        warnings.warn(f"the AMASS file has no mocap_frame_rate / mocap_framerate; assuming {DEFAULT_FPS:g} fps "
                      f"(pass fps= to override)", stacklevel=3)
        rate = DEFAULT_FPS
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"the motion's frame rate must be positive, got {rate}")
    return rate


def read_amass(path, *, fps: float | None = None) -> AmassMotion:
    """Read an AMASS-layout ``.npz`` without pickle (object arrays are refused) and check its shapes.

    fps: the motion's frame rate, overriding the file's; when neither gives one, 120 fps with a warning.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path} as an AMASS .npz file: {error}") from None
    with data:
        if "poses" not in data.files:
            raise ValueError(f"{path} is not an AMASS motion: no 'poses' array (found {', '.join(data.files)})")
        poses = np.asarray(data["poses"], dtype=np.float64)
        count = len(poses) if poses.ndim else 0
        translations = (np.asarray(data["trans"], dtype=np.float64) if "trans" in data.files
                        else np.zeros((count, 3)))
        betas = np.asarray(data["betas"], dtype=np.float64) if "betas" in data.files else np.zeros(0)
        try:
            gender = str(data["gender"]) if "gender" in data.files else None
        except ValueError:          # stored as a pickled object: not needed to pose, and never unpickled
            gender = None
        rate = _frame_rate(data, fps)
    if poses.ndim != 2 or poses.shape[1] not in POSE_WIDTHS:
        raise ValueError(f"AMASS 'poses' must be (n, 72), (n, 156), (n, 165) or (n, 66), got {poses.shape}")
    if count == 0 or translations.shape != (count, 3):
        raise ValueError(f"AMASS 'trans' must be ({count}, 3) with at least one frame, got {translations.shape}")
    if not (np.all(np.isfinite(poses)) and np.all(np.isfinite(translations))):
        raise ValueError(f"{path} contains NaN or infinite values")
    return AmassMotion(poses=poses, translations=translations, betas=betas, fps=rate, gender=gender)


def resample_by_time(rotmats: np.ndarray, translations: np.ndarray, source_fps: float, target_fps: float):
    """Resample a motion (n, 24, 3, 3) + (n, 3) recorded at ``source_fps`` onto the time grid of
    ``target_fps`` covering the same duration: slerp for rotations, linear for translations, never
    integer frame skipping. Returns (rotmats (m, 24, 3, 3), translations (m, 3), duration_s)."""
    count = len(rotmats)
    duration = (count - 1) / source_fps
    target_count = int(math.floor(duration * target_fps + 1e-6)) + 1
    position = np.arange(target_count) / target_fps * source_fps          # fractional source index
    lower = np.minimum(np.floor(position + 1e-9).astype(int), count - 1)
    upper = np.minimum(lower + 1, count - 1)
    fraction = np.clip(position - lower, 0.0, 1.0)
    quats = rot.rotmat_to_quat_wxyz(rotmats)                              # (n, 24, 4)
    blended = rot.quat_wxyz_slerp(quats[lower], quats[upper], np.repeat(fraction[:, None], NUM_JOINTS, 1))
    moved = translations[lower] * (1 - fraction[:, None]) + translations[upper] * fraction[:, None]
    return rot.quat_wxyz_to_rotmat(blended), moved, duration
