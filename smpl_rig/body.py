"""Body models behind one interface: the user's own SMPL file, or the licence-free mannequin.

``load(source)`` is the public entry point; ``Body`` is what every consumer (Blender armature, metrics,
renderer) reads. Shapes are part of the contract and asserted by the tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class BodyModelError(ValueError):
    """A file or array that is not a usable body model (the message says what is wrong)."""


@dataclass
class Body:
    """A skinned body in the SMPL model frame (+Y up, facing +Z, metres).

    rest_joints:   (24, 3) rest (T-pose) joint positions, with ``betas`` applied.
    vertices:      (V, 3) rest mesh vertices, with ``betas`` applied.
    faces:         (F, 3) int32 triangle vertex indices.
    weights:       (V, 24) linear-blend-skinning weights, rows sum to 1.
    shapedirs:     (V, 3, B) shape blendshapes, or None (mannequin).
    posedirs:      (V, 3, 207) pose-corrective blendshapes, or None; driven by (R_i − I) row-major, i = 1..23.
    joint_regressor: (24, V) joints from vertices, or None (mannequin: joints are given).
    template_vertices: (V, 3) mean-shape vertices (before betas).
    betas:         (B,) the shape the rest arrays were built with (zeros for the mean shape).
    gender:        "neutral" | "male" | "female".
    kind:          "smpl" | "mannequin".
    name:          short human-readable name (file stem or "mannequin").
    """
    rest_joints: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    weights: np.ndarray
    shapedirs: np.ndarray | None = None
    posedirs: np.ndarray | None = None
    joint_regressor: np.ndarray | None = None
    template_vertices: np.ndarray | None = None
    betas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gender: str = "neutral"
    kind: str = "mannequin"
    name: str = "body"

    @property
    def height(self) -> float:
        """Rest-pose height along +Y in metres (vertex extent), the scale tolerances are quoted against."""
        return float(self.vertices[:, 1].max() - self.vertices[:, 1].min())

    @property
    def has_pose_correctives(self) -> bool:
        return self.posedirs is not None
