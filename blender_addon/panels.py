"""The View3D sidebar tab "PoseGPT": connection, body, chat, options, pose files."""
from __future__ import annotations

import time

import bpy

from . import rig_mapping, session
from .chat_state import display_text, wrap_columns, wrap_text
from .operators import target_armature

MAX_MESSAGES_SHOWN = 40              # older messages stay in the .blend; the panel shows the latest ones
ROLE_ICONS = {"user": "USER", "assistant": "ARMATURE_DATA", "error": "ERROR"}


def _wrapped_labels(layout, context, text: str, **label_kw) -> None:
    columns = wrap_columns(context.region.width if context.region else 300, context.preferences.system.ui_scale)
    column = layout.column(align=True)
    column.scale_y = 0.8
    for line in wrap_text(text, columns):
        column.label(text=line, **label_kw)


class _SidebarPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PoseGPT"


class POSEGPT_PT_main(_SidebarPanel, bpy.types.Panel):
    """Connection to the PoseGPT backend"""
    bl_idname = "POSEGPT_PT_main"
    bl_label = "PoseGPT"

    def draw(self, context):
        layout = self.layout
        conn = session.connection()
        connected = session.is_connected()
        icon = "LINKED" if connected else ("ERROR" if session.error_text() else "UNLINKED")
        layout.label(text=session.status_text(), icon=icon)
        if connected:
            card = conn.model_card
            column = layout.column(align=True)
            column.scale_y = 0.8
            column.label(text=conn.address.removeprefix("tcp://"), icon="URL")
            if card:
                images = "text + images" if card.get("accepts_images") else "text only"
                column.label(text=f"{card.get('family', '?')} model, {images}", icon="INFO")
                column.label(text=str(card.get("backbone", "")), icon="BLANK1")
        if session.error_text():
            box = layout.box()
            box.alert = True
            _wrapped_labels(box, context, session.error_text())
        row = layout.row(align=True)
        if conn is None or conn.state in ("closed", "error"):
            row.operator("posegpt.connect", icon="PLAY")
        else:
            row.operator("posegpt.disconnect", icon="CANCEL")


class POSEGPT_PT_body(_SidebarPanel, bpy.types.Panel):
    """Which armature the chat poses: an SMPL body, or your own humanoid rig"""
    bl_idname = "POSEGPT_PT_body"
    bl_label = "Body"
    bl_parent_id = "POSEGPT_PT_main"

    def draw(self, context):
        layout = self.layout
        obj = target_armature(context)
        if obj is not None:
            layout.label(text=f"Target: {obj.name}", icon="OUTLINER_OB_ARMATURE")
            _draw_rig_status(layout, context, obj)
        else:
            candidate = rig_mapping.armature_of(context.active_object)
            if candidate is not None:
                box = layout.box()
                box.alert = True
                _wrapped_labels(box, context, rig_mapping.status(candidate)["problem"] or "")
            layout.label(text="Select a humanoid armature, or", icon="INFO")
        layout.operator("posegpt.create_body", icon="OUTLINER_OB_ARMATURE")


def _draw_rig_status(layout, context, obj) -> None:
    """Mapped joints of the artist's own rig, and what posing it drives."""
    info = rig_mapping.status(obj)
    if info.get("smpl"):
        return
    column = layout.column(align=True)
    column.scale_y = 0.8
    column.label(text=f"{info['mapped']} of 24 joints mapped ({info['convention']} names)", icon="BONE_DATA")
    if info["missing"]:
        _wrapped_labels(column, context, "Not mapped: " + ", ".join(info["missing"]))
    if info["convention"] == "rigify":
        _wrapped_labels(column, context, "Poses the FK controls; the limbs' IK/FK switches are set to FK.")


