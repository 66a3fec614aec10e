"""Data the add-on stores in the .blend: each armature's chat, and the scene's prompt and options.

The chat lives on the armature object (``Object.posegpt_chat``) so several armatures keep separate
conversations and saving the file keeps everything: prompts, replies, the poses (as JSON text with
float64 values, see ``chat_state.pose_to_json``) and the image each prompt was sent with (packed when
it was a render, so it survives a reopen on another machine).
"""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

IMAGE_SOURCES = (
    ("NONE", "None", "Send the prompt text only"),
    ("FILE", "Image file", "Send an image file from disk"),
    ("BLENDER_IMAGE", "Blender image", "Send an image already loaded in this .blend"),
    ("VIEWPORT", "Viewport", "Capture the 3D View as you see it (fast OpenGL capture) and send that"),
    ("CAMERA", "Camera render", "Render the active camera small with the scene's engine and send that"),
)
ORIENTATIONS = (
    ("KEEP", "Keep predicted", "Use the global orientation the model predicted"),
    ("UPRIGHT", "Upright, facing -Y", "Stand the body upright facing the Front view, whatever was predicted"),
)


class POSEGPT_PG_message(bpy.types.PropertyGroup):
    """One chat message: the prompt, the reply and the pose it carried."""
    role: EnumProperty(
        name="Role", description="Who wrote this message",
        items=(("user", "User", "A prompt sent to the model"),
               ("assistant", "Assistant", "The model's reply"),
               ("error", "Error", "A request that failed"),
               ("note", "Note", "What happened to a prompt without a reply (cancelled)")),
        default="user")
    text: StringProperty(name="Text", description="What was said", default="")
    prompt: StringProperty(name="Prompt", description="The prompt this reply, error or note answers",
                           default="")
    expanded: BoolProperty(name="Show all", description="Show the whole message, not its first line",
                           default=False)
    pose_json: StringProperty(
        name="Pose", description="The reply's 24 joint rotations (SMPL frame) as JSON; empty when none",
        default="")
    image: PointerProperty(name="Image", description="The image sent with this prompt, if any",
                           type=bpy.types.Image)
    image_path: StringProperty(name="Image path", description="Where the sent image came from",
                               default="", subtype="FILE_PATH")
    keyed_frame: IntProperty(name="Keyed frame", description="Frame this pose was last keyed at (-1: never)",
                             default=-1)


class POSEGPT_PG_chat(bpy.types.PropertyGroup):
    """The conversation held with the model about one armature."""
    messages: CollectionProperty(name="Messages", description="The chat, oldest first",
                                 type=POSEGPT_PG_message)
    session_id: StringProperty(name="Session", description="The backend session this chat continues",
                               default="")
    last_error: StringProperty(name="Last error", description="The last failure and what to do about it",
                               default="")


def prompt_confirmed(settings, context) -> None:
    """The prompt field's update: Blender calls it when a text edit is confirmed (Return, Tab, or a click
    elsewhere after changing the text). Only Return sends (``operators.send_if_return`` reads the key from
    the event of an invoked operator); Tab and a click away keep the text for the artist to go on with.
    Only an edit in a 3D View's field (the sidebar, the Ctrl+Return popup) counts: a script setting the
    prompt (from a timer, the Python console, the background) does not, nor do the add-on's own writes (the
    field cleared when its reply lands) or an emptied field. Send itself ignores a prompt already on its way."""
    from . import session
    area, region = getattr(context, "area", None), getattr(context, "region", None)
    if session.writing_prompt() or not settings.prompt.strip() or area is None or region is None \
            or area.type != "VIEW_3D":
        return
    invoke_return_check()


def invoke_return_check() -> None:
    """Blender has no "which key" in an update callback, but an operator invoked from one gets the window's
    last event: the key or click that ended the edit (posegpt.prompt_confirmed)."""
    bpy.ops.posegpt.prompt_confirmed("INVOKE_DEFAULT")


class POSEGPT_PG_scene(bpy.types.PropertyGroup):
    """The prompt being written and the options for the next reply."""
    prompt: StringProperty(name="Prompt", description="Describe the pose, e.g. 'she is proposing marriage' "
                           "(Return sends it)", default="", update=prompt_confirmed)
    show_error_details: BoolProperty(name="Details", description="Show the whole error and what to do about it",
                                     default=False)
    image_source: EnumProperty(name="Image", description="What picture to send with the prompt",
                               items=IMAGE_SOURCES, default="NONE")
    image_path: StringProperty(name="Image file", description="Image file sent when the source is Image file",
                               default="", subtype="FILE_PATH")
    image: PointerProperty(name="Blender image", description="Image sent when the source is Blender image",
                           type=bpy.types.Image)
    orientation: EnumProperty(name="Orientation", description="How to treat the predicted global orientation",
                              items=ORIENTATIONS, default="KEEP")
    auto_key: BoolProperty(name="Key each reply",
                           description="Insert a key at the current frame for every reply, then advance",
                           default=False)
    key_step: IntProperty(name="Advance", description="Frames to advance after keying a reply",
                          default=10, min=0, soft_max=250)
    mode: EnumProperty(name="Mode", description="How the model answers (both remember the earlier turns)",
                       items=(("direct", "Pose", "Every reply is a pose (one fast pass, no free text)"),
                              ("chat", "Chat", "The model writes a reply and poses when it decides to")),
                       default="direct")
    # How a reply goes on the armature (any rig: smpl_rig.blender_retarget.ApplyOptions)
    apply_strength: FloatProperty(name="Strength", description="Blend from the current pose to the reply "
                                  "(per bone, in rotation space): 1 replaces the pose", default=1.0, min=0.0, max=1.0,
                                  subtype="FACTOR")
    only_selected: BoolProperty(name="Only selected bones", description="Pose only the selected pose bones",
                                default=False)
    keep_changed: BoolProperty(name="Keep my edits", description="Leave bones you rotated by hand since the last "
                               "reply as they are", default=False)
    mirror: BoolProperty(name="Mirror", description="Apply the reply mirrored, left and right swapped", default=False)
    floor_contact: BoolProperty(name="Floor contact", description="Move the body so its lowest point rests on the "
                                "floor it stood on in rest pose (kneeling, sitting, lying)", default=True)

classes = (POSEGPT_PG_message, POSEGPT_PG_chat, POSEGPT_PG_scene)


def register_properties():
    """Attach the pointers after the classes are registered."""
    bpy.types.Object.posegpt_chat = PointerProperty(
        name="PoseGPT chat", description="This armature's conversation with PoseGPT", type=POSEGPT_PG_chat)
    bpy.types.Scene.posegpt = PointerProperty(
        name="PoseGPT", description="PoseGPT prompt and options", type=POSEGPT_PG_scene)


def unregister_properties():
    del bpy.types.Scene.posegpt
    del bpy.types.Object.posegpt_chat
