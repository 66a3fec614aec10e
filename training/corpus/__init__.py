"""The project's own pose corpus: procedural poses, captions, speculative prompts, renders, fixed splits.

- ``generator``: ``PoseGenerator(seed).sample(family=None, arms=None, legs=None)`` → ``GeneratedPose``.
- ``captioner``: ``caption(rotmats, rng)`` / ``captions(rotmats, rng, count)`` from joint geometry.
- ``speculative``: ``SITUATIONS`` (situation → pose family + phrasings), ``prompt(name, rng)``.
- ``render``: ``render_pose(rotmats, view_yaw_deg, view_pitch_deg, size, body)`` → ``Render``.
- ``splits``: ``assign_splits(n, seed)``.
- ``build``: ``python -m training.corpus.build --out DIR --n 20000 --seed 0 [--images N]``;
  ``load_corpus(directory, split, kind=None)`` → list of ``CorpusSample``.
"""
from .build import CorpusSample, build_corpus, load_corpus  # noqa: F401
from .generator import GeneratedPose, PoseFamily, PoseGenerator, generate, mirror, mirror_pose  # noqa: F401

__all__ = ["CorpusSample", "build_corpus", "load_corpus", "GeneratedPose", "PoseFamily", "PoseGenerator",
           "generate", "mirror", "mirror_pose"]
