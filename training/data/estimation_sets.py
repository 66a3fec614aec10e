"""The test sets of the paper's pose-estimation table, read in their public layouts.

3DPW (von Marcard et al., ECCV 2018), the release as downloaded (``--3dpw ROOT``):
    ROOT/sequenceFiles/{train,validation,test}/<sequence>.pkl   one pickle per sequence (Python 2, latin-1)
    ROOT/imageFiles/<sequence>/image_00000.jpg ...
  Each pickle is a dict with, per person p: ``poses[p]`` (F, 72) SMPL axis-angle in the WORLD frame,
  ``betas[p]`` (10,) (or more: the first 10 are used), ``genders[p]`` "m" / "f", ``poses2d[p]`` (F, 3, 18)
  2-D keypoints (x, y, confidence), ``campose_valid[p]`` (F,) whether the camera pose (and so the frame)
  is usable; and per frame ``cam_poses`` (F, 4, 4) world → camera extrinsics, ``img_frame_ids`` (F,).
  Read as the SMPL-regression literature does (SPIN's preprocessing): every frame of every person with a
  valid camera pose; the global orientation turned into the camera frame, R0_cam = R_cam · R0_world; the
  person box = the bounding box of the keypoints with confidence > 0, enlarged 1.2 × (square side
  = 1.2 × its longer edge).

Human3.6M (``--h36m NPZ``) and 3DPW alike in SPIN's preprocessed npz layout (``h36m_valid_protocol2.npz``,
``3dpw_test.npz``): ``imgname`` (N,), ``center`` (N, 2), ``scale`` (N,) (box side 200 × scale px), and
(4D-Humans' (N, 2) width, height: ``training.data.hmr.box_side``), and
either ``S`` (N, 24, 4): ground-truth 3-D joints in metres in SPIN's 24-joint order with a confidence
column, camera frame (Human3.6M's motion capture: no SMPL fit), or ``pose`` (N, 72) camera-frame axis-angle
with ``shape`` (N, 10) and ``gender`` (N,) "m"/"f" (3DPW). SPIN's ``h36m_train.npz`` has no SMPL
parameters either, so it cannot train the pose head (docs/training.md).
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smpl_rig.rotations import rotvec_to_rotmat

from .hmr import BOX_SCALE_PIXELS, box_side

BOX_ENLARGE = 1.2                       # SPIN / HMR: the keypoint box enlarged by 20 %
J24_PELVIS = 14                         # SPIN's 24-joint order: 0-13 the 14 LSP joints, 14 the pelvis
J24_HIPS = (2, 3)                       # right hip, left hip (LSP order)
GENDERS = {"m": "male", "f": "female", "male": "male", "female": "female", "n": "neutral", "neutral": "neutral"}

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("__builtin__", "object"), ("builtins", "object"), ("_codecs", "encode"),
}


@dataclass
class EstimationSample:
    """One person in one test image.

    image_path: the whole image; center (2,) and box_size (pixels): the square person crop.
    pose_rotmat: (24, 3, 3) ground-truth SMPL pose, global orientation in the camera frame, or None
                 (Human3.6M: joints only).
    betas: (10,) the subject's shape, or None (unknown: the neutral mean shape is used).
    gender: "male" | "female" | "neutral".
    joints14: (14, 3) ground-truth joints (metres, camera frame, LSP order), or None (3DPW: regressed from
              the ground-truth mesh).
    """
    image_path: Path
    center: np.ndarray
    box_size: float
    pose_rotmat: np.ndarray | None = None
    betas: np.ndarray | None = None
    gender: str = "neutral"
    joints14: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a 3DPW pickle "
                                         "(only numpy arrays and plain containers are accepted)")
        if (module, name) == ("_codecs", "encode"):
            return lambda text, encoding="latin1": text.encode(encoding)
        return super().find_class("copyreg" if module == "copy_reg" else
                                  "builtins" if module == "__builtin__" else module, name)


def load_3dpw_pickle(path) -> dict:
    """A 3DPW sequence file (Python 2 pickle) with only numpy arrays and plain containers allowed."""
    return _ArraysOnlyUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def keypoint_box(keypoints: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(center (2,), square side in pixels) around the 2-D keypoints (3, K) or (K, 3) with confidence > 0,
    enlarged 1.2 ×; None when no keypoint is confident."""
    k = np.asarray(keypoints, dtype=np.float64)
    if k.shape[0] == 3 and k.shape[1] != 3:
        k = k.T
    seen = k[k[:, 2] > 0]
    if not len(seen):
        return None
    low, high = seen[:, :2].min(0), seen[:, :2].max(0)
    return (low + high) / 2, BOX_ENLARGE * float((high - low).max())


