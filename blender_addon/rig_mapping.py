"""The artist's own character: which armatures the chat can pose, the joint → bone mapping table, how a
reply is applied (strength, selected bones, hand edits, mirror, floor contact).

Blender glue over ``smpl_rig.blender_retarget`` (the mapping lives on the armature object as its JSON
custom property; this module mirrors it into a 24-row table the panel can edit with bone pickers).
"""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, CollectionProperty, IntProperty, PointerProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from smpl_rig import blender as smpl_blender
from smpl_rig import blender_keys, blender_retarget, rig_names
from smpl_rig.skeleton import JOINT_NAMES

from .reply_handling import AddonError

_STATUS_CACHE: dict = {}


# --- which armature, and can it be posed ----------------------------------------------------------------------

def armature_of(obj):
    """The armature an object stands for: itself, or the armature deforming (or parenting) a mesh."""
    if obj is None:
        return None
    if obj.type == "MESH":
        for modifier in obj.modifiers:
            if modifier.type == "ARMATURE" and modifier.object is not None:
                return modifier.object
        return obj.parent if obj.parent is not None and obj.parent.type == "ARMATURE" else None
    return obj if obj.type == "ARMATURE" else None


def status(obj) -> dict:
    """``blender_retarget.describe`` for the panel, cached per armature, bone count and stored mapping (the
    sidebar redraws often; detecting a mapping scans every bone name)."""
    if obj is None or obj.type != "ARMATURE":
        return blender_retarget.describe(obj)
    key = (obj.name, len(obj.data.bones), obj.get(blender_retarget.MAPPING_PROPERTY, ""),
           smpl_blender.is_smpl_armature(obj))
    cached = _STATUS_CACHE.get(obj.name)
    if cached is None or cached[0] != key:
        info = blender_retarget.describe(obj)
        info["smpl"] = key[3]
        cached = _STATUS_CACHE[obj.name] = (key, info)
    return cached[1]


def is_poseable(obj) -> bool:
    return obj is not None and status(obj)["problem"] is None


# --- applying and keying a reply --------------------------------------------------------------------------------

def apply_options(settings) -> blender_retarget.ApplyOptions:
    return blender_retarget.ApplyOptions(strength=settings.apply_strength, only_selected=settings.only_selected,
                                         keep_changed=settings.keep_changed, mirror=settings.mirror,
                                         floor_contact=settings.floor_contact)


def apply_pose(context, obj, pose) -> None:
    """Pose ``obj`` (any poseable armature) with an SMPL-frame pose (24, 3, 3) as the panel's options say."""
    settings = context.scene.posegpt
    try:
        blender_retarget.apply_pose(obj, pose, options=apply_options(settings),
                                    global_orient=settings.orientation.lower())
    except ValueError as exc:  # smpl_rig's sentence on why this rig or pose cannot be applied
        raise AddonError.plain("bad_pose", str(exc)) from None
    if smpl_blender.is_smpl_armature(obj):
        smpl_blender.update_pose_correctives(obj)


def key_pose(obj, frame) -> None:
    try:
        blender_keys.key_pose(obj, frame)
    except ValueError as exc:
        raise AddonError.plain("bad_pose", str(exc)) from None


# --- the mapping table ------------------------------------------------------------------------------------------

def _write_table_to_armature(obj) -> None:
    """The table's rows → the mapping stored on the armature (keeping Rigify's extras when bones are kept)."""
    table = obj.posegpt_rig.rows
    base = blender_retarget.rig_mapping(obj)
    joints = {row.joint: row.bone for row in table if row.bone}
    same = joints == base.joints
    mapping = rig_names.RigMapping(joints=joints, measure=base.measure if same else {},
                                   root=base.root if same else None,
                                  reset=base.reset if same else (), switches=base.switches if same else (),
                                  convention=base.convention if same else "manual")
    blender_retarget.store_mapping(obj, mapping)


def _row_changed(self, context):
    obj = self.id_data
    if obj is not None and not obj.posegpt_rig.syncing:
        _write_table_to_armature(obj)


