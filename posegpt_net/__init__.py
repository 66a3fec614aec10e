"""PoseGPT networking: the wire format (``posegpt_net.wire``) and the non-blocking client
(``posegpt_net.client``). Pure Python + pyzmq + numpy: the Blender add-on ships this package."""
__all__ = ["wire", "client"]
