"""The project's own pose corpus (training/corpus/, built by ``python -m training.corpus.build``) as
training records: explicit captions and speculative prompts → text→pose records, renders → image records.

Targets come from the corpus itself (``CorpusSample.text_target_rotmat`` / ``image_target_rotmat``): joint 0
in the camera frame as the conventions page wants it.
"""
from __future__ import annotations

import random
from pathlib import Path

from .records import PoseRecord, check_rotmat

SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


class CorpusRecords:
    """Text (``kind="text"``) or image (``kind="image"``) records of one corpus split."""

    def __init__(self, directory: str | Path, split: str = "train", kind: str = "text", *, seed: int = 0,
                 limit: int = 0):
        from training.corpus.build import load_corpus

        if kind not in ("text", "image"):
            raise ValueError(f"kind must be 'text' or 'image', got {kind!r}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        samples = load_corpus(directory, SPLITS[split])
        self.samples = [s for s in samples if (s.captions if kind == "text" else s.image_path is not None)]
        if limit:
            self.samples = self.samples[:limit]
        self.kind, self.seed = kind, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> PoseRecord:
        from PIL import Image

        s = self.samples[index]
        meta = {"source": "corpus", "index": s.index, "corpus_kind": s.kind}
        if self.kind == "text":
            caption = random.Random(f"{self.seed}:{index}").choice(s.captions)
            return PoseRecord(kind="text", pose_rotmat=check_rotmat(s.text_target_rotmat(), f"corpus {s.index}"),
                              caption=caption, meta=meta)

        def load_image(path=s.image_path):
            with Image.open(path) as im:
                return im.convert("RGB")

        return PoseRecord(kind="image", pose_rotmat=check_rotmat(s.image_target_rotmat(), f"corpus {s.index}"),
                          load_image=load_image, meta=meta)
