"""The one PoseGPT model definition: a Hugging Face backbone + `<POSE>` token + pose head.

Training imports it from here; the runtime drives the same modules step by step (runtime.py).
The pose embedding is the last decoder layer's hidden state, after the final norm, at the position just
BEFORE each `<POSE>` token (conventions page, "The pose token"). Given labels (and pose targets), forward
returns the training loss: CE_WEIGHT × token cross-entropy + POSE_WEIGHT × pose L1 (conventions page, "Loss").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from smpl_rig import rotations

POSE_TOKEN = "<POSE>"
POSE_DIM = 24 * 6  # 24 joints × 6D (first two matrix columns), joint 0 = global orientation
CE_WEIGHT = 1.0    # the paper's loss: 1.0 × cross-entropy + 0.1 × pose L1
POSE_WEIGHT = 0.1
IGNORE_INDEX = -100


def build_pose_head(hidden_size: int, head_hidden: int | None = None) -> nn.Sequential:
    """Linear(H, H) → ReLU → Linear(H, 144), the published head layout (``text_hidden_fcs.0``)."""
    head_hidden = head_hidden or hidden_size
    return nn.Sequential(nn.Linear(hidden_size, head_hidden), nn.ReLU(), nn.Linear(head_hidden, POSE_DIM))


def text_hidden_size(config) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def unwrap_backbone(backbone):
    """The plain transformers model under a peft wrapper (LoRA layers stay injected in its modules)."""
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


def add_pose_token(backbone, tokenizer, token: str = POSE_TOKEN) -> int:
    """Add `<POSE>` to the tokenizer as a special token and grow the embeddings to match; returns its id.

    Idempotent. New embedding (and output) rows start at the mean of the old ones, a neutral start for
    fine-tuning.
    """
    if token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [token]}, replace_extra_special_tokens=False)
    vocab = len(tokenizer)
    model = unwrap_backbone(backbone)
    old = model.get_input_embeddings().weight.shape[0]
    if old < vocab:
        model.resize_token_embeddings(vocab, mean_resizing=False)
        with torch.no_grad():
            for layer in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m}.values():
                layer.weight[old:] = layer.weight[:old].mean(0, keepdim=True)
    return tokenizer.convert_tokens_to_ids(token)


def head_output_to_rotmat(d6: torch.Tensor) -> torch.Tensor:
    """(..., 144) or (..., 24, 6) head output → (..., 24, 3, 3) by Gram–Schmidt (smpl_rig.rotations)."""
    return rotations.d6_to_rotmat(d6.reshape(*d6.shape[:-1], 24, 6) if d6.shape[-1] == POSE_DIM else d6)


def pose_l1_loss(pred_rotmat: torch.Tensor, true_rotmat: torch.Tensor) -> torch.Tensor:
    """Conventions page: mean |ΔR| over the 23 body joints' matrix entries + the same over the global
    orientation (added, so the root weighs as much as all body joints together). (N, 24, 3, 3) → scalar."""
    if pred_rotmat.shape != true_rotmat.shape or pred_rotmat.shape[-3:] != (24, 3, 3):
        raise ValueError(f"pose loss needs two (N, 24, 3, 3) tensors, got {tuple(pred_rotmat.shape)} and "
                         f"{tuple(true_rotmat.shape)}")
    if pred_rotmat.shape[0] == 0:
        return pred_rotmat.sum() * 0.0
    diff = (pred_rotmat.float() - true_rotmat.float()).abs()
    return diff[:, 1:].mean() + diff[:, 0].mean()


@dataclass
class PoseGPTOutput:
    """``logits`` (batch, seq, vocab), None when only the loss was asked for; ``loss`` scalar or None: the
    training loss, ``ce_weight`` × ``ce_loss`` + ``pose_weight`` × ``pose_loss`` (the pose term only when
    pose targets were given); ``ce_loss`` / ``pose_loss`` its two parts (scalars or None); ``pose_d6`` (N, 24, 6); ``pose_rotmat`` (N, 24, 3, 3); ``pose_batch_index`` (N,); ``hidden_states``
    (batch, seq, H) last layer after the norm; ``cache`` the backbone's KV cache (when ``use_cache``)."""

    logits: torch.Tensor | None
    loss: torch.Tensor | None
    pose_d6: torch.Tensor
    pose_rotmat: torch.Tensor
    pose_batch_index: torch.Tensor
    hidden_states: torch.Tensor
    cache: object = None
    ce_loss: torch.Tensor | None = None
    pose_loss: torch.Tensor | None = None


