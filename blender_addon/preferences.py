"""Add-on preferences: where the backend is, how long to wait, CURVE keys, the body model."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from .connection import DEFAULT_ADDRESS, DEFAULT_TIMEOUT_S

ADDON_PACKAGE = __package__


class POSEGPT_AddonPreferences(bpy.types.AddonPreferences):
    """PoseGPT connection and body settings."""
    bl_idname = ADDON_PACKAGE

    address: StringProperty(
        name="Backend address", description="ZeroMQ address of posegpt-serve (make serve listens on loopback)",
        default=DEFAULT_ADDRESS)
    timeout_s: FloatProperty(
        name="Timeout", description="Seconds to wait for the server before reporting it unreachable",
        default=DEFAULT_TIMEOUT_S, min=0.5, soft_max=600.0, unit="TIME_ABSOLUTE")
    server_public_key: StringProperty(
        name="Server public key", description="CURVE public key of the server: a key file (make keys) or "
        "its 40-character Z85 text; empty for an unencrypted loopback connection", default="")
    client_public_key: StringProperty(
        name="Client public key", description="This machine's CURVE public key: key file or Z85 text",
        default="")
    client_secret_key: StringProperty(
        name="Client secret key", description="This machine's CURVE secret key: key file or Z85 text",
        default="", subtype="PASSWORD")
    smpl_model_path: StringProperty(
        name="SMPL model file", description="Your own SMPL .npz/.pkl (MPI licence); empty uses the "
        "licence-free mannequin", default="", subtype="FILE_PATH")
    default_gender: EnumProperty(
        name="Default gender", description="Gender used when creating a body from an SMPL file",
        items=(("neutral", "Neutral", "Gender-neutral model"), ("female", "Female", "Female model"),
               ("male", "Male", "Male model")), default="neutral")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "address")
        layout.prop(self, "timeout_s")
        box = layout.box()
        box.label(text="Encryption (CURVE) for remote servers", icon="LOCKED")
        box.prop(self, "server_public_key")
        box.prop(self, "client_public_key")
        box.prop(self, "client_secret_key")
        layout.prop(self, "smpl_model_path")
        layout.prop(self, "default_gender")


class PreferenceDefaults:
    """The preferences' defaults, for when the add-on runs registered but not enabled by name
    (e.g. tests calling ``register()`` directly): same names as ``POSEGPT_AddonPreferences``."""
    address = DEFAULT_ADDRESS
    timeout_s = DEFAULT_TIMEOUT_S
    server_public_key = ""
    client_public_key = ""
    client_secret_key = ""
    smpl_model_path = ""
    default_gender = "neutral"


def get_preferences(context=None):
    """The add-on's preferences, or ``PreferenceDefaults`` when the add-on is not enabled by name."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None and addon.preferences is not None else PreferenceDefaults()


classes = (POSEGPT_AddonPreferences,)