def read_3dpw(root, split: str = "test") -> list[EstimationSample]:
    """Every valid (person, frame) of a 3DPW split, sequences in name order, people in file order."""
    root = Path(root)
    files = sorted((root / "sequenceFiles" / split).glob("*.pkl"))
    if not files:
        raise FileNotFoundError(f"no 3DPW sequence files in {root / 'sequenceFiles' / split}")
    samples = []
    for file in files:
        seq = load_3dpw_pickle(file)
        name = _text(seq.get("sequence", file.stem))
        cam_poses = np.asarray(seq["cam_poses"], dtype=np.float64)
        frame_ids = np.asarray(seq.get("img_frame_ids", np.arange(len(cam_poses))))
        for person, poses in enumerate(seq["poses"]):
            poses = np.asarray(poses, dtype=np.float64).reshape(-1, 24, 3)
            valid = np.asarray(seq["campose_valid"][person]).astype(bool)
            betas = np.asarray(seq["betas"][person], dtype=np.float64).reshape(-1)[:10]
            gender = GENDERS[_text(seq["genders"][person]).lower()]
            for frame in np.flatnonzero(valid):
                box = keypoint_box(np.asarray(seq["poses2d"][person][frame]))
                if box is None:
                    continue
                rotmat = rotvec_to_rotmat(poses[frame])
                rotmat[0] = cam_poses[frame][:3, :3] @ rotmat[0]      # world → camera frame
                samples.append(EstimationSample(
                    image_path=root / "imageFiles" / name / f"image_{int(frame_ids[frame]):05d}.jpg",
                    center=box[0], box_size=box[1], pose_rotmat=rotmat, betas=betas, gender=gender,
                    meta={"dataset": "3dpw", "sequence": name, "person": person, "frame": int(frame)}))
    return samples


def read_spin_npz(path, image_root, dataset: str = "h36m") -> list[EstimationSample]:
    """A SPIN-style test npz (module docstring): joints ``S`` or SMPL ``pose`` + ``shape`` + ``gender``."""
    path, image_root = Path(path), Path(image_root)
    with np.load(path, allow_pickle=False) as data:
        d = {k: data[k] for k in data.files}
    for key in ("imgname", "center", "scale"):
        if key not in d:
            raise ValueError(f"{path}: missing {key!r} (expected SPIN's imgname, center, scale, S or pose)")
    if "S" not in d and "pose" not in d:
        raise ValueError(f"{path}: needs ground truth, S (N, 24, 4) joints or pose (N, 72)")
    scale = np.asarray(d["scale"], dtype=np.float64)
    sides = [box_side(s) for s in scale] if scale.ndim == 2 else scale * BOX_SCALE_PIXELS
    shape = d.get("shape", d.get("betas"))
    samples = []
    for i, name in enumerate(d["imgname"]):
        sample = EstimationSample(image_path=image_root / str(name), center=np.asarray(d["center"][i], dtype=np.float64),
                                  box_size=float(sides[i]), meta={"dataset": dataset, "index": i})
        if "gender" in d:
            sample.gender = GENDERS[_text(d["gender"][i]).strip().lower()]
        if shape is not None:
            sample.betas = np.asarray(shape[i], dtype=np.float64).reshape(-1)[:10]
        if "pose" in d:
            sample.pose_rotmat = rotvec_to_rotmat(np.asarray(d["pose"][i], dtype=np.float64).reshape(24, 3))
        if "S" in d:
            joints = np.asarray(d["S"][i], dtype=np.float64)
            pelvis = (joints[J24_PELVIS, :3] if joints.shape[-1] < 4 or joints[J24_PELVIS, 3] > 0
                      else joints[list(J24_HIPS), :3].mean(0))
            sample.joints14 = joints[:14, :3] - pelvis
        samples.append(sample)
    return samples
