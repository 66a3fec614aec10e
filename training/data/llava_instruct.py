"""LLaVA instruction-following data (the ``llava_v1_5_mix665k.json`` layout), kept in the mix so the model
does not forget how to chat (paper §3.2). No pose loss on these samples.

The file is a JSON list of ``{"id": ..., "image": "coco/train2017/000000033471.jpg" (optional),
"conversations": [{"from": "human", "value": "<image>\\nWhat ..."}, {"from": "gpt", "value": "..."}, ...]}``;
image paths are relative to an image root folder. Text-only entries (no "image") are kept as text chats.

With ``cache_dir`` the parsed file is not kept in memory: the first run writes the valid chats one per line
(``<name>-<key>.jsonl``) with their byte offsets and image flags (``.index.npz``) into ``cache_dir``, and
every process then reads one line per sample (a few MB of offsets for the 665k file instead of ≈ 1.3 GB of
Python objects in each process). The key follows the file's path, size and modification time, so an edited
file is indexed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .records import InstructionRecord

log = logging.getLogger(__name__)

ROLES = {"human": "user", "gpt": "assistant"}
IMAGE_PLACEHOLDER = "<image>"


class LlavaInstruct:
    """``self[i]`` → ``InstructionRecord`` with (role, text) turns and a lazy image loader."""

    def __init__(self, json_path: str | Path, image_root: str | Path, *, limit: int = 0,
                 require_images: bool = False, cache_dir: str | Path | None = None):
        path = Path(json_path)
        self.image_root = Path(image_root) if image_root else None
        self.entries: list | None = None          # in memory (no cache_dir), else read line by line
        self.lines: Path | None = None
        if cache_dir:
            self.lines, self.offsets, has_image = self._indexed(path, Path(cache_dir))
            rows = np.arange(len(self.offsets))
        else:
            self.entries = [e for e in self._read(path) if self._valid(e)]
            has_image = np.array([bool(e.get("image")) for e in self.entries], dtype=bool)
            rows = np.arange(len(self.entries))
        self.has_image = has_image
        total = len(rows)
        if require_images:
            rows = rows[has_image[rows]]
        self.rows = rows[:limit] if limit else rows
        dropped = total - len(rows)
        if dropped:
            log.info("LLaVA instructions %s: %d image-less entries dropped", path.name, dropped)

    @staticmethod
    def _read(path: Path) -> list:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of conversations (LLaVA mix layout)")
        return entries

    @classmethod
    def _indexed(cls, path: Path, cache_dir: Path):
        """(jsonl path, offsets (n,) int64, has_image (n,) bool), building them once."""
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        lines, index = cache_dir / f"{path.stem}-{key}.jsonl", cache_dir / f"{path.stem}-{key}.index.npz"
        if not (lines.is_file() and index.is_file()):
            cache_dir.mkdir(parents=True, exist_ok=True)
            offsets, flags, malformed = [], [], 0
            tmp_lines, tmp_index = Path(f"{lines}.{os.getpid()}.tmp"), Path(f"{index}.{os.getpid()}.tmp.npz")
            with open(tmp_lines, "wb") as out:
                for entry in cls._read(path):
                    if not cls._valid(entry):
                        malformed += 1
                        continue
                    offsets.append(out.tell())
                    flags.append(bool(entry.get("image")))
                    out.write(json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n")
            np.savez(tmp_index, offsets=np.asarray(offsets, dtype=np.int64), has_image=np.asarray(flags, dtype=bool))
            os.replace(tmp_lines, lines)       # index last: its presence means a complete pair
            os.replace(tmp_index, index)
            log.info("LLaVA instructions %s: indexed %d chats into %s (%d malformed dropped)", path.name,
                     len(offsets), lines, malformed)
        with np.load(index) as data:
            return lines, data["offsets"], data["has_image"]

    def keep_text_only(self) -> tuple[int, int]:
        """Keep only the chats without an image (a text-only backbone); returns (before, after)."""
        before = len(self.rows)
        self.rows = self.rows[~self.has_image[self.rows]]
        return before, len(self.rows)

    def entry(self, index: int) -> dict:
        row = int(self.rows[index])
        if self.entries is not None:
            return self.entries[row]
        with open(self.lines, "rb") as f:            # opened per read: safe in forked loader workers
            f.seek(int(self.offsets[row]))
            return json.loads(f.readline())

    @staticmethod
    def _valid(entry) -> bool:
        conv = entry.get("conversations") if isinstance(entry, dict) else None
        if not conv or len(conv) < 2:
            return False
        roles = [ROLES.get(t.get("from")) for t in conv]
        # Strict alternation user, assistant, user, ...; a chat ending on the user has nothing to learn.
        return all(r == ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles)) and roles[-1] == "assistant"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> InstructionRecord:
        from PIL import Image

        entry = self.entry(index)
        turns = [(ROLES[t["from"]], str(t["value"])) for t in entry["conversations"]]
        # The placeholder belongs to user turns only; in an answer it would be an image token to predict.
        turns = [(r, t.replace(IMAGE_PLACEHOLDER, "image") if r == "assistant" else t) for r, t in turns]
        if not entry.get("image"):
            # A stray placeholder without an image would leave the processor with nothing to expand.
            turns = [(r, t.replace(IMAGE_PLACEHOLDER, "").strip()) for r, t in turns]
            return InstructionRecord(turns=turns, meta={"source": "llava", "id": str(entry.get("id", index))})
        if self.image_root is None:
            raise ValueError("LLaVA entries reference images: set data.llava_image_root")
        image_path = self.image_root / entry["image"]
        # Exactly one placeholder for the one image, at the front of the first user turn that mentions it
        # (added to the first turn when none does), as LLaVA's preprocess_multimodal moves it: "<image>\n"
        # then the rest of the turn.
        seen = False
        for k, (role, text) in enumerate(turns):
            if role == "user" and IMAGE_PLACEHOLDER in text:
                rest = text.replace(IMAGE_PLACEHOLDER, "").strip()
                turns[k] = (role, rest if seen else IMAGE_PLACEHOLDER + "\n" + rest)
                seen = True
        if not seen:
            turns[0] = ("user", IMAGE_PLACEHOLDER + "\n" + turns[0][1])

        def load_image():
            with Image.open(image_path) as im:
                return im.convert("RGB")
        return InstructionRecord(turns=turns, load_image=load_image,
                                 meta={"source": "llava", "id": str(entry.get("id", index))})
