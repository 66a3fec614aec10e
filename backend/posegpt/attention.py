"""Prompt attention: which tokens of a conversation see which (manifest field ``prompt_attention``).

- "causal" (the default, and what a manifest without the field means): each token sees itself and every
  token before it.
- "block" (a prefix LM per turn): each token of a user message, image placeholders included, also sees
  the rest of that message; every other token (system text, template markers, answers, `<POSE>`) stays
  causal. Why: the demo's language side is a pretrained bidirectional encoder (BERT); under a causal mask
  the first words of a prompt never see the last ones, the encoder's pretrained reading of a sentence is
  lost and the model is brittle to rephrasing. No token ever sees a later message, so the KV cache of
  earlier turns stays valid as a conversation grows.

User messages are marked where their ids are built (``TurnEncoder.user_turn_parts``) as (start, end)
spans, never guessed from the ids afterwards; ``block_ids`` turns them into the per-token groups that
transformers' own mask builder (``create_causal_mask(block_sequence_ids=...)``) overlays on the causal
mask.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:    # torch is imported where it is used, so the training config reads this module without it
    import torch

PROMPT_ATTENTION = ("causal", "block")
CAUSAL_TOKEN = -1   # the group of a token outside every user message: causal attention only


def check_prompt_attention(value: str) -> str:
    if value not in PROMPT_ATTENTION:
        raise ValueError(f"prompt_attention must be one of {PROMPT_ATTENTION}, got {value!r}")
    return value


def block_ids(length: int, spans) -> torch.Tensor:
    """(length,) group per token: k for the tokens of the k-th user message span, CAUSAL_TOKEN elsewhere."""
    import torch

    ids = torch.full((length,), CAUSAL_TOKEN, dtype=torch.long)
    for k, (start, end) in enumerate(spans):
        ids[start:end] = k
    return ids


def block_causal_mask(text_config, padding_mask: torch.Tensor, groups: torch.Tensor, *, query_length: int,
                      dtype: torch.dtype, cache=None):
    """The language model's 4-D attention mask for ``query_length`` new tokens over ``cache``: causal, a
    token of a user message also seeing its whole message (``groups`` (B, kv), from ``block_ids``), and
    never a key that ``padding_mask`` (B, kv; 0 = hidden) hides. transformers builds it in the format
    the model's attention implementation takes (sdpa: bool, True = attend; eager: additive in ``dtype``)
    and the models pass a 4-D mask through untouched."""
    import torch
    from transformers.masking_utils import create_causal_mask

    batch = padding_mask.shape[0]
    shape_only = torch.empty(batch, query_length, 0, dtype=dtype, device=padding_mask.device)
    mask = create_causal_mask(text_config, shape_only, padding_mask, cache,
                              block_sequence_ids=groups.to(padding_mask.device))
    if mask is None or mask.ndim != 4:   # flash attention takes a padding mask only: it would drop the blocks
        raise ValueError(f"block prompt attention needs an attention implementation that takes a 4-D mask "
                         f"(sdpa, eager, flex); this model uses {text_config._attn_implementation!r}")
    return mask
