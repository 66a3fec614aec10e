"""Operators: thin glue that gathers settings, calls smpl_rig / the connection, and reports failures."""
from __future__ import annotations

import os
import time

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import capture, rig_mapping, session
from .chat_state import PoseFormatError, pose_from_json
from .connection import new_session_id
from .pose_files import load_pose, save_pose
from .preferences import get_preferences
from .reply_handling import AddonError


def smpl_blender():
    """``smpl_rig.blender`` (imported on use: it needs bpy, and the add-on's core must import without)."""
    from smpl_rig import blender
    return blender


def target_armature(context):
    """The armature the panel works on: the active object, or the armature of its body mesh, when it is an
    SMPL armature or any humanoid rig with a usable joint mapping (``rig_mapping``)."""
    obj = rig_mapping.armature_of(context.active_object)
    return obj if rig_mapping.is_poseable(obj) else None


def _armature_by_name(operator, context):
    obj = bpy.data.objects.get(operator.armature) if operator.armature else target_armature(context)
    if obj is not None and obj.type == "ARMATURE" and not rig_mapping.is_poseable(obj):
        raise AddonError.plain("no_armature", rig_mapping.status(obj)["problem"])  # the rig's own sentence
    if obj is None or not rig_mapping.is_poseable(obj):
        raise AddonError("no_armature", f"{operator.armature or 'the active object'} is not an armature")
    return obj


def _message_pose(obj, index: int):
    messages = obj.posegpt_chat.messages
    if not 0 <= index < len(messages) or not messages[index].pose_json:
        raise AddonError("bad_pose", f"message {index} of {obj.name}'s chat carries no pose")
    try:
        return pose_from_json(messages[index].pose_json)
    except PoseFormatError as exc:
        raise AddonError("bad_pose", str(exc)) from None


def _read_pose_file(path):
    try:
        return load_pose(path)
    except (ValueError, OSError) as exc:
        raise AddonError("bad_pose", f"cannot read {path!r}: {exc}") from None


def _write_pose_file(path, rotmats) -> None:
    try:
        save_pose(path, rotmats)
    except (ValueError, OSError) as exc:
        raise AddonError("bad_pose", f"cannot write {path!r}: {exc}") from None


class POSEGPT_OT_connect(bpy.types.Operator):
    """Connect to the PoseGPT backend set in the add-on preferences"""
    bl_idname = "posegpt.connect"
    bl_label = "Connect"

    def execute(self, context):
        try:
            session.connect(context)
        except AddonError as exc:
            session.fail(exc.text)
            self.report({"ERROR"}, exc.text)
            return {"CANCELLED"}
        return {"FINISHED"}


class POSEGPT_OT_disconnect(bpy.types.Operator):
    """Close the connection to the backend (requests in flight are dropped)"""
    bl_idname = "posegpt.disconnect"
    bl_label = "Disconnect"

    def execute(self, context):
        session.disconnect()
        return {"FINISHED"}


class POSEGPT_OT_create_body(bpy.types.Operator):
    """Create an SMPL body: from your SMPL model file if one is set in the preferences, else the mannequin"""
    bl_idname = "posegpt.create_body"
    bl_label = "Create Body"
    bl_options = {"REGISTER", "UNDO"}

    name: StringProperty(name="Name", description="Name of the new armature", default="SMPL")

    def execute(self, context):
        from smpl_rig import body as body_models
        prefs = get_preferences(context)
        source = bpy.path.abspath(prefs.smpl_model_path) if prefs.smpl_model_path else "mannequin"
        try:
            body = body_models.load(source, gender=prefs.default_gender if source != "mannequin" else None)
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, f"Could not load the body model {source!r}: {exc}. Fix the SMPL model "
                        "file in the add-on preferences, or clear it to use the mannequin.")
            return {"CANCELLED"}
        if context.mode != "OBJECT" and bpy.ops.object.mode_set.poll():
            bpy.ops.object.mode_set(mode="OBJECT")
        obj = smpl_blender().build_armature(body, name=self.name)
        for other in context.view_layer.objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        return {"FINISHED"}


