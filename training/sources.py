"""The training data as the loop reads it: each configured source (text→pose, image→pose, instruction
chats), the keys the mix sampler draws, and the DataLoader views that turn keys into encoded chats.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path

import numpy as np
import torch

from .collate import ChatEncoder
from .config import ExperimentConfig
from .data.records import PoseRecord
from .sampler import MixSampler

log = logging.getLogger("training")


class Concat:
    """Several datasets read as one (e.g. all image→pose files)."""

    def __init__(self, parts):
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int):
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][index - int(self.offsets[part])]


def use_synthetic_data(cfg: ExperimentConfig) -> None:
    """With ``data.synthetic_dir`` set: write the synthetic dataset there once, point empty paths at it."""
    from .synthetic import synthetic_paths, write_synthetic_dataset

    folder = Path(cfg.data.synthetic_dir)
    if not (folder / "llava_mix.json").is_file():     # written last: its presence means a complete set
        write_synthetic_dataset(folder)
    paths = synthetic_paths(folder)
    for key in ("posescript_dir", "amass_dir", "hmr_npz", "hmr_image_root", "llava_json", "llava_image_root"):
        if not getattr(cfg.data, key):
            setattr(cfg.data, key, paths[key])
    for key in ("spg_jsonl", "rpe_jsonl", "rpe_image_root"):
        if not getattr(cfg.eval, key):
            setattr(cfg.eval, key, paths[key])


def build_sources(cfg: ExperimentConfig, split: str = "train", rank: int = 0, world: int = 1) -> dict[str, object]:
    """{"image": ..., "text": ..., "instruction": ...} for the configured files (missing ones left out).

    rank / world: this process among ``world``. 4D-Humans tar shards are split between the processes
    (shard i goes to process i mod world) when there are at least as many shards as processes, so no
    process indexes or reads every shard; each process draws its own batches from what it holds."""
    from .data.eft import EFTJson
    from .data.hmr import HMRNpz
    from .data.llava_instruct import LlavaInstruct
    from .data.posescript import PoseScript
    from .data.webdataset_4dhumans import FourDHumansTars

    from .data.corpus import CorpusRecords

    d, limit, sources = cfg.data, cfg.data.limit_per_source, {}
    text_parts, image_parts = [], []
    if d.corpus_dir:
        text_parts.append(CorpusRecords(d.corpus_dir, split, "text", seed=cfg.train.seed, limit=limit,
                                        captions=d.corpus_captions))
        image_parts.append(CorpusRecords(d.corpus_dir, split, "image", seed=cfg.train.seed, limit=limit))
    if d.posescript_dir and d.amass_dir:
        text_parts.append(PoseScript(d.posescript_dir, d.amass_dir, split if split != "train" else d.posescript_split,
                                     seed=cfg.train.seed, limit=limit))
    if split == "train":
        image_parts += [HMRNpz(p, d.hmr_image_root, limit=limit) for p in d.hmr_npz]
        image_parts += [EFTJson(p, d.eft_image_root, limit=limit) for p in d.eft_json]
        if d.tars:
            shards = list(d.tars)[rank::world] if len(d.tars) >= world else list(d.tars)
            image_parts.append(FourDHumansTars(shards, limit=limit))
    if sum(len(p) for p in text_parts):
        sources["text"] = Concat(text_parts)
    if sum(len(p) for p in image_parts):
        sources["image"] = Concat(image_parts)
    if d.llava_json and split == "train":
        sources["instruction"] = LlavaInstruct(d.llava_json, d.llava_image_root, limit=limit,
                                               cache_dir=Path(cfg.train.output_dir) / "data_cache")
    return sources


def drop_image_samples(sources: dict) -> None:
    """A text-only backbone: no image→pose source, and only the LLaVA chats without an image."""
    if sources.pop("image", None) is not None:
        log.warning("the backbone reads no images: image→pose data dropped from the mix")
    chats = sources.get("instruction")
    if chats is not None:
        before, after = chats.keep_text_only()
        log.info("text-only backbone: %d of %d instruction chats kept (those without an image)", after, before)
        if not after:
            sources.pop("instruction")


class MixedSamples(torch.utils.data.Dataset):
    """Map-style view for the DataLoader: key (source, index, batch number, slot) → EncodedSample. The
    template choice is seeded by (seed, batch, slot), so a resumed run builds the very same chats.

    follow_up_every = n > 0: every n-th batch is made of follow-up chats — each text sample is asked as the
    last turn of a chat whose one or two earlier turns (question and `<POSE>` answer) come from other
    samples of its source, so the model learns that the newest description wins. Whole batches, because
    a batch is padded to its longest chat: one long chat in a batch of short ones would cost the whole batch.

    edit_every = n > 0: every n-th batch (before follow_up_every where both fall on one batch) is made of
    edit chats — each text sample's question and `<POSE>` answer, then an edit instruction ("now raise the
    left arm") answered with the edited pose (training.corpus.edits), so the model learns to change one
    part and keep the rest. A sample no edit applies to (EDIT_TRIES draws) stays a plain one."""

    EDIT_TRIES = 4

    def __init__(self, sources: dict, encoder: ChatEncoder, seed: int, follow_up_every: int = 0,
                 edit_every: int = 0):
        self.sources, self.encoder, self.seed = sources, encoder, seed
        self.follow_up_every, self.edit_every = follow_up_every, edit_every

    def _edited(self, record: PoseRecord, rng: random.Random) -> PoseRecord | None:
        """The record's pose edited (a few random edits tried), as the text record of the edit turn."""
        from .corpus.edits import edit_pose, edited_target, target_to_rotvec

        rotvec = target_to_rotvec(record.pose_rotmat)
        for _ in range(self.EDIT_TRIES):
            edit = edit_pose(rotvec, rng)
            if edit is not None:
                return PoseRecord(kind="text", pose_rotmat=edited_target(record.pose_rotmat, edit),
                                  caption=edit.instruction,
                                  meta={**record.meta, "edit": edit.kind, "edit_changed": tuple(edit.changed)})
        return None

    def __getitem__(self, key):
        name, index, batch_no, slot = key
        rng = random.Random(f"{self.seed}:{batch_no}:{slot}")
        record = self.sources[name][index]
        choices = getattr(record, "meta", {}).get("caption_choices")
        if choices:    # e.g. PoseScript's automatic captions: a new one each time the pose is drawn
            record = dataclasses.replace(record, caption=random.Random(f"{self.seed}:{batch_no}:{slot}:caption").choice(choices))
        earlier = []
        is_text = isinstance(record, PoseRecord) and record.kind == "text"
        if self.edit_every and batch_no % self.edit_every == self.edit_every - 1 and is_text:
            edited = self._edited(record, rng)
            return self.encoder.encode(edited, rng, [record]) if edited else self.encoder.encode(record, rng)
        if (self.follow_up_every and batch_no % self.follow_up_every == self.follow_up_every - 1
                and is_text):
            source = self.sources[name]
            earlier = [source[rng.randrange(len(source))] for _ in range(2 if rng.random() < 0.3 else 1)]
        return self.encoder.encode(record, rng, earlier)


class MixedBatches(torch.utils.data.Sampler):
    """The MixSampler's batches as DataLoader keys, skipping the ``skip`` batches a resumed run already saw."""

    def __init__(self, sampler: MixSampler, skip: int = 0):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        batch_no = 0
        while True:
            batch = self.sampler.next_batch()
            if batch_no >= self.skip:
                yield [(name, index, batch_no, slot) for slot, (name, index) in enumerate(batch)]
            batch_no += 1
