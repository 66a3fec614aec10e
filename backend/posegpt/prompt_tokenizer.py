"""Tokenising a whole conversation string the way the published PoseGPT/ChatPose code did.

What a model saw in training is token ids, not text, so a converted checkpoint must be prompted with the
same ids. The authors' code builds the conversation as one string and tokenises it with LLaVA's
``tokenizer_image_token``: the string is split only at ``<image>``, each piece goes through the slow
(sentencepiece) Llama tokenizer of transformers 4.31 with its BOS, the BOS of every piece but the first is
dropped, and the image placeholder goes between the pieces. That tokenizer

1. with ``legacy=False``, writes "▁" in front of the text (and turns any "▁" in it into a space);
2. splits the text at every added or special token (longest match first);
3. strips the whitespace on both sides of an added token, unless the token carries its own
   ``lstrip``/``rstrip`` flags (the special tokens loaded from their config do): "it is [SEG] ." becomes
   "it is", "[SEG]", ".";
4. encodes each remaining piece with sentencepiece, which puts "▁" in front of it; with ``legacy=False``
   only the first piece keeps that "▁" (and a piece left as a bare "▁" is dropped).

transformers 5 has no slow Llama tokenizer and its fast one differs from this in all four steps (it keeps
the newline after ``<im_end>``, puts "▁" pieces next to added tokens), so the rule is written out here on
the ``sentencepiece`` library itself, which is what that tokenizer called. ``HFChunkTokenizer`` is the
fallback for checkpoints shipped without a ``tokenizer.model``: each piece through the checkpoint's own
tokenizer, whole.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SPIECE_UNDERLINE = "▁"


@dataclass(frozen=True)
class AddedTokenRule:
    """An added or special token: ``strip`` None = strip whitespace on both sides (a plain added token);
    otherwise ``(lstrip, rstrip)`` as the token's own flags say. ``special``: one of the sentencepiece
    vocabulary's own control tokens (``<s>``, ``</s>``, ``<unk>``), which decode differently."""

    content: str
    token_id: int
    strip: tuple[bool, bool] | None = None
    special: bool = False


