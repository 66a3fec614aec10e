"""LLaVA instruction-following data (the ``llava_v1_5_mix665k.json`` layout), kept in the mix so the model
does not forget how to chat (paper §3.2). No pose loss on these samples.

The file is a JSON list of ``{"id": ..., "image": "coco/train2017/000000033471.jpg" (optional),
"conversations": [{"from": "human", "value": "<image>\\nWhat ..."}, {"from": "gpt", "value": "..."}, ...]}``;
image paths are relative to an image root folder. Text-only entries (no "image") are kept as text chats.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .records import InstructionRecord

log = logging.getLogger(__name__)

ROLES = {"human": "user", "gpt": "assistant"}
IMAGE_PLACEHOLDER = "<image>"


class LlavaInstruct:
    """``self[i]`` → ``InstructionRecord`` with (role, text) turns and a lazy image loader."""

    def __init__(self, json_path: str | Path, image_root: str | Path, *, limit: int = 0,
                 require_images: bool = False):
        path = Path(json_path)
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of conversations (LLaVA mix layout)")
        self.image_root = Path(image_root) if image_root else None
        self.entries = []
        dropped = 0
        for entry in entries:
            if self._valid(entry) and (entry.get("image") or not require_images):
                self.entries.append(entry)
            else:
                dropped += 1
            if limit and len(self.entries) >= limit:
                break
        if dropped:
            log.info("LLaVA instructions %s: %d malformed or image-less entries dropped", path.name, dropped)

    @staticmethod
    def _valid(entry) -> bool:
        conv = entry.get("conversations") if isinstance(entry, dict) else None
        if not conv or len(conv) < 2:
            return False
        roles = [ROLES.get(t.get("from")) for t in conv]
        # Strict alternation user, assistant, user, ...; a chat ending on the user has nothing to learn.
        return all(r == ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles)) and roles[-1] == "assistant"

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> InstructionRecord:
        from PIL import Image

        entry = self.entries[index]
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
