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


CAPTION_CHOICES = ("all", "first", "one")


class CorpusRecords:
    """Text (``kind="text"``) or image (``kind="image"``) records of one corpus split.

    captions (text records): "all" = one record per (pose, caption) pair, so every description and every
    phrasing of a situation is trained on; "first" = one record per pose with its first caption (the
    complete description); "one" = one record per pose with a caption drawn once by ``seed``."""

    def __init__(self, directory: str | Path, split: str = "train", kind: str = "text", *, seed: int = 0,
                 limit: int = 0, captions: str = "all"):
        from training.corpus.build import load_corpus

        if kind not in ("text", "image"):
            raise ValueError(f"kind must be 'text' or 'image', got {kind!r}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        if captions not in CAPTION_CHOICES:
            raise ValueError(f"captions must be one of {CAPTION_CHOICES}, got {captions!r}")
        samples = load_corpus(directory, SPLITS[split])
        self.samples = [s for s in samples if (s.captions if kind == "text" else s.image_path is not None)]
        if limit:
            self.samples = self.samples[:limit]
        self.kind, self.seed = kind, seed
        # (sample, caption) pairs behind each text record; image records are one per sample.
        if kind == "image":
            self.pairs = []
        elif captions == "all":
            self.pairs = [(k, c) for k, s in enumerate(self.samples) for c in range(len(s.captions))]
        elif captions == "first":
            self.pairs = [(k, 0) for k in range(len(self.samples))]
        else:
            self.pairs = [(k, random.Random(f"{seed}:{k}").randrange(len(s.captions)))
                          for k, s in enumerate(self.samples)]

    def __len__(self) -> int:
        return len(self.pairs) if self.kind == "text" else len(self.samples)

    def __getitem__(self, index: int) -> PoseRecord:
        from PIL import Image

        if self.kind == "text":
            k, c = self.pairs[index]
            s = self.samples[k]
            meta = {"source": "corpus", "index": s.index, "corpus_kind": s.kind, "caption": c}
            return PoseRecord(kind="text", pose_rotmat=check_rotmat(s.text_target_rotmat(), f"corpus {s.index}"),
                              caption=s.captions[c], meta=meta)
        s = self.samples[index]
        meta = {"source": "corpus", "index": s.index, "corpus_kind": s.kind}

        def load_image(path=s.image_path):
            with Image.open(path) as im:
                return im.convert("RGB")

        return PoseRecord(kind="image", pose_rotmat=check_rotmat(s.image_target_rotmat(), f"corpus {s.index}"),
                          load_image=load_image, meta=meta)
