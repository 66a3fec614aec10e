"""The one error class of the model runtime, with stable codes the server forwards to clients."""
from __future__ import annotations

ERROR_CODES = (
    "empty_prompt",        # the prompt is empty or only whitespace
    "prompt_too_long",     # more characters than the model card allows, or more tokens than the context
    "image_required",      # the prompt names an `<image>` placeholder with no image to fill it
    "images_not_supported",  # images given to a text-only backbone
    "unknown_session",     # reset/close of a session id the runtime does not hold
    "bad_model_output",    # the pose head produced NaN/inf
    "cancelled",           # should_stop() said so while decoding
    "bad_checkpoint",      # missing path, missing files, or a manifest the runtime cannot read
    "bad_request",         # a malformed argument (unknown mode, bad temperature, ...)
)


class PoseGPTError(Exception):
    """An error with a stable machine-readable ``code`` (one of ``ERROR_CODES``) and a sentence for people."""

    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown PoseGPTError code {code!r}; expected one of {ERROR_CODES}")
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
