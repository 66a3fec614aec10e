"""The chat as plain Python: messages, poses stored as text, and wrapping for the sidebar.

No bpy here (a test imports this module without Blender). The Blender side keeps one message per
``PropertyGroup`` item; this module says how a pose becomes the string stored there and back, so
the .blend file carries the exact float64 rotations the backend returned.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np

from smpl_rig.bones import check_rotmats as _check_rotations
from smpl_rig.skeleton import NUM_JOINTS

POSE_JSON_FORMAT = "posegpt-pose-rotmat"
POSE_JSON_VERSION = 1
ROLES = ("user", "assistant", "error", "note")

# Pixel width of one average character of Blender's UI font at ui_scale 1.0; used to turn the
# sidebar's width into a wrap column. Slightly generous so lines never run past the edge.
UI_CHAR_WIDTH_PX = 7.0
MIN_WRAP_COLUMNS = 12


class PoseFormatError(ValueError):
    """A stored or imported pose that is not 24 proper rotation matrices (the message says why)."""


def check_rotmats(rotmats) -> np.ndarray:
    """Validate and return ``rotmats`` as float64 (24, 3, 3) proper rotations (det +1, orthonormal): the
    one check of ``smpl_rig.bones``, its ``ValueError`` raised as ``PoseFormatError``."""
    try:
        return _check_rotations(rotmats, "the pose", num_joints=NUM_JOINTS)
    except ValueError as error:
        raise PoseFormatError(str(error)) from None


def pose_to_json(rotmats) -> str:
    """Encode an SMPL-frame pose (24, 3, 3) as a compact JSON string (float64 values kept exactly)."""
    arr = check_rotmats(rotmats)
    return json.dumps({"format": POSE_JSON_FORMAT, "version": POSE_JSON_VERSION, "frame": "smpl",
                       "rotmat": arr.reshape(NUM_JOINTS, 9).tolist()}, separators=(",", ":"))


def pose_from_json(text: str) -> np.ndarray:
    """Decode what ``pose_to_json`` wrote back to a float64 (24, 3, 3) array."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PoseFormatError(f"stored pose is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != POSE_JSON_FORMAT:
        raise PoseFormatError(f"stored pose is not in the {POSE_JSON_FORMAT!r} format")
    if data.get("frame") != "smpl":
        raise PoseFormatError(f"stored pose must be in the SMPL frame, not {data.get('frame')!r}")
    return check_rotmats(np.asarray(data.get("rotmat"), dtype=np.float64).reshape(NUM_JOINTS, 3, 3))


def display_text(text: str, pose_token: str = "<POSE>") -> str:
    """A reply as the artist reads it: the model's pose token taken out (the Apply/Key row stands for it)."""
    shown = " ".join(text.replace(pose_token, " ").split()) if pose_token else text.strip()
    return shown.rstrip(":").strip() or "(pose)"


def wrap_columns(region_width_px: float, ui_scale: float = 1.0, indent_px: float = 40.0) -> int:
    """How many characters fit on one sidebar line of ``region_width_px`` pixels."""
    usable = max(0.0, region_width_px - indent_px)
    return max(MIN_WRAP_COLUMNS, int(usable / (UI_CHAR_WIDTH_PX * max(ui_scale, 0.1))))


def wrap_text(text: str, columns: int) -> list[str]:
    """Wrap ``text`` for labels of at most ``columns`` characters, keeping the user's line breaks."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(paragraph, width=max(columns, 1), break_long_words=True) or [""])
    return lines


def first_sentence(text: str) -> str:
    """The first sentence (or clause before " — ") of ``text``: what an error entry shows folded."""
    head = text.strip().split(" — ", 1)[0].strip()
    for end in (". ", "? ", "! "):
        if end in head:
            head = head.split(end, 1)[0] + end.strip()
    return head[:1].upper() + head[1:] if head else head


def turns(roles: list[str]) -> list[list[int]]:
    """Group a chat's message indices into turns: a prompt and what answered it (replies, errors, notes).
    Messages before the first prompt form a turn of their own."""
    grouped: list[list[int]] = []
    for index, role in enumerate(roles):
        if role == "user" or not grouped:
            grouped.append([index])
        else:
            grouped[-1].append(index)
    return grouped
