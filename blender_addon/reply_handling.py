"""What the add-on tells the artist: the one error class its operators catch, and advice per error code.

No bpy here. Every failure the add-on reports — from the connection, the server, the artist's input or a
pose file — is an ``AddonError`` carrying a code (a wire/runtime code from ``posegpt_net.wire.ERROR_CODES``
or one of the add-on's own below) and a sentence saying what to do.
"""
from __future__ import annotations

# What to tell the artist for each error code (wire codes, runtime codes and the add-on's own).
# ``{address}`` and ``{timeout}`` are filled in; keep each a sentence that says what to do.
ADVICE = {
    "timeout": "No answer from {address} within {timeout:g} s. Is the backend running? Start it with "
               "`make serve` (or posegpt-serve --checkpoint DIR), or raise the timeout in the preferences.",
    "connection_lost": "The connection to {address} was lost while waiting. Check the server, then send again.",
    "auth_failed": "The server refused this connection: check the server public key and the client key "
                   "pair in the add-on preferences (make keys writes them), or connect without CURVE on loopback.",
    "unsupported_version": "The server speaks another protocol version than this add-on. Update the "
                           "add-on (make addon) or the server so both are from the same release.",
    "bad_protocol": "{address} is not a PoseGPT server (wrong port?). Check the backend address.",
    "online_access": "Blender's online access is off (Preferences > System > Network). Allow it to reach "
                     "{address}, or use a server on this machine (tcp://127.0.0.1:5555).",
    "bad_address": "The backend address must look like tcp://HOST:PORT (for example tcp://127.0.0.1:5555).",
    "bad_keys": "The CURVE keys in the preferences could not be read: give key files from `make keys` "
                "or their 40-character Z85 text, all three or none.",
    "not_connected": "Not connected: press Connect first (the server is started with `make serve`).",
    "empty_prompt": "Type a prompt first.",
    "prompt_too_long": "The prompt is too long for this model: shorten it.",
    "image_required": "This model needs an image: pick an image source other than None.",
    "images_not_supported": "This model reads text only: set the image source to None.",
    "unknown_session": "The server no longer knows this chat (it was restarted): press Reset Chat.",
    "bad_model_output": "The model answered without a usable pose: rephrase the prompt or send it again.",
    "cancelled": "Cancelled.",
    "bad_checkpoint": "The server could not load its model checkpoint: see the server log.",
    "busy": "The server is busy: wait a moment and send again.",
    "not_ready": "The model is still loading on the server: send again in a few seconds.",
    "worker_failed": "The server's model worker failed on this request: see the server log, then send again.",
    "server_shutdown": "The server is shutting down: restart it with `make serve`.",
    "no_armature": "Select an armature PoseGPT can pose (an SMPL body or a humanoid rig), or press Create Body.",
    "bad_image": "Pick another image or image source (PNG, JPEG or WebP).",
    "no_pose": "The reply carried no pose: rephrase the prompt or send it again.",
    "bad_pose": "Pick a chat message that carries a pose, or a pose file written by Export pose.",
    "history_trimmed": "The conversation outgrew the model's context: its oldest turns were dropped.",
}
GENERIC_ADVICE = "See the server log for details."


def advice_for(code: str, *, address: str = "", timeout_s: float = 0.0) -> str:
    """The sentence telling the artist what to do about error ``code``."""
    return ADVICE.get(code, GENERIC_ADVICE).format(address=address or "the server", timeout=timeout_s)


def describe_error(code: str, message: str, *, address: str = "", timeout_s: float = 0.0) -> str:
    """One line for the report and the panel: what went wrong, then what to do."""
    what = message.strip() or code
    return f"{what} — {advice_for(code, address=address, timeout_s=timeout_s)}"


class AddonError(Exception):
    """A failure the artist must act on. ``code``: a wire/runtime/add-on error code; ``text``: what went
    wrong and what to do, ready for ``Operator.report``."""

    def __init__(self, code: str, message: str, *, address: str = "", timeout_s: float = 0.0):
        self.code = code
        self.message = message
        self.text = describe_error(code, message, address=address, timeout_s=timeout_s)
        super().__init__(self.text)

    @classmethod
    def plain(cls, code: str, sentence: str) -> "AddonError":
        """An error whose message already says what to do (a rig's own mapping sentence, say)."""
        error = cls(code, sentence)
        error.text = sentence
        error.args = (sentence,)
        return error