class POSEGPT_OT_send_prompt(bpy.types.Operator):
    """Send the prompt (and the chosen image) to PoseGPT; the reply poses the selected armature"""
    bl_idname = "posegpt.send_prompt"
    bl_label = "Send"
    # Not registered (no REGISTER, no UNDO): a registered operator run from a button updates the 3D View's
    # "Adjust Last Operation" panel, and that redraws the whole 3D View right when the reply is due.
    bl_options = set()

    armature: StringProperty(name="Armature", description="Armature to pose (empty: the active one)",
                             default="", options={"SKIP_SAVE"})

    def execute(self, context):
        # Nothing is written to the .blend here: a property write makes Blender redraw the whole window
        # and re-evaluate the armature, which on a slow display costs more than the server's answer. The
        # turn waits in the connection (the panel draws it from there); the prompt, its image and the
        # reply go into the chat together when the reply lands (session._on_result).
        settings = context.scene.posegpt
        prompt = settings.prompt.strip()
        obj = None
        try:
            obj = _armature_by_name(self, context)
            if not prompt:
                raise AddonError("empty_prompt", "the prompt is empty")
            if session.already_sent(obj.name, prompt):
                return {"FINISHED"}                   # Return in the field sent it; this is the click after
            conn = session.ensure_connection(context)
            if settings.image_source != "NONE" and conn.model_card.get("accepts_images") is False:
                raise AddonError("images_not_supported", "this model does not read images")
            chat = obj.posegpt_chat
            if not chat.session_id:
                chat.session_id = new_session_id()
            if settings.image_source == "CAMERA" and context.window is not None and not bpy.app.background:
                # in the window the render runs as Blender's render job; the prompt goes out when it is done
                if session.render_for(obj.name) is not None:
                    raise AddonError("busy", "a camera render for this armature is still running")
                job = capture.CameraRenderJob(context, obj.name, prompt)
                session.begin_render(job, obj.name, chat.session_id, settings.mode)
                session.note_send(obj.name, prompt)
                session.redraw_sidebar()
                return {"FINISHED"}
            images, image, image_path = capture.gather_image(context, conn.model_card.get("image_size"))
            conn.send_chat(obj.name, chat.session_id, prompt, images, mode=settings.mode,
                           image=image.name if image is not None else "", image_path=image_path)
            session.note_send(obj.name, prompt)
        except AddonError as exc:
            session.fail(exc.text)
            if obj is not None and prompt:            # the failed prompt and why, as an entry in its chat
                session.add_message(obj.posegpt_chat, "user", prompt)
                session.add_message(obj.posegpt_chat, "error", exc.text, prompt=prompt)
            self.report({"ERROR"}, exc.text)
            return {"CANCELLED"}
        # No redraw here: the timer draws the waiting row once the prompt has been out a moment
        # (session.WAITING_ROW_AFTER_S), so a fast reply's pose is the next thing the window draws.
        session.start_timer()
        return {"FINISHED"}


RETURN_KEYS = frozenset({"RET", "NUMPAD_ENTER"})


def send_if_return(event_type: str) -> set:
    """Send the prompt when its field's edit ended with Return; any other key or click keeps the text."""
    if event_type in RETURN_KEYS and bpy.ops.posegpt.send_prompt.poll():
        return bpy.ops.posegpt.send_prompt("EXEC_DEFAULT")
    return {"CANCELLED"}


class POSEGPT_OT_prompt_confirmed(bpy.types.Operator):
    """Send the prompt if its field was confirmed with Return (run by the field's update)"""
    bl_idname = "posegpt.prompt_confirmed"
    bl_label = "Prompt Confirmed"
    bl_options = {"INTERNAL"}

    def invoke(self, context, event):
        # Invoked from the update with no event of its own, so ``event`` is the window's last one: the key
        # (or click) that ended the text edit.
        return send_if_return(event.type)

    def execute(self, context):
        return {"CANCELLED"}                      # no event (a script): nothing tells it was Return


class POSEGPT_OT_prompt_popup(bpy.types.Operator):
    """Type a prompt in a popup and send it (Ctrl+Return over the 3D View; change it in the keymap)"""
    bl_idname = "posegpt.prompt_popup"
    bl_label = "Pose from Prompt"
    bl_options = set()              # not registered: see POSEGPT_OT_send_prompt

    @classmethod
    def poll(cls, context):
        return target_armature(context) is not None

    def invoke(self, context, event):
        self.opened = time.monotonic()
        return context.window_manager.invoke_props_dialog(self, width=400)

    def draw(self, context):
        settings = context.scene.posegpt
        self.layout.activate_init = True          # the field is ready for typing; Return sends
        self.layout.prop(settings, "prompt", text="", icon="OUTLINER_DATA_GP_LAYER")
        self.layout.prop(settings, "image_source", text="Image")

    def execute(self, context):
        if session.last_send_time() >= getattr(self, "opened", float("inf")):
            return {"FINISHED"}                   # Return in the field already sent it: OK only closes
        return bpy.ops.posegpt.send_prompt("EXEC_DEFAULT")


