"""The plain records every data adapter yields; templates (training/chat_turns.py) turn them into chats."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class PoseRecord:
    """One person with an SMPL pose and what describes it (a caption, an image crop, or both).

    pose_rotmat: (24, 3, 3) float32 local joint rotations; joint 0 is the global orientation in the CAMERA
                 frame (upright facing the viewer = diag(1, −1, −1)), as the model predicts it.
    caption:     text describing the pose (text→pose) or the person (reasoning-based estimation), or None.
    load_image:  callable returning the RGB ``PIL.Image`` (lazy: images are read only when a batch needs them).
    """
    kind: str                                  # "text" | "image"
    pose_rotmat: np.ndarray
    caption: str | None = None
    load_image: Callable[[], object] | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class InstructionRecord:
    """A multi-turn conversation without a pose (LLaVA instruction data).

    turns: list of (role, text), role in {"user", "assistant"}, starting with the user; the literal
           ``<image>`` in a user turn marks where the image goes.
    """
    turns: list
    load_image: Callable[[], object] | None = None
    meta: dict = field(default_factory=dict)
    kind: str = "instruction"


def check_rotmat(pose_rotmat: np.ndarray, what: str) -> np.ndarray:
    """Validate a (24, 3, 3) pose and return it as float32."""
    pose = np.asarray(pose_rotmat)
    if pose.shape != (24, 3, 3):
        raise ValueError(f"{what}: expected a (24, 3, 3) pose, got {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise ValueError(f"{what}: pose has NaN or infinite values")
    return pose.astype(np.float32)
