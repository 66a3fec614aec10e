"""The project's own pose corpus: procedural poses, captions, speculative prompts, renders, fixed splits.

- ``generator``: ``PoseGenerator(seed).sample(family=None, arms=None, legs=None)`` → ``GeneratedPose``.
- ``captioner``: ``caption(rotmats, rng)`` / ``captions(rotmats, rng, count)`` from joint geometry.
- ``captioner_everyday``: the second voice — the same facts as short prompts and everyday sentences.
- ``edits``: ``edit_pose(rotvec, rng, kind)`` → ``Edit`` ("now raise the left arm"), for edit turns.
- ``speculative``: ``SITUATIONS`` (situation → pose family + phrasings), ``prompt(name, rng)``.
- ``render``: ``render_pose(rotmats, view_yaw_deg, view_pitch_deg, size, body)`` → ``Render``.
- ``splits``: ``assign_splits(n, seed)``.
- ``build``: ``python -m training.corpus.build --out DIR --n 20000 --seed 0 [--images N]``;
  ``load_corpus(directory, split, kind=None)`` → list of ``CorpusSample``.
- ``outside_writer`` (evaluation only, never trained on): a writer with its own words, a paraphraser and
  the hand-typed ``outside_prompts.jsonl`` with recipe targets, for ``bench/bench_demo.py``.

The names below are imported on first use, so ``python -m training.corpus.build`` does not load its own
module twice.
"""
import importlib

_EXPORTS = {
    "CorpusSample": "build", "build_corpus": "build", "load_corpus": "build",
    "GeneratedPose": "generator", "PoseFamily": "generator", "PoseGenerator": "generator",
    "generate": "generator", "mirror": "generator", "mirror_pose": "generator",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
