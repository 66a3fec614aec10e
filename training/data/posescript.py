"""PoseScript release (text → pose) on top of AMASS.

The release folder holds JSON files (v2 names first, v1 names accepted too):
- ``ids_2_dataset_sequence_and_frame_index_100k.json``: {pose id: [dataset, sequence path, frame index]},
  dataset "AMASS", the sequence path relative to the AMASS root (an SMPL-H npz).
- ``posescript_human_6293.json``: {pose id: caption or [captions]} written by people.
- ``posescript_auto_100k.json``: {pose id: [automatic captions]} (v1: ``automatic_A.json`` … one per kind).
- ``train_ids_100k.json`` / ``val_ids_100k.json`` / ``test_ids_100k.json``: lists of pose ids.

Two releases exist: the paper trained on the first (v1, ~20k poses: 6.3k human captions, automatic
captions for all, ~14k training pairs with one caption each; ``ids_2_dataset_sequence_and_frame_index.json``,
``{split}_ids.json``), the current download is v2 (100k poses, the ``*_100k.json`` names). Point
``data.posescript_dir`` at either folder: the names say which it is (v2 names win when both are there).

Human captions are preferred when a pose has one (the automatic ones are noisy, paper §4); otherwise one
automatic caption is drawn at random each time the sample is drawn (``caption_choices`` in the record's
meta; training picks with the sample's own seeded generator, so a resumed run draws the same). Poses without
any caption are skipped.
"""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from .amass import AmassFrames
from .records import PoseRecord

log = logging.getLogger(__name__)

ID_FILES = ("ids_2_dataset_sequence_and_frame_index_100k.json", "ids_2_dataset_sequence_and_frame_index.json")
HUMAN_PATTERNS = ("posescript_human_*.json", "human*.json")
AUTO_PATTERNS = ("posescript_auto_*.json", "automatic_*.json")
SPLIT_PATTERNS = ("{split}_ids_100k.json", "{split}_ids.json")


def _read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _first_existing(folder: Path, names) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _merge_captions(files: list[Path]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for path in files:
        data = _read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping from pose id to caption(s)")
        for pose_id, value in data.items():
            texts = [value] if isinstance(value, str) else list(value)
            merged.setdefault(str(pose_id), []).extend(t.strip() for t in texts if isinstance(t, str) and t.strip())
    return merged


class PoseScript:
    """Text→pose records of one PoseScript split.

    release_dir: folder with the release JSON files; amass_dir: AMASS root; split: "train" | "val" | "test".
    ``self[i]`` → ``PoseRecord(kind="text")`` with the canonical camera-frame target (24, 3, 3).
    """

    def __init__(self, release_dir: str | Path, amass_dir: str | Path, split: str = "train", *,
                 seed: int = 0, limit: int = 0, human_only: bool = False):
        folder = Path(release_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"PoseScript release folder {folder} does not exist")
        id_file = _first_existing(folder, ID_FILES)
        if id_file is None:
            raise FileNotFoundError(f"{folder}: none of {', '.join(ID_FILES)} found")
        self.pose_info = {str(k): v for k, v in _read_json(id_file).items()}
        split_file = _first_existing(folder, [p.format(split=split) for p in SPLIT_PATTERNS])
        if split_file is None:
            raise FileNotFoundError(f"{folder}: no id list for split {split!r}")
        split_ids = [str(i) for i in _read_json(split_file)]
        human_files = sorted({p for pat in HUMAN_PATTERNS for p in folder.glob(pat)})
        auto_files = sorted({p for pat in AUTO_PATTERNS for p in folder.glob(pat)})
        self.human = _merge_captions(human_files)
        self.auto = {} if human_only else _merge_captions(auto_files)
        self.ids = [i for i in split_ids if i in self.pose_info and (self.human.get(i) or self.auto.get(i))]
        skipped = len(split_ids) - len(self.ids)
        if skipped:
            log.info("PoseScript %s: %d of %d ids skipped (no caption or no pose info)", split, skipped, len(split_ids))
        if limit:
            self.ids = self.ids[:limit]
        self.seed = seed
        self.amass = AmassFrames(amass_dir)
        self.split = split

    def __len__(self) -> int:
        return len(self.ids)

    def caption(self, pose_id: str, rng: random.Random) -> tuple[str, str]:
        """(caption, "human" | "auto"): a human caption when there is one, else a random automatic one."""
        if self.human.get(pose_id):
            return rng.choice(self.human[pose_id]), "human"
        return rng.choice(self.auto[pose_id]), "auto"

    def __getitem__(self, index: int) -> PoseRecord:
        pose_id = self.ids[index]
        info = self.pose_info[pose_id]
        if not (isinstance(info, (list, tuple)) and len(info) == 3):
            raise ValueError(f"PoseScript id {pose_id}: expected [dataset, sequence path, frame], got {info!r}")
        dataset, seq_path, frame = info
        if dataset != "AMASS":
            raise ValueError(f"PoseScript id {pose_id}: dataset {dataset!r} is not supported (AMASS only)")
        # A fixed caption (seeded by (seed, index)) for evaluation; training redraws among caption_choices.
        text, source = self.caption(pose_id, random.Random(f"{self.seed}:{index}"))
        pose = self.amass.smpl_target(seq_path, int(frame))
        meta = {"source": "posescript", "id": pose_id, "caption_kind": source}
        if source == "auto" and len(self.auto[pose_id]) > 1:
            meta["caption_choices"] = list(self.auto[pose_id])
        return PoseRecord(kind="text", pose_rotmat=pose, caption=text, meta=meta)
