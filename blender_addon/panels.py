"""The View3D sidebar tab "PoseGPT": connection, body, chat, options, pose files."""
from __future__ import annotations

import time

import bpy

from . import rig_mapping, session
from .chat_state import display_text, first_sentence, turns, wrap_columns, wrap_text
from .operators import target_armature
from .pose_previews import pose_icon_id

MAX_TURNS_SHOWN = 20                 # older turns stay in the .blend; the panel shows the latest ones
MAX_MESSAGES_SHOWN = 4 * MAX_TURNS_SHOWN
# replies that say nothing besides their pose: folded, the Apply/Key row stands for them
GENERIC_REPLIES = frozenset({"(pose)", "Sure, here is the pose", "Sure, here is the pose.", "Sure", "Here it is"})


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


STATE_ICONS = {"connecting": "SORTTIME", "connected": "LINKED", "lost": "ERROR", "error": "UNLINKED",
               "closed": "UNLINKED"}


class POSEGPT_PT_main(_SidebarPanel, bpy.types.Panel):
    """Connection to the PoseGPT backend"""
    bl_idname = "POSEGPT_PT_main"
    bl_label = "PoseGPT"

    def draw(self, context):
        layout = self.layout
        conn = session.connection()
        state = conn.state if conn is not None else "closed"
        row = layout.row(align=True)
        row.alert = state == "lost"
        row.label(text=session.status_text(), icon=STATE_ICONS.get(state, "UNLINKED"))
        if conn is None or not conn.alive:
            row.operator("posegpt.connect", text="", icon="PLAY")
        else:
            row.operator("posegpt.disconnect", text="", icon="CANCEL")
        if conn is not None and conn.model_card and state in ("connected", "lost"):
            card = conn.model_card
            column = layout.column(align=True)
            column.scale_y = 0.8
            images = "text + images" if card.get("accepts_images") else "text only"
            column.label(text=f"{card.get('family', '?')} model, {images}", icon="INFO")
            column.label(text=str(card.get("backbone", "")), icon="BLANK1")
            column.label(text=conn.address.removeprefix("tcp://"), icon="URL")
        if session.error_text():
            _draw_error(layout, context, session.error_text(), context.scene.posegpt, "show_error_details")


def _draw_error(layout, context, text: str, owner, flag: str) -> None:
    """An error as one sentence; the whole text (what to do) when ``owner.flag`` is on."""
    box = layout.box()
    box.alert = True
    row = box.row(align=True)
    shown = getattr(owner, flag)
    row.prop(owner, flag, text="", icon="TRIA_DOWN" if shown else "TRIA_RIGHT", emboss=False)
    row.label(text=_one_line(first_sentence(text), context), icon="ERROR")
    if shown:
        _wrapped_labels(box, context, text)


def _columns(context) -> int:
    return wrap_columns(context.region.width if context.region else 300, context.preferences.system.ui_scale)