def fill_table(obj, mapping: rig_names.RigMapping | None = None) -> None:
    """Show ``mapping`` (default: the armature's) in its 24-row table."""
    mapping = mapping or blender_retarget.rig_mapping(obj)
    rig = obj.posegpt_rig
    rig.syncing = True
    try:
        rig.rows.clear()
        for joint in JOINT_NAMES:
            row = rig.rows.add()
            row.joint = joint
            row.bone = mapping.joints.get(joint, "")
    finally:
        rig.syncing = False


class POSEGPT_PG_joint_bone(bpy.types.PropertyGroup):
    """One row of the mapping table: an SMPL joint and the bone that stands for it."""
    joint: StringProperty(name="Joint", description="SMPL joint name", default="")
    bone: StringProperty(name="Bone", description="The armature's bone for this joint (empty: not mapped)",
                         default="", update=_row_changed)


class POSEGPT_PG_rig(bpy.types.PropertyGroup):
    """The joint → bone table of one armature, as the panel edits it."""
    rows: CollectionProperty(name="Mapping", description="One row per SMPL joint", type=POSEGPT_PG_joint_bone)
    syncing: BoolProperty(name="Syncing", description="Set while the table is filled from the mapping",
                          default=False)


def _target(operator, context):
    obj = bpy.data.objects.get(operator.armature) if operator.armature else armature_of(context.active_object)
    if obj is None or obj.type != "ARMATURE":
        raise ValueError("select an armature first")
    return obj