class PoseGPT(nn.Module):
    """``backbone`` (HF model with ``.model`` and an output embedding, maybe wrapped by peft) + ``pose_head``."""

    def __init__(self, backbone, pose_token_id: int, pose_head: nn.Module | None = None):
        super().__init__()
        if pose_token_id is None or pose_token_id < 0:
            raise ValueError("pose_token_id must be the tokenizer id of <POSE> (see add_pose_token)")
        self.backbone = backbone
        hidden = text_hidden_size(unwrap_backbone(backbone).config)
        self.pose_head = pose_head if pose_head is not None else build_pose_head(hidden)
        self.pose_token_id = int(pose_token_id)

    @property
    def decoder(self):
        """The backbone's base model (vision + decoder): returns ``last_hidden_state`` after the final norm."""
        return unwrap_backbone(self.backbone).model

    @property
    def lm_head(self) -> nn.Module:
        return unwrap_backbone(self.backbone).get_output_embeddings()

    def pose_from_hidden(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H) pose embeddings → (pose_d6 (N, 24, 6), pose_rotmat (N, 24, 3, 3)), head run in float32."""
        head_dtype = next(self.pose_head.parameters()).dtype
        d6 = self.pose_head(hidden.to(head_dtype)).float().reshape(-1, 24, 6)
        return d6, head_output_to_rotmat(d6)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                pose_targets: torch.Tensor | None = None, return_logits: bool = True,
                ce_weight: float = CE_WEIGHT, pose_weight: float = POSE_WEIGHT, **backbone_kwargs) -> PoseGPTOutput:
        """input_ids (batch, seq); labels (batch, seq) with -100 where no loss is wanted (standard shift:
        position t predicts token t+1). Poses come from every `<POSE>` in ``input_ids``, in order,
        batch-major; a `<POSE>` at position 0 has no preceding state and is an error.

        pose_targets (N, 24, 3, 3): the true rotations of those N `<POSE>` tokens, in the same order; with
        them the loss gets ``pose_weight`` × ``pose_l1_loss`` (needs labels too).

        return_logits=False (training): the output layer runs only where a label is, giving the same loss
        without the (batch, seq, vocab) logits — most positions of a pose chat are prompt, unlabelled."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        if pose_targets is not None and labels is None:
            raise ValueError("pose_targets need labels: the loss is cross-entropy plus the pose term")
        if pixel_values is not None:
            backbone_kwargs["pixel_values"] = pixel_values
        image_token_id = getattr(unwrap_backbone(self.backbone).config, "image_token_id", None)
        if "image_grid_thw" in backbone_kwargs and "mm_token_type_ids" not in backbone_kwargs:
            # Qwen2-VL's multimodal RoPE needs to know which tokens are image patches.
            backbone_kwargs["mm_token_type_ids"] = (input_ids == image_token_id).int()
        out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, **backbone_kwargs)
        hidden = out.last_hidden_state
        logits = self.lm_head(hidden) if return_logits or labels is None else None
        ce = None
        if labels is not None:
            targets = labels[:, 1:].to(hidden.device)
            if logits is not None:
                ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                     ignore_index=IGNORE_INDEX)
            else:
                labelled = targets != IGNORE_INDEX
                ce = F.cross_entropy(self.lm_head(hidden[:, :-1][labelled]).float(), targets[labelled])
        batch_index, positions = (input_ids == self.pose_token_id).nonzero(as_tuple=True)
        if (positions == 0).any():
            raise ValueError("a <POSE> token at position 0 has no preceding hidden state")
        d6, rotmat = self.pose_from_hidden(hidden[batch_index, positions - 1])
        pose = loss = None
        if ce is not None:
            loss = ce_weight * ce
        if pose_targets is not None:
            if pose_targets.shape[0] != rotmat.shape[0]:
                raise ValueError(f"{pose_targets.shape[0]} pose targets for {rotmat.shape[0]} <POSE> tokens in "
                                 "input_ids: give one (24, 3, 3) target per token, in order")
            pose = pose_l1_loss(rotmat, pose_targets.to(rotmat.device))
            loss = loss + pose_weight * pose
        return PoseGPTOutput(logits=logits, loss=loss, pose_d6=d6, pose_rotmat=rotmat,
                             pose_batch_index=batch_index, hidden_states=hidden,
                             cache=getattr(out, "cache", None), ce_loss=ce, pose_loss=pose)
