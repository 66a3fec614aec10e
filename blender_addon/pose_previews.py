"""The chat's stick-figure icons as a ``bpy.utils.previews`` collection, one per distinct reply pose
(Blender glue for pose_icon.py, which computes the pixels). Its own module because both the sidebar's draw
(panels) and the after-draw work of a reply (session) make them."""
from __future__ import annotations

import hashlib

from . import pose_icon
from .chat_state import pose_from_json


_icons = {"previews": None}     # bpy.utils.previews collection: one stick figure per distinct reply pose


def register_icons() -> None:
    import bpy.utils.previews
    _icons["previews"] = bpy.utils.previews.new()


def unregister_icons() -> None:
    import bpy.utils.previews
    if _icons["previews"] is not None:
        bpy.utils.previews.remove(_icons["previews"])
    _icons["previews"] = None


def pose_preview(pose_json: str):
    """The preview holding a stored pose's stick figure (pose_icon.py), made the first time it is asked for
    and kept for the session; None for a pose that does not decode or before the add-on registered."""
    previews = _icons["previews"]
    if previews is None or not pose_json:
        return None
    key = f"pose-{hashlib.sha1(pose_json.encode()).hexdigest()[:16]}"
    if key not in previews:
        try:
            pixels = pose_icon.stick_figure(pose_from_json(pose_json)).ravel()
        except ValueError:                        # PoseFormatError: a stored pose that does not decode
            return None
        preview = previews.new(key)
        preview.icon_size = preview.image_size = (pose_icon.ICON_PX, pose_icon.ICON_PX)
        preview.icon_pixels_float = preview.image_pixels_float = pixels
    return previews[key]


def pose_icon_id(pose_json: str) -> int:
    """The stick figure's icon id for ``layout.label(icon_value=…)``; 0 (no icon) when there is none (and
    always in background Blender, which has no icons)."""
    preview = pose_preview(pose_json)
    return preview.icon_id if preview is not None else 0