class POSEGPT_OT_cancel_request(bpy.types.Operator):
    """Stop waiting for the reply to this armature's prompt (the chat notes it was cancelled)"""
    bl_idname = "posegpt.cancel_request"
    bl_label = "Cancel"
    bl_options = set()              # not registered: see POSEGPT_OT_send_prompt

    armature: StringProperty(name="Armature", description="Armature whose requests to cancel (empty: all)",
                             default="", options={"SKIP_SAVE"})

    def execute(self, context):
        for obj in ([bpy.data.objects.get(self.armature)] if self.armature else list(bpy.data.objects)):
            if obj is not None:
                session.cancel_render(obj.name)
        conn = session.connection()
        if conn is None:
            session.redraw_sidebar()
            return {"FINISHED"}
        for pending in list(conn.pending.values()):
            if pending.kind == "chat" and (not self.armature or pending.target == self.armature):
                conn.cancel(pending.request_id)
                obj = bpy.data.objects.get(pending.target)
                if obj is not None:
                    session.write_turn(obj.posegpt_chat, pending, "note", "Cancelled")
        session.redraw_sidebar()
        return {"FINISHED"}


class POSEGPT_OT_reset_chat(bpy.types.Operator):
    """Clear this armature's chat and start a new conversation (the pose stays as it is)"""
    bl_idname = "posegpt.reset_chat"
    bl_label = "Reset Chat"
    bl_options = {"REGISTER", "UNDO"}

    armature: StringProperty(name="Armature", description="Armature whose chat to clear (empty: the active one)",
                             default="", options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            obj = _armature_by_name(self, context)
        except AddonError as exc:
            self.report({"ERROR"}, exc.text)
            return {"CANCELLED"}
        chat = obj.posegpt_chat
        conn = session.connection()
        if conn is not None:
            for pending in conn.chats_for(obj.name):
                conn.cancel(pending.request_id)
            conn.reset_session(chat.session_id)
            session.start_timer()
        chat.messages.clear()
        chat.session_id = new_session_id()
        chat.last_error = ""
        return {"FINISHED"}


class POSEGPT_OT_apply_pose(bpy.types.Operator):
    """Pose the armature with this reply"""
    bl_idname = "posegpt.apply_pose"
    bl_label = "Apply"
    bl_options = {"REGISTER", "UNDO"}

    armature: StringProperty(name="Armature", description="Armature to pose (empty: the active one)",
                             default="", options={"SKIP_SAVE"})
    index: IntProperty(name="Message", description="Index of the chat message whose pose to apply",
                       default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            obj = _armature_by_name(self, context)
            pose = _message_pose(obj, self.index)
            rig_mapping.apply_pose(context, obj, pose)
        except AddonError as exc:
            self.report({"ERROR"}, exc.text)
            return {"CANCELLED"}
        return {"FINISHED"}


class POSEGPT_OT_key_pose(bpy.types.Operator):
    """Pose the armature with this reply and insert a key at the frame"""
    bl_idname = "posegpt.key_pose"
    bl_label = "Key at Frame"
    bl_options = {"REGISTER", "UNDO"}

    armature: StringProperty(name="Armature", description="Armature to pose (empty: the active one)",
                             default="", options={"SKIP_SAVE"})
    index: IntProperty(name="Message", description="Index of the chat message whose pose to key",
                       default=-1, options={"SKIP_SAVE"})
    frame: IntProperty(name="Frame", description="Frame to key at (-1: the current frame)",
                       default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        frame = context.scene.frame_current if self.frame < 0 else self.frame
        try:
            obj = _armature_by_name(self, context)
            pose = _message_pose(obj, self.index)
            rig_mapping.apply_pose(context, obj, pose)
            rig_mapping.key_pose(obj, frame)
        except AddonError as exc:
            self.report({"ERROR"}, exc.text)
            return {"CANCELLED"}
        obj.posegpt_chat.messages[self.index].keyed_frame = frame
        return {"FINISHED"}


class POSEGPT_OT_report_error(bpy.types.Operator):
    """Show a PoseGPT error that arrived between operators (from the network timer)"""
    bl_idname = "posegpt.report_error"
    bl_label = "PoseGPT Error"
    bl_options = {"INTERNAL"}

    message: StringProperty(name="Message", description="The error and what to do about it", default="")

    def execute(self, context):
        self.report({"ERROR"}, self.message)
        return {"FINISHED"}


POSE_FILE_FORMATS = (("NPZ", "SMPL .npz", "global_orient and body_pose arrays (axis-angle)"),
                     ("JSON", "JSON", "The same numbers as readable JSON"))


class POSEGPT_OT_export_pose(bpy.types.Operator, ExportHelper):
    """Save the armature's current pose as SMPL parameters (.npz or .json)"""
    bl_idname = "posegpt.export_pose"
    bl_label = "Export Pose"

    filename_ext = ".npz"
    filter_glob: StringProperty(name="Filter", description="Pose files shown in the browser",
                                default="*.npz;*.json", options={"HIDDEN"})
    file_format: EnumProperty(name="Format", description="File format of the pose", items=POSE_FILE_FORMATS,
                              default="NPZ")
    armature: StringProperty(name="Armature", description="Armature to export (empty: the active one)",
                             default="", options={"SKIP_SAVE"})

    def check(self, context):
        wanted = "." + self.file_format.lower()
        root, ext = os.path.splitext(self.filepath)
        if ext.lower() != wanted:
            self.filepath = root + wanted
            self.filename_ext = wanted
            return True
        return False

    def execute(self, context):
        self.check(context)
        try:
            obj = _armature_by_name(self, context)
            if not smpl_blender().is_smpl_armature(obj):
                raise AddonError.plain("bad_pose", f"{obj.name} is your own rig: pose files are exported from "
                                       "SMPL armatures (press Create Body)")
            _write_pose_file(self.filepath, smpl_blender().read_pose(obj))
        except AddonError as exc:
            self.report({"ERROR"}, exc.text)
            return {"CANCELLED"}
        self.report({"INFO"}, f"Saved the pose of {obj.name} to {self.filepath}")
        return {"FINISHED"}


class POSEGPT_OT_import_pose(bpy.types.Operator, ImportHelper):
    """Pose the armature from an SMPL pose file (.npz or .json)"""
    bl_idname = "posegpt.import_pose"
    bl_label = "Import Pose"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(name="Filter", description="Pose files shown in the browser",
                                default="*.npz;*.json", options={"HIDDEN"})
    armature: StringProperty(name="Armature", description="Armature to pose (empty: the active one)",
                             default="", options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            obj = _armature_by_name(self, context)
            rig_mapping.apply_pose(context, obj, _read_pose_file(self.filepath))
        except AddonError as exc:
            self.report({"ERROR"}, exc.text)
            return {"CANCELLED"}
        return {"FINISHED"}


class POSEGPT_OT_stay_awake(bpy.types.Operator):
    """Keep Blender's event loop from its idle sleep while a fresh request is in flight (session.stay_awake)"""
    bl_idname = "posegpt.stay_awake"
    bl_label = "PoseGPT: Stay Awake"
    bl_options = {"INTERNAL"}

    def invoke(self, context, event):
        if context.window is None or session.is_awake():
            return {"CANCELLED"}
        wm = context.window_manager
        # Due again right after each pass (a step of 0 would never fire again: Blender divides by it).
        session.begin_awake(wm.event_timer_add(1e-6, window=context.window))
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        # Every event of the window reaches this handler first, in a later pass of the event loop than the
        # reply's (so after the pose was drawn): the pose's undo step goes in before the event does
        # anything (session.push_undo_after_draw), and its stick figure is made (session.icon_waits).
        session.after_pose_drawn()
        if not session.is_awake() or (event.type == "TIMER" and not session.wants_awake()):
            session.end_awake()
            return {"FINISHED"}
        return {"PASS_THROUGH"}

    def cancel(self, context):        # called by Blender when it ends the operator (File > Open, quit)
        session.after_pose_drawn()
        session.end_awake()


classes = (POSEGPT_OT_connect, POSEGPT_OT_disconnect, POSEGPT_OT_create_body, POSEGPT_OT_send_prompt,
           POSEGPT_OT_prompt_confirmed, POSEGPT_OT_prompt_popup, POSEGPT_OT_cancel_request, POSEGPT_OT_reset_chat,
           POSEGPT_OT_apply_pose, POSEGPT_OT_key_pose, POSEGPT_OT_report_error, POSEGPT_OT_export_pose, POSEGPT_OT_import_pose,
           POSEGPT_OT_stay_awake)


_keymaps: list = []


def register_keymap() -> None:
    """Ctrl+Return over the 3D View opens the prompt popup (an add-on keymap entry: the artist can change
    it in Preferences > Keymap). Background Blender has no keyconfig: nothing to do there."""
    keyconfig = bpy.context.window_manager.keyconfigs.addon
    if keyconfig is None:
        return
    keymap = keyconfig.keymaps.new(name="3D View", space_type="VIEW_3D")
    item = keymap.keymap_items.new(POSEGPT_OT_prompt_popup.bl_idname, "RET", "PRESS", ctrl=True)
    _keymaps.append((keymap, item))


def unregister_keymap() -> None:
    for keymap, item in _keymaps:
        keymap.keymap_items.remove(item)
    _keymaps.clear()