class SentencePiecePromptTokenizer:
    """transformers 4.31's slow ``LlamaTokenizer.__call__(text).input_ids``, on a sentencepiece model.

    ``added``: every token that is never split (added tokens such as ``<POSE>``, ``<im_start>``, and the
    special ``<s>``, ``</s>``, ``<unk>``); ``piece_ids`` maps a sentencepiece piece to the checkpoint's id
    (the identity for a Llama vocabulary; checked by the caller)."""

    def __init__(self, model_file: str | Path, added: list[AddedTokenRule], legacy: bool, bos_id: int | None,
                 add_bos: bool = True):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor()
        self.sp.Load(str(model_file))
        self.legacy, self.bos_id, self.add_bos = legacy, bos_id, add_bos
        self.added = {rule.content: rule for rule in added}
        ordered = sorted(self.added, key=len, reverse=True)  # the longest token wins where two match
        self._split = re.compile("(" + "|".join(re.escape(t) for t in ordered) + ")") if ordered else None

    def __call__(self, text: str) -> list[int]:
        """Ids of ``text`` with the BOS first (when ``add_bos``), as ``tokenizer(text).input_ids`` gave."""
        ids = [self.bos_id] if self.add_bos and self.bos_id is not None else []
        return ids + [self._id(token) for token in self.tokenize(text)]

    def tokenize(self, text: str) -> list[str]:
        if not self.legacy:                                                   # step 1
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        parts = [p for p in self._split.split(text)] if self._split else [text]   # step 2 (odd: tokens)
        for i in range(1, len(parts), 2):                                     # step 3
            rule = self.added[parts[i]]
            lstrip, rstrip = rule.strip if rule.strip is not None else (True, True)
            if rstrip:
                parts[i + 1] = parts[i + 1].lstrip()
            if lstrip:
                parts[i - 1] = parts[i - 1].rstrip()
        tokens: list[str] = []
        for i, part in enumerate(parts):
            if not part:
                continue
            tokens += [part] if i % 2 else self._encode_piece(part)           # step 4
        return tokens

    def _encode_piece(self, text: str) -> list[str]:
        is_first = False
        if not self.legacy:
            is_first = text.startswith(SPIECE_UNDERLINE)
            if is_first:
                text = text[1:]
        tokens = self.sp.encode(text, out_type=str)
        if not self.legacy and not is_first and not text.startswith(" ") and tokens and \
                tokens[0].startswith(SPIECE_UNDERLINE):
            tokens = ([tokens[0][1:]] if len(tokens[0]) > 1 else []) + tokens[1:]
        return tokens

    def _id(self, token: str) -> int:
        rule = self.added.get(token)
        return rule.token_id if rule is not None else self.sp.piece_to_id(token)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` as the slow tokenizer's ``decode(ids, skip_special_tokens=False)`` wrote it: the
        runs between added tokens decoded (a control token inside a run gets a space before it), the parts
        joined with single spaces ("Sure, it is [SEG]  .</s>")."""
        by_id = {rule.token_id: rule for rule in self.added.values()}
        parts: list[str] = []
        run: list[int] = []
        for token_id in ids:
            rule = by_id.get(token_id)
            if rule is not None and not rule.special:
                if run:
                    parts.append(self._run_to_string(run, by_id))
                parts.append(rule.content)
                run = []
            else:
                run.append(token_id)
        if run:
            parts.append(self._run_to_string(run, by_id))
        return " ".join(parts)

    def _run_to_string(self, ids: list[int], by_id: dict) -> str:
        out, run, previous_special = "", [], False
        for i, token_id in enumerate(ids):
            rule = by_id.get(token_id)
            if rule is not None and rule.special:
                if not previous_special and i != 0:
                    out += " "
                out += self.sp.decode(run) + rule.content
                run, previous_special = [], True
            else:
                run.append(token_id)
                previous_special = False
        return out + self.sp.decode(run)


class HFChunkTokenizer:
    """A piece of the conversation through the checkpoint's own tokenizer, whole (BOS first)."""

    def __init__(self, tokenizer, add_bos: bool = True):
        self.tokenizer, self.add_bos = tokenizer, add_bos

    def __call__(self, text: str) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.add_bos and self.tokenizer.bos_token_id is not None else []
        return bos + (self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else [])


def split_at_images(text: str, image_mark: str, encode, image_ids) -> list[int]:
    """LLaVA's ``tokenizer_image_token``: ``text`` split only at ``image_mark``, each piece encoded whole
    with its BOS, the BOS of every piece after the first dropped, ``image_ids(k)`` between pieces."""
    ids: list[int] = []
    for k, chunk in enumerate(text.split(image_mark)):
        chunk_ids = encode(chunk)
        if k:
            ids += list(image_ids(k - 1))
            chunk_ids = chunk_ids[1:] if encode.add_bos else chunk_ids
        ids += chunk_ids
    return ids


def from_spec(spec: dict, directory: Path, tokenizer):
    """The prompt tokenizer a manifest's ``prompt_tokenizer`` entry describes (see checkpoint_format.md)."""
    kind = spec.get("kind")
    if kind == "sentencepiece_llama_slow":
        added = [AddedTokenRule(t["content"], int(t["id"]), None if t.get("strip") is None else tuple(t["strip"]),
                                bool(t.get("special", False))) for t in spec["added_tokens"]]
        return SentencePiecePromptTokenizer(directory / spec["model_file"], added, bool(spec["legacy"]),
                                            spec.get("bos_id"), bool(spec.get("add_bos", True)))
    if kind == "checkpoint_tokenizer":
        return HFChunkTokenizer(tokenizer, bool(spec.get("add_bos", True)))
    raise ValueError(f"unknown prompt_tokenizer kind {kind!r}")