class POSEGPT_PT_chat(_SidebarPanel, bpy.types.Panel):
    """The conversation with the model about the active armature"""
    bl_idname = "POSEGPT_PT_chat"
    bl_label = "Chat"
    bl_parent_id = "POSEGPT_PT_main"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.posegpt
        obj = target_armature(context)
        if obj is None:
            layout.label(text="No armature PoseGPT can pose is selected")
            return
        self._draw_history(layout, context, obj)
        self._draw_waiting(layout, obj)
        layout.separator()
        layout.prop(settings, "prompt", text="", icon="GREASEPENCIL")
        layout.prop(settings, "image_source")
        if settings.image_source == "FILE":
            layout.prop(settings, "image_path", text="")
        elif settings.image_source == "BLENDER_IMAGE":
            layout.template_ID(settings, "image", open="image.open")
        row = layout.row(align=True)
        row.scale_y = 1.3
        send = row.operator("posegpt.send_prompt", icon="PLAY")
        send.armature = obj.name
        row.operator("posegpt.reset_chat", icon="TRASH").armature = obj.name

    def _draw_history(self, layout, context, obj):
        messages = obj.posegpt_chat.messages
        conn = session.connection()
        pose_token = (conn.model_card.get("pose_token") if conn is not None else None) or "<POSE>"
        frame = context.scene.frame_current
        first = max(0, len(messages) - MAX_MESSAGES_SHOWN)
        if first:
            layout.label(text=f"{first} earlier messages not shown")
        for index in range(first, len(messages)):
            message = messages[index]
            box = layout.box()
            box.alert = message.role == "error"
            header = box.row()
            header.label(text={"user": "You", "assistant": "PoseGPT", "error": "Error"}[message.role],
                         icon=ROLE_ICONS[message.role])
            if message.image is not None:
                box.label(text=message.image.name, icon="IMAGE_DATA")
            text = display_text(message.text, pose_token) if message.role == "assistant" else message.text
            _wrapped_labels(box, context, text or "(no text)")
            if message.pose_json:
                row = box.row(align=True)
                apply = row.operator("posegpt.apply_pose", icon="POSE_HLT")
                apply.armature, apply.index = obj.name, index
                key = row.operator("posegpt.key_pose", text=f"Key at {frame}", icon="KEY_HLT")
                key.armature, key.index = obj.name, index
                asset = row.operator("posegpt.add_pose_asset", text="", icon="ASSET_MANAGER")
                asset.armature, asset.index = obj.name, index
                if message.keyed_frame >= 0:
                    box.label(text=f"Keyed at frame {message.keyed_frame}", icon="DECORATE_KEYFRAME")
        if not len(messages):
            layout.label(text="Describe a pose and press Send")

    def _draw_waiting(self, layout, obj):
        conn = session.connection()
        waiting = conn.chats_for(obj.name) if conn is not None else []
        if not waiting:
            return
        pending = waiting[0]
        elapsed = time.monotonic() - pending.started
        row = layout.row(align=True)
        text = f"Waiting ({pending.stage}) {elapsed:.0f} s"
        if hasattr(row, "progress"):          # Blender ≥ 4.0: an indeterminate spinning ring
            row.progress(factor=(elapsed % 1.0), type="RING", text=text)
        else:
            row.label(text=text, icon="SORTTIME")
        row.operator("posegpt.cancel_request", text="", icon="CANCEL").armature = obj.name


class POSEGPT_PT_options(_SidebarPanel, bpy.types.Panel):
    """How replies are put on the armature"""
    bl_idname = "POSEGPT_PT_options"
    bl_label = "Options"
    bl_parent_id = "POSEGPT_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = context.scene.posegpt
        layout.prop(settings, "orientation")
        layout.prop(settings, "mode")
        layout.prop(settings, "apply_strength", slider=True)
        column = layout.column(align=True)
        column.prop(settings, "floor_contact")
        column.prop(settings, "only_selected")
        column.prop(settings, "keep_changed")
        column.prop(settings, "mirror")
        row = layout.row(align=True)
        row.prop(settings, "auto_key")
        sub = row.row(align=True)
        sub.enabled = settings.auto_key
        sub.prop(settings, "key_step")


class POSEGPT_PT_pose_file(_SidebarPanel, bpy.types.Panel):
    """Save or load the current pose as SMPL parameters"""
    bl_idname = "POSEGPT_PT_pose_file"
    bl_label = "Pose file"
    bl_parent_id = "POSEGPT_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        row = self.layout.row(align=True)
        row.operator("posegpt.export_pose", icon="EXPORT")
        row.operator("posegpt.import_pose", icon="IMPORT")


classes = (POSEGPT_PT_main, POSEGPT_PT_body, POSEGPT_PT_chat, POSEGPT_PT_options, POSEGPT_PT_pose_file)