class POSEGPT_OT_detect_mapping(bpy.types.Operator):
    """Match the armature's bones to the 24 SMPL joints by name (SMPL, Rigify, Mixamo, VRM, Unreal, Auto-Rig Pro)"""
    bl_idname = "posegpt.detect_mapping"
    bl_label = "Detect"
    bl_options = {"REGISTER", "UNDO"}

    armature: StringProperty(name="Armature", description="Armature to map (empty: the active one)", default="",
                             options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            obj = _target(self, context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if blender_retarget.MAPPING_PROPERTY in obj:
            del obj[blender_retarget.MAPPING_PROPERTY]
        mapping = rig_names.detect_mapping([b.name for b in obj.data.bones])
        if rig_names.mapping_problem(mapping) is None:
            blender_retarget.store_mapping(obj, mapping)
        fill_table(obj, mapping)
        self.report({"INFO"}, f"{mapping.mapped_count} of 24 joints mapped ({mapping.convention} names)")
        return {"FINISHED"}


class POSEGPT_OT_clear_mapping(bpy.types.Operator):
    """Empty the mapping table (then pick a bone for each joint)"""
    bl_idname = "posegpt.clear_mapping"
    bl_label = "Clear"
    bl_options = {"REGISTER", "UNDO"}

    armature: StringProperty(name="Armature", description="Armature to clear (empty: the active one)", default="",
                             options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            obj = _target(self, context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        fill_table(obj, rig_names.RigMapping())
        blender_retarget.store_mapping(obj, rig_names.RigMapping())
        return {"FINISHED"}


class POSEGPT_OT_mirror_mapping(bpy.types.Operator):
    """Fill each unmapped left or right joint with the mirror-named bone of its mapped partner"""
    bl_idname = "posegpt.mirror_mapping"
    bl_label = "Mirror Fill"
    bl_options = {"REGISTER", "UNDO"}

    armature: StringProperty(name="Armature", description="Armature to complete (empty: the active one)",
                             default="", options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            obj = _target(self, context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        mapping = rig_names.mirror_fill(blender_retarget.rig_mapping(obj), [b.name for b in obj.data.bones])
        blender_retarget.store_mapping(obj, mapping)
        fill_table(obj, mapping)
        return {"FINISHED"}


class POSEGPT_OT_save_mapping(bpy.types.Operator, ExportHelper):
    """Save this armature's joint → bone mapping as a JSON preset"""
    bl_idname = "posegpt.save_mapping"
    bl_label = "Save Preset"

    filename_ext = ".json"
    filter_glob: StringProperty(name="Filter", description="Mapping presets shown in the browser",
                                default="*.json", options={"HIDDEN"})
    armature: StringProperty(name="Armature", description="Armature whose mapping to save (empty: the active one)",
                             default="", options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            obj = _target(self, context)
            blender_retarget.save_preset(self.filepath, blender_retarget.rig_mapping(obj))
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class POSEGPT_OT_load_mapping(bpy.types.Operator, ImportHelper):
    """Use a saved JSON mapping preset for this armature"""
    bl_idname = "posegpt.load_mapping"
    bl_label = "Load Preset"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(name="Filter", description="Mapping presets shown in the browser",
                                default="*.json", options={"HIDDEN"})
    armature: StringProperty(name="Armature", description="Armature to map (empty: the active one)", default="",
                             options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            obj = _target(self, context)
            mapping = blender_retarget.load_preset(self.filepath)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        blender_retarget.store_mapping(obj, mapping)
        fill_table(obj, mapping)
        problem = blender_retarget.retarget_problem(obj)
        if problem:
            self.report({"WARNING"}, problem)
        return {"FINISHED"}


class POSEGPT_OT_add_pose_asset(bpy.types.Operator):
    """Pose the armature with this reply and add the pose to the Pose Library (an action marked as an asset)"""
    bl_idname = "posegpt.add_pose_asset"
    bl_label = "Add to Pose Library"
    bl_options = {"REGISTER", "UNDO"}

    armature: StringProperty(name="Armature", description="Armature to pose (empty: the active one)", default="",
                             options={"SKIP_SAVE"})
    index: IntProperty(name="Message", description="Index of the chat message whose pose to add",
                       default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        from .chat_state import PoseFormatError, pose_from_json
        obj = bpy.data.objects.get(self.armature) if self.armature else armature_of(context.active_object)
        messages = obj.posegpt_chat.messages if obj is not None else ()
        if obj is None or not 0 <= self.index < len(messages) or not messages[self.index].pose_json:
            self.report({"ERROR"}, "Pick a reply that carries a pose")
            return {"CANCELLED"}
        prompt = next((messages[k].text for k in range(self.index - 1, -1, -1) if messages[k].role == "user"), "")
        name = f"PoseGPT: {prompt[:48]}" if prompt else "PoseGPT pose"
        try:
            apply_pose(context, obj, pose_from_json(messages[self.index].pose_json))
            action = blender_keys.add_pose_asset(obj, name)
        except (PoseFormatError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Added {action.name!r} to the Pose Library (this file's assets)")
        return {"FINISHED"}


class POSEGPT_PT_mapping(bpy.types.Panel):
    """Which bone of your armature stands for each of the 24 SMPL joints"""
    bl_idname = "POSEGPT_PT_mapping"
    bl_label = "Mapping"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PoseGPT"
    bl_parent_id = "POSEGPT_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context):
        obj = armature_of(context.active_object)
        return obj is not None and not smpl_blender.is_smpl_armature(obj)

    def draw(self, context):
        layout = self.layout
        obj = armature_of(context.active_object)
        row = layout.row(align=True)
        row.operator("posegpt.detect_mapping", icon="VIEWZOOM").armature = obj.name
        row.operator("posegpt.mirror_mapping", icon="MOD_MIRROR").armature = obj.name
        row.operator("posegpt.clear_mapping", icon="X").armature = obj.name
        row = layout.row(align=True)
        row.operator("posegpt.save_mapping", icon="EXPORT").armature = obj.name
        row.operator("posegpt.load_mapping", icon="IMPORT").armature = obj.name
        rows = obj.posegpt_rig.rows
        if len(rows) != len(JOINT_NAMES):
            layout.label(text="Press Detect to show the table", icon="INFO")
            return
        column = layout.column(align=True)
        for row_data in rows:
            split = column.split(factor=0.4, align=True)
            split.label(text=row_data.joint)
            split.prop_search(row_data, "bone", obj.data, "bones", text="")


property_classes = (POSEGPT_PG_joint_bone, POSEGPT_PG_rig)
operator_classes = (POSEGPT_OT_detect_mapping, POSEGPT_OT_clear_mapping, POSEGPT_OT_mirror_mapping,
                    POSEGPT_OT_save_mapping, POSEGPT_OT_load_mapping, POSEGPT_OT_add_pose_asset)
panel_classes = (POSEGPT_PT_mapping,)
classes = property_classes + operator_classes + panel_classes


def register_properties():
    bpy.types.Object.posegpt_rig = PointerProperty(
        name="PoseGPT mapping", description="This armature's joint → bone table", type=POSEGPT_PG_rig)


def unregister_properties():
    del bpy.types.Object.posegpt_rig
