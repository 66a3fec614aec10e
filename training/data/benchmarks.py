"""The two reasoning benchmarks of the paper, as JSONL files the evaluator reads (one object per line).

Speculative pose generation (SPG), text → pose:
    {"id": "spg-0001", "question": "He just heard his name called across the street. How does he stand?",
     "pose": [[rx, ry, rz] × 24], "source_id": "12345"}
Reasoning-based pose estimation (RPE), image + a description of one person → pose:
    {"id": "rpe-0001", "image": "courtyard_basketball_00/image_00120.jpg",
     "description": "the man in the red jacket holding the ball", "pose": [[rx, ry, rz] × 24],
     "betas": [10 numbers] (optional)}

``pose``: SMPL axis-angle, 24 joints (or 72 flat numbers), global orientation in the CAMERA frame (SPG
targets are canonicalised like text→pose training targets: yaw removed, upright facing the viewer =
diag(1, −1, −1)). Image paths are relative to an image root. Unknown fields are kept in ``meta``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smpl_rig.rotations import pose_to_rotmat

from .records import PoseRecord, check_rotmat

SPG_FIELDS = ("id", "question", "pose")
RPE_FIELDS = ("id", "image", "description", "pose")


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def _pose(row: dict, where: str) -> np.ndarray:
    pose = np.asarray(row["pose"], dtype=np.float64)
    if pose.shape == (72,):
        pose = pose.reshape(24, 3)
    try:
        return check_rotmat(pose_to_rotmat(pose), where)
    except ValueError as exc:
        raise ValueError(f"{where}: pose must be 24 × 3 axis-angle ({exc})") from exc


def load_spg(path: str | Path) -> list[PoseRecord]:
    """Speculative pose generation benchmark → text ``PoseRecord``s (caption = the question)."""
    path = Path(path)
    return [PoseRecord(kind="text", pose_rotmat=_pose(r, f"{path.name}:{r['id']}"), caption=str(r["question"]),
                       meta={k: v for k, v in r.items() if k not in ("pose", "question")} | {"source": "spg"})
            for r in _read_jsonl(path, SPG_FIELDS)]


def load_rpe(path: str | Path, image_root: str | Path) -> list[PoseRecord]:
    """Reasoning-based pose estimation benchmark → image ``PoseRecord``s whose caption describes the person;
    the WHOLE image is given (no crop: the model must find the person from the description)."""
    from PIL import Image

    path, root = Path(path), Path(image_root)
    records = []
    for r in _read_jsonl(path, RPE_FIELDS):
        image_path = root / r["image"]

        def load_image(image_path=image_path):
            with Image.open(image_path) as im:
                return im.convert("RGB")

        records.append(PoseRecord(kind="image", pose_rotmat=_pose(r, f"{path.name}:{r['id']}"),
                                  caption=str(r["description"]), load_image=load_image,
                                  meta={k: v for k, v in r.items() if k not in ("pose", "description")} | {"source": "rpe"}))
    return records
