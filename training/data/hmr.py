"""Image → pose records from HMR-style npz files (the SPIN / HMR 2.0 preprocessed layout used for
Human3.6M, MPI-INF-3DHP, COCO and MPII):

- ``imgname`` (n,) str: image path relative to the image root;
- ``center`` (n, 2) and ``scale`` (n,): a square person box of side ``200 × scale`` pixels around the
  centre; 4D-Humans' ``scale`` (n, 2) is the box's (width, height) / 200, widened to 4D-Humans' 192 : 256
  aspect ratio before the square's side is its larger edge (``box_side``), as 4D-Humans crops; or
  ``bbox`` (n, 4) as x0, y0, x1, y1;
- ``pose`` (n, 72) SMPL axis-angle, global orientation in the camera frame (SPIN), or 4D-Humans' names:
  ``body_pose`` (n, 72) with the global orientation first, or ``global_orient`` (n, 3) + ``body_pose``
  (n, 69); ``betas`` or ``shape`` (n, 10) (read, never trained on: the model predicts pose only);
- ``has_smpl`` / ``has_body_pose`` (n,) optional: rows without a (pseudo) ground-truth pose are skipped.

Only those keys are read: other members, e.g. 4D-Humans' pickled ``extra_info`` object array, are never
unpickled. SPIN's ``h36m_train.npz`` holds no SMPL parameters (Human3.6M's MoSh fits are not public), so
it cannot train the pose head: it is refused with that explanation.

The person is cropped to a square box (area outside the image padded black), without augmentation as in
the paper; the backbone's image processor then resizes it to its own input size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from smpl_rig.rotations import rotvec_to_rotmat

from .records import PoseRecord, check_rotmat

BOX_SCALE_PIXELS = 200.0     # HMR convention: scale × 200 = box side in pixels
BOX_ASPECT_WH = (192, 256)   # 4D-Humans (HMR 2.0): boxes are widened to this width : height first
KEYS = ("imgname", "center", "scale", "bbox", "pose", "body_pose", "global_orient", "has_smpl", "has_body_pose",
        "betas", "shape")


def box_side(scale) -> float:
    """Square crop side in pixels for an HMR ``scale``: () → 200 × scale; (2,) = (width, height) / 200 →
    4D-Humans' ``expand_to_aspect_ratio`` to 192 : 256, then the larger edge."""
    scale = np.asarray(scale, dtype=np.float64).reshape(-1) * BOX_SCALE_PIXELS
    if scale.size == 1:
        return float(scale[0])
    w, h = scale[:2]
    wt, ht = BOX_ASPECT_WH
    if h / w < ht / wt:
        h = max(w * ht / wt, h)
    else:
        w = max(h * wt / ht, w)
    return float(max(w, h))


def smpl_pose_72(data: dict, where: str) -> np.ndarray | None:
    """(n, 72) axis-angle from ``pose``, ``body_pose`` (72) or ``global_orient`` + ``body_pose`` (69); None
    when the file has no SMPL pose."""
    if "pose" in data:
        pose = np.asarray(data["pose"], dtype=np.float64)
    elif "body_pose" in data:
        pose = np.asarray(data["body_pose"], dtype=np.float64)
        if pose.ndim == 2 and pose.shape[1] == 69 and "global_orient" in data:
            pose = np.concatenate([np.asarray(data["global_orient"], dtype=np.float64).reshape(-1, 3), pose], 1)
    else:
        return None
    if pose.ndim != 2 or pose.shape[1] != 72:
        raise ValueError(f"{where}: pose has shape {pose.shape}, expected (n, 72) SMPL axis-angle")
    return pose


def crop_person(image, center, box_size: float, out_size: int | None = None):
    """Square crop of side ``box_size`` pixels centred on ``center`` (x, y), padded black where the box
    leaves the image, resized to ``out_size`` when given. image: PIL RGB; returns a PIL RGB image."""
    from PIL import Image

    if box_size <= 1:
        raise ValueError(f"person box of {box_size:.1f} pixels is too small to crop")
    cx, cy = float(center[0]), float(center[1])
    half = box_size / 2.0
    left, top = int(round(cx - half)), int(round(cy - half))
    side = int(round(box_size))
    canvas = Image.new("RGB", (side, side))
    canvas.paste(image.convert("RGB"), (-left, -top))   # PIL clips what falls outside the canvas
    if out_size:
        canvas = canvas.resize((out_size, out_size), Image.BICUBIC)
    return canvas


def _boxes(data: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(centers (n, 2), box sides (n,)) from center/scale or bbox."""
    if "center" in data and "scale" in data:
        scale = np.asarray(data["scale"], dtype=np.float64)
        sides = (np.array([box_side(s) for s in scale]) if scale.ndim == 2 else scale * BOX_SCALE_PIXELS)
        return np.asarray(data["center"], dtype=np.float64), sides
    if "bbox" in data:
        box = np.asarray(data["bbox"], dtype=np.float64)
        centers = (box[:, :2] + box[:, 2:4]) / 2
        return centers, np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    raise ValueError(f"{path}: needs center + scale or bbox to locate the person")


class HMRNpz:
    """Person crops with SMPL poses from one HMR-style npz. ``self[i]`` → ``PoseRecord(kind="image")``."""

    def __init__(self, npz_path: str | Path, image_root: str | Path, *, crop_size: int | None = None,
                 limit: int = 0):
        path = Path(npz_path)
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in KEYS if k in f.files}
        except ValueError as exc:
            raise ValueError(f"{path}: arrays must be plain (no pickled objects): {exc}") from exc
        if "imgname" not in data:
            raise ValueError(f"{path}: missing 'imgname' (HMR-style npz: imgname, center/scale, pose, betas)")
        pose = smpl_pose_72(data, str(path))
        if pose is None:
            raise ValueError(f"{path}: no SMPL pose ('pose', or 4D-Humans' 'body_pose'); SPIN's h36m_train.npz "
                             "is such a file (Human3.6M's SMPL fits are not public): it cannot train the pose head")
        centers, sides = _boxes(data, path)
        keep = np.ones(len(pose), dtype=bool)
        for flag in ("has_smpl", "has_body_pose"):
            if flag in data:
                keep &= np.asarray(data[flag]).reshape(len(pose), -1).astype(bool).any(-1)
        self.rows = np.flatnonzero(keep)
        if limit:
            self.rows = self.rows[:limit]
        self.imgnames = data["imgname"].astype(str)
        self.poses = pose
        self.betas = data.get("betas", data.get("shape"))
        self.centers, self.sides = centers, sides
        self.image_root = Path(image_root)
        self.crop_size = crop_size
        self.name = path.stem

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> PoseRecord:
        from PIL import Image

        row = int(self.rows[index])
        image_path = self.image_root / self.imgnames[row]
        center, side = self.centers[row], float(self.sides[row])

        def load_image():
            with Image.open(image_path) as im:
                return crop_person(im, center, side, self.crop_size)

        pose = check_rotmat(rotvec_to_rotmat(self.poses[row].reshape(24, 3)), f"{self.name}[{row}]")
        return PoseRecord(kind="image", pose_rotmat=pose, load_image=load_image,
                          meta={"source": self.name, "row": row, "image": str(image_path)})
