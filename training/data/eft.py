"""Image → pose records from EFT's pseudo-ground-truth fits (Joo et al., "Exemplar Fine-Tuning", the
released ``COCO2014-All-ver01.json``, ``MPII_ver01.json``, ``LSPet_ver01.json``, …):

    {"ver": 0.1, "data": [{"imageName": "COCO_train2014_000000000036.jpg", "bbox_center": [x, y],
                           "bbox_scale": s, "parm_pose": 24 × 3 × 3, "parm_shape": 10 numbers, ...}, ...]}

``parm_pose`` holds SMPL rotation MATRICES, joint 0 the global orientation in the camera frame (the
HMR/SPIN convention EFT fits in); ``bbox_scale`` × 200 is the square box side in pixels around
``bbox_center``. Image names are relative to ``image_root`` (e.g. COCO's ``train2014/``); a name with a
folder part is taken as it is. Fits without ``parm_pose`` are skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smpl_rig.rotations import orthonormalize_rotmat

from .hmr import BOX_SCALE_PIXELS, crop_person
from .records import PoseRecord, check_rotmat


class EFTJson:
    """The fits of one EFT json file. ``self[i]`` → ``PoseRecord(kind="image")``."""

    def __init__(self, json_path: str | Path, image_root: str | Path, *, crop_size: int | None = None,
                 limit: int = 0):
        path = Path(json_path)
        content = json.loads(path.read_text())
        fits = content["data"] if isinstance(content, dict) else content
        self.fits = [f for f in fits if f.get("parm_pose") is not None and f.get("imageName")]
        if limit:
            self.fits = self.fits[:limit]
        self.image_root = Path(image_root)
        self.crop_size = crop_size
        self.name = path.stem

    def __len__(self) -> int:
        return len(self.fits)

    def __getitem__(self, index: int) -> PoseRecord:
        from PIL import Image

        fit = self.fits[index]
        where = f"{self.name}[{index}]"
        rotmat = np.asarray(fit["parm_pose"], dtype=np.float64)
        if rotmat.shape != (24, 3, 3):
            raise ValueError(f"{where}: parm_pose has shape {rotmat.shape}, expected 24 × 3 × 3 rotation matrices")
        # Stored as float text: project back onto SO(3) before the strict check.
        pose = check_rotmat(orthonormalize_rotmat(rotmat), where)
        center = np.asarray(fit["bbox_center"], dtype=np.float64)
        side = float(fit["bbox_scale"]) * BOX_SCALE_PIXELS
        image_path = self.image_root / fit["imageName"]

        def load_image():
            with Image.open(image_path) as im:
                return crop_person(im, center, side, self.crop_size)
        return PoseRecord(kind="image", pose_rotmat=pose, load_image=load_image,
                          meta={"source": self.name, "image": str(fit["imageName"]),
                                "betas": np.asarray(fit.get("parm_shape", np.zeros(10)), dtype=np.float32)})
