"""PoseGPT for Blender: type a pose or drop a photo, and an SMPL body takes it.

Package layout (the glTF add-on's split): bpy-free core modules (``chat_state``, ``reply_handling``,
``connection``, ``pose_files``) that import without Blender, and Blender glue (``properties``,
``preferences``, ``operators``, ``panels``, ``session``, ``capture``, ``rig_mapping``) imported only by
``register()``.

Shipped three ways by ``make addon`` (scripts/build_addon.py): as a Blender 4.2+ extension (the manifest;
pyzmq, smpl_rig and posegpt_net as wheels) and as a legacy add-on zip for Blender 3.4–4.1, where
``bl_info`` below is read and the same libraries sit unpacked in ``_vendor/`` next to this file.
"""
import os
import sys

bl_info = {
    "name": "PoseGPT for Blender",
    "author": "PoseGPT for Blender contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "View3D > Sidebar > PoseGPT",
    "description": "Pose SMPL bodies from text or images with the PoseGPT model",
    "category": "Animation",
}

_VENDOR_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")
if os.path.isdir(_VENDOR_DIR) and _VENDOR_DIR not in sys.path:
    # Legacy add-on zip only: Blender < 4.2 cannot install wheels, so pyzmq, smpl_rig and posegpt_net
    # travel unpacked here. Extensions get them from their wheels instead and have no _vendor folder.
    sys.path.insert(0, _VENDOR_DIR)


def _classes() -> tuple:
    """Every class the add-on registers, in registration order (property groups before their users)."""
    from . import operators, panels, preferences, properties, rig_mapping
    return (*preferences.classes, *properties.classes, *operators.classes, *panels.classes, *rig_mapping.classes)


def register():
    import bpy
    from . import operators, panels, pose_previews, properties, rig_mapping
    for cls in _classes():
        bpy.utils.register_class(cls)
    pose_previews.register_icons()
    properties.register_properties()
    rig_mapping.register_properties()
    operators.register_keymap()


def unregister():
    import bpy
    from . import operators, panels, pose_previews, properties, rig_mapping, session
    session.disconnect()
    operators.unregister_keymap()
    pose_previews.unregister_icons()
    rig_mapping.unregister_properties()
    properties.unregister_properties()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
