"""PoseGPT model runtime: a Hugging Face vision-language backbone + `<POSE>` token + pose head.

Modules (import what you need; this package imports nothing heavy by itself, so
``backend.posegpt.errors`` is usable without torch):
    errors      PoseGPTError(code, message) and the stable codes
    model       PoseGPT (the one model definition, also used by training), add_pose_token, build_pose_head
    checkpoint  save_checkpoint / load_checkpoint of the project checkpoint directory
    runtime     PoseRuntime: sessions, direct and chat modes, batching
    results     ChatResult, PoseResult
    sessions    SessionStore (LRU/TTL-bounded KV caches, histories)
    templates   conversation templates and their tokenisation (encode_conversation for training)
    families    per-backbone image preprocessing, placeholders, position ids
    attention   prompt attention: causal, or block (each user message reads itself whole)
    tiny        tiny offline checkpoints for tests and benchmarks
    convert_published   the published ChatPose checkpoint → project format
"""