def _one_line(text: str, context, indent: int = 4) -> str:
    """``text`` cut to one sidebar line (an ellipsis marks the cut)."""
    columns = max(8, _columns(context) - indent)
    text = " ".join(text.split())
    return text if len(text) <= columns else text[:columns - 1].rstrip() + "…"


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
    """The conversation with the model about the active armature: the prompt on top, the newest turn
    below it"""
    bl_idname = "POSEGPT_PT_chat"
    bl_label = "Chat"
    bl_parent_id = "POSEGPT_PT_main"

    def draw(self, context):
        layout = self.layout
        obj = target_armature(context)
        if obj is None:
            layout.label(text="No armature PoseGPT can pose is selected")
            return
        self._draw_prompt(layout, context, obj)
        self._draw_history(layout, context, obj)

    def _draw_prompt(self, layout, context, obj):
        settings = context.scene.posegpt
        column = layout.column(align=True)
        column.prop(settings, "prompt", text="", icon="OUTLINER_DATA_GP_LAYER")
        row = column.row(align=True)
        row.prop(settings, "image_source", text="", icon="IMAGE_DATA")
        if settings.image_source == "FILE":
            column.prop(settings, "image_path", text="")
        elif settings.image_source == "BLENDER_IMAGE":
            column.template_ID(settings, "image", open="image.open")
        conn = session.connection()
        waiting = conn.chats_for(obj.name) if conn is not None else []
        rendering = session.render_for(obj.name)
        if rendering is not None and not rendering.cancelled:
            from .connection import Pending
            waiting = [*waiting, Pending("render", "chat", target=obj.name, prompt=rendering.prompt,
                                         started=rendering.started, stage="rendering the camera")]
        # One row whatever the state: the sidebar overlaps the 3D View, and a sidebar whose panels change
        # height makes Blender redraw the whole 3D View; the turn waiting keeps the Send row's height.
        row = layout.row(align=True)
        row.scale_y = 1.3
        if waiting:
            pending = waiting[-1]
            elapsed = time.monotonic() - pending.started
            text = f"{pending.stage.capitalize()}, {elapsed:.0f} s"
            if len(waiting) > 1:
                text += f" ({len(waiting)} prompts)"
            if hasattr(row, "progress"):          # Blender ≥ 4.0: an indeterminate spinning ring
                row.progress(factor=(elapsed % 1.0), type="RING", text=text)
            else:
                row.label(text=text, icon="SORTTIME")
            row.operator("posegpt.cancel_request", text="", icon="CANCEL").armature = obj.name
            row.operator("posegpt.send_prompt", text="", icon="PLAY").armature = obj.name
        else:
            row.operator("posegpt.send_prompt", icon="PLAY").armature = obj.name
            row.operator("posegpt.reset_chat", text="", icon="TRASH").armature = obj.name

    def _draw_history(self, layout, context, obj):
        """Newest turn first; each turn folded to its prompt, its reply's buttons or its error's first
        sentence; the triangle unfolds the whole text."""
        messages = obj.posegpt_chat.messages
        groups = turns([m.role for m in messages])
        if not groups:
            layout.label(text="Describe a pose and press Send", icon="INFO")
            return
        hidden = max(0, len(groups) - MAX_TURNS_SHOWN)
        for group in reversed(groups[hidden:]):
            self._draw_turn(layout, context, obj, messages, group)
        if hidden:
            layout.label(text=f"{hidden} earlier turns not shown")

    def _draw_turn(self, layout, context, obj, messages, group):
        conn = session.connection()
        pose_token = (conn.model_card.get("pose_token") if conn is not None else None) or "<POSE>"
        frame = context.scene.frame_current
        box = layout.box()
        head = messages[group[0]]
        expanded = head.expanded
        row = box.row(align=True)
        row.prop(head, "expanded", text="", icon="TRIA_DOWN" if expanded else "TRIA_RIGHT", emboss=False)
        answers = group[1:] if head.role == "user" else group
        # The turn's label: its prompt, with the stick figure of the pose it got (the last one, if several).
        posed = [messages[i].pose_json for i in answers if messages[i].role == "assistant" and messages[i].pose_json]
        figure = pose_icon_id(posed[-1]) if posed and not session.icon_waits(posed[-1]) else 0
        icon = {"icon_value": figure} if figure else {"icon": "IMAGE_DATA" if head.image else "USER"}
        if head.role == "user":
            row.label(text=_one_line(head.text, context, indent=6), **icon)
            if expanded:
                _wrapped_labels(box, context, head.text)
                if head.image is not None:
                    box.label(text=head.image.name, icon="IMAGE_DATA")
        if head.role != "user":
            row.label(text=_one_line(head.prompt or "(earlier chat)", context, indent=6), **icon)
        for index in answers:
            message = messages[index]
            if message.role == "assistant":
                text = display_text(message.text, pose_token)
                if expanded or text not in GENERIC_REPLIES:
                    if expanded:
                        _wrapped_labels(box, context, text)
                    else:
                        box.label(text=_one_line(text, context), icon="ARMATURE_DATA")
                if message.pose_json:
                    buttons = box.row(align=True)
                    apply = buttons.operator("posegpt.apply_pose", icon="POSE_HLT")
                    apply.armature, apply.index = obj.name, index
                    keyed = message.keyed_frame >= 0
                    key = buttons.operator("posegpt.key_pose", text=f"Key at {frame}",
                                           icon="DECORATE_KEYFRAME" if keyed else "KEY_HLT")
                    key.armature, key.index = obj.name, index
                    asset = buttons.operator("posegpt.add_pose_asset", text="", icon="ASSET_MANAGER")
                    asset.armature, asset.index = obj.name, index
                    if keyed and expanded:
                        box.label(text=f"Keyed at frame {message.keyed_frame}", icon="DECORATE_KEYFRAME")
            elif message.role == "error":
                column = box.column(align=True)
                column.alert = True
                if expanded:
                    _wrapped_labels(column, context, message.text)
                else:
                    _wrapped_labels(column, context, first_sentence(message.text))
            elif message.role == "note":
                box.label(text=_one_line(message.text, context), icon="INFO")
            else:                                  # a second prompt without answer (older chats)
                box.label(text=_one_line(message.text, context), icon="USER")


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
    bl_label = "Pose File"
    bl_parent_id = "POSEGPT_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        row = self.layout.row(align=True)
        row.operator("posegpt.export_pose", icon="EXPORT")
        row.operator("posegpt.import_pose", icon="IMPORT")


classes = (POSEGPT_PT_main, POSEGPT_PT_body, POSEGPT_PT_chat, POSEGPT_PT_options, POSEGPT_PT_pose_file)
