"""Records → token ids with loss masks → padded batches.

Tokenisation is the backend's own (``backend.posegpt.templates.encode_conversation``), so training sees
exactly the ids inference builds: system and user turns carry label -100, assistant answers (with their
end token) carry their ids. Each ``<image>`` in user text becomes the backbone family's placeholder ids
(LLaVA: one image token per CLIP patch; Qwen2-VL: start + merged patches + end), with the pixels the
family's image processor makes (``backend.posegpt.families``). Under block prompt attention
(``backend.posegpt.attention``) the batch also carries each token's user-message group, from the spans
the encoder marks as it builds the ids; ``language_mask`` makes the 4-D mask the forward takes from it.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from backend.posegpt.attention import block_causal_mask, block_ids
from backend.posegpt.model import IGNORE_INDEX, POSE_TOKEN
from backend.posegpt.templates import IMAGE_MARK, encode_conversation_spans

from .data.records import InstructionRecord, PoseRecord
from .chat_turns import answer_pool, edit_turns, follow_up_turns, pose_turns, record_turns

log = logging.getLogger(__name__)
IGNORE = IGNORE_INDEX


@dataclass
class EncodedSample:
    """One tokenised chat. input_ids / labels: (L,) lists; images: the family's ``ImageInput`` per
    ``<image>``; positions: (P, L) position ids; pose_rotmat: (24, 3, 3) target of the last turn or None;
    kind: source; earlier_poses: (24, 3, 3) targets of the `<POSE>` answers of earlier turns, in order;
    focus_joints: the joints an edit turn changes (skeleton order), empty for every other sample;
    user_spans: (start, end) of each user message in input_ids (block prompt attention)."""
    input_ids: list
    labels: list
    images: list
    positions: torch.Tensor
    pose_rotmat: np.ndarray | None
    kind: str
    earlier_poses: list = field(default_factory=list)
    focus_joints: tuple = ()
    user_spans: list = field(default_factory=list)


class ChatEncoder:
    """Turns records into ``EncodedSample``s for one backbone (tokenizer, template, family)."""

    def __init__(self, tokenizer, template, family, pose_token_id: int, max_length: int = 2048,
                 template_pool: int = 0):
        self.tokenizer = tokenizer
        self.pool = template_pool
        self.answers = answer_pool(template.direct_answer, template_pool)
        self.template = template
        self.family = family
        self.pose_token_id = int(pose_token_id)
        self.max_length = max_length

    def _encode_turns(self, turns, images):
        messages = [{"role": r, "content": t} for r, t in turns]
        return encode_conversation_spans(self.tokenizer, self.template, messages,
                                         image_ids=lambda k: self.family.placeholder_ids(images[k]))

    def encode(self, record: PoseRecord | InstructionRecord, rng: random.Random,
               earlier: list[PoseRecord] = ()) -> EncodedSample:
        """``earlier``: text records whose question and `<POSE>` answer come first, so ``record`` is asked as
        a follow-up turn of that chat (text records only); a record with ``meta["edit"]`` is an edit
        instruction of the pose before, asked as written."""
        if earlier and (record.kind != "text" or any(e.kind != "text" for e in earlier)):
            raise ValueError("follow-up chats are made of text→pose records")
        turns = [t for e in earlier for t in pose_turns(e, rng, answers=self.answers, pool=self.pool)]
        if earlier:
            later = edit_turns if record.meta.get("edit") else follow_up_turns
            turns += later(record, rng, answers=self.answers)
        else:
            turns += record_turns(record, rng, answers=self.answers, pool=self.pool)
        if isinstance(record, InstructionRecord):
            # A literal <POSE> in instruction text would make the model emit a pose with no target.
            turns = [(r, t.replace(POSE_TOKEN, "pose")) for r, t in turns]
        pil = [record.load_image()] if record.load_image is not None else []
        marks = sum(t.count(IMAGE_MARK) for r, t in turns if r == "user")
        if marks != len(pil):
            raise ValueError(f"{record.meta}: {marks} <image> marks but {len(pil)} image(s)")
        if pil and not self.family.accepts_images:
            raise ValueError(f"{record.meta}: this backbone ({self.family.name}) does not read images")
        images = [self.family.encode_image(im) for im in pil]
        ids, labels, spans = self._encode_turns(turns, images)
        # Too long: drop whole trailing exchanges first (instruction chats), then cut the last answer.
        while len(ids) > self.max_length and len(turns) > 2:
            turns = turns[:-2]
            kept = sum(t.count(IMAGE_MARK) for r, t in turns if r == "user")
            images = images[:kept]
            ids, labels, spans = self._encode_turns(turns, images)
        if len(ids) > self.max_length:
            prompt_len = next(i for i, lab in enumerate(labels) if lab != IGNORE)
            if prompt_len >= self.max_length or (record.kind != "instruction"):
                raise ValueError(f"{record.meta}: {len(ids)} tokens do not fit max_length={self.max_length}")
            ids, labels = ids[: self.max_length], labels[: self.max_length]
            spans = [(a, min(b, self.max_length)) for a, b in spans if a < self.max_length]
        num_pose = sum(1 for i in ids if i == self.pose_token_id)
        expected = (1 if isinstance(record, PoseRecord) else 0) + len(earlier)
        if num_pose != expected:
            raise ValueError(f"{record.meta}: {num_pose} <POSE> tokens, expected {expected}")
        positions = self.family.positions(ids, images)
        return EncodedSample(input_ids=ids, labels=labels, images=images, positions=positions,
                             pose_rotmat=getattr(record, "pose_rotmat", None), kind=record.kind,
                             earlier_poses=[e.pose_rotmat for e in earlier],
                             focus_joints=tuple(getattr(record, "meta", {}).get("edit_changed", ())) if earlier else (),
                             user_spans=spans)


def collate(samples: list[EncodedSample], pad_id: int, family, prompt_attention: str = "causal") -> dict:
    """Right-padded batch.

    Returns input_ids, labels, attention_mask (batch, L); position_ids (3, batch, L) for 3-D RoPE families;
    ``images`` (all ImageInputs in sequence order, for ``family.image_kwargs``); pose_targets (N, 24, 3, 3)
    float32 for the N `<POSE>` tokens in batch order (a follow-up chat's earlier answers before its last)
    and pose_sample_index (N,) the sample each belongs to; pose_focus (N, 24) bool, the joints an edit turn
    changes (all False for every other pose); kinds (list of str). ``prompt_attention`` "block" adds
    block_ids (batch, L): each token's user message (``attention.block_ids``), for ``language_mask``.
    """
    length = max(len(s.input_ids) for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    planes = samples[0].positions.shape[0]
    positions = torch.zeros((planes, batch, length), dtype=torch.long)
    for b, s in enumerate(samples):
        n = len(s.input_ids)
        input_ids[b, :n] = torch.tensor(s.input_ids)
        labels[b, :n] = torch.tensor(s.labels)
        mask[b, :n] = 1
        positions[:, b, :n] = s.positions
        if n < length:   # padding continues the count (masked anyway)
            positions[:, b, n:] = s.positions[:, -1:] + torch.arange(1, length - n + 1)
    pose_index, pose_targets, focus = [], [], []
    for b, s in enumerate(samples):
        poses = list(s.earlier_poses) + ([s.pose_rotmat] if s.pose_rotmat is not None else [])
        pose_index += [b] * len(poses)
        pose_targets += poses
        focus += [()] * len(s.earlier_poses) + ([s.focus_joints] if s.pose_rotmat is not None else [])
    pose_focus = torch.zeros((len(focus), 24), dtype=torch.bool)
    for n, joints in enumerate(focus):
        pose_focus[n, list(joints)] = True
    targets = torch.from_numpy(np.stack(pose_targets)).float() if pose_targets else torch.zeros((0, 24, 3, 3))
    out = {"input_ids": input_ids, "labels": labels, "attention_mask": mask,
           "images": [im for s in samples for im in s.images],
           "pose_targets": targets, "pose_sample_index": torch.tensor(pose_index, dtype=torch.long),
           "pose_focus": pose_focus,
           "kinds": [s.kind for s in samples]}
    if planes > 1:
        out["position_ids"] = positions
    if prompt_attention == "block":
        out["block_ids"] = torch.stack([block_ids(length, s.user_spans) for s in samples])
    return out


def language_mask(batch: dict, family, device, dtype):
    """The attention mask the forward takes for ``batch``: its 2-D padding mask, or under block prompt
    attention the 4-D block-causal mask, in the format of the model's attention implementation and
    ``dtype``; the runtime builds the same one (``attention.block_causal_mask``). It is made here rather
    than in ``collate`` because that format depends on the model, which the data loader's workers lack."""
    mask = batch["attention_mask"].to(device)
    if "block_ids" not in batch:
        return mask
    return block_causal_mask(family.text_config, mask, batch["block_ids"], query_length=mask.shape[1], dtype=dtype)
