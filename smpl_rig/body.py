"""Body models behind one interface: the user's own SMPL file, or the licence-free mannequin.

``load(source)`` is the public entry point; ``Body`` is what every consumer (Blender armature, metrics,
renderer) reads. Shapes are part of the contract and asserted by the tests.

    body = load("mannequin")                       # bundled, derived from mannequin-x (Apache-2.0)
    body = load("~/models/SMPL_NEUTRAL.pkl", betas=[1.0, -0.5])
    vertices, joints = body.pose(rotmats)          # (V, 3), (24, 3)

Posing is SMPL's linear blend skinning: shape blendshapes (already in ``vertices``), pose-corrective
blendshapes driven by ``pose_corrective_features``, then skinning with
``smpl_rig.kinematics.forward_kinematics(...).skinning``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arrays import like
from .kinematics import forward_kinematics
from .mannequin import read_mannequin
from .skeleton import NUM_JOINTS
from .smpl_file import BodyModelError, read_smpl_model

__all__ = ["Body", "BodyModelError", "GENDERS", "NUM_POSE_FEATURES", "load", "pose_corrective_features"]

GENDERS = ("neutral", "male", "female")
NUM_POSE_FEATURES = 9 * (NUM_JOINTS - 1)  # (R_i − I) for joints 1..23, row-major: 207


def pose_corrective_features(rotmats):
    """SMPL's pose-corrective blendshape weights: (R_i − I) flattened row-major for joints 1..23.

    rotmats: (..., 24, 3, 3) local joint rotations (numpy array or torch tensor).
    Returns (..., 207), same array type and dtype. Joint 0 (global orientation) does not contribute.
    """
    if tuple(rotmats.shape[-3:]) != (NUM_JOINTS, 3, 3):
        raise ValueError(f"expected rotations (..., 24, 3, 3), got {tuple(rotmats.shape)}")
    body = rotmats[..., 1:, :, :]                                          # (..., 23, 3, 3)
    identity = like(np.eye(3), rotmats)
    return (body - identity).reshape(*body.shape[:-3], NUM_POSE_FEATURES)


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

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_betas(self) -> int:
        """How many shape coefficients the body accepts (0 for the mannequin)."""
        return 0 if self.shapedirs is None else int(self.shapedirs.shape[2])

    def shaped(self, betas) -> "Body":
        """A copy of this body with shape coefficients ``betas`` (B' ≤ B; missing ones are zero).

        vertices = template + shapedirs · betas, rest_joints = joint_regressor @ vertices.
        """
        betas = np.asarray(betas, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(betas)):
            raise ValueError("betas contain NaN or infinity")
        if self.shapedirs is None or self.template_vertices is None or self.joint_regressor is None:
            if np.any(betas != 0):
                raise BodyModelError(f"the {self.kind} body {self.name!r} has no shape space; "
                                     f"betas need an SMPL model file")
            return self
        if betas.shape[0] > self.num_betas:
            raise ValueError(f"{betas.shape[0]} betas given but {self.name!r} has {self.num_betas} shape directions")
        full = np.zeros(self.num_betas)
        full[:betas.shape[0]] = betas
        vertices = self.template_vertices + self.shapedirs @ full                 # (V, 3)
        return dataclasses.replace(self, vertices=vertices, rest_joints=self.joint_regressor @ vertices, betas=full)

    def pose(self, rotmats, translation=None, betas=None):
        """Pose the body by SMPL linear blend skinning.

        rotmats:     (..., 24, 3, 3) local joint rotations, joint 0 = global orientation (about the pelvis).
        translation: optional (..., 3), SMPL's ``transl``.
        betas:       optional shape coefficients, overriding the body's own for this call.
        Returns (vertices (..., V, 3), joints (..., 24, 3)), float64.
        """
        body = self if betas is None else self.shaped(betas)
        rotmats = np.asarray(rotmats, dtype=np.float64)
        if rotmats.shape[-3:] != (NUM_JOINTS, 3, 3):
            raise ValueError(f"expected rotations (..., 24, 3, 3), got {rotmats.shape}")
        if not np.all(np.isfinite(rotmats)):
            raise ValueError("rotations contain NaN or infinity")
        if translation is not None:
            translation = np.asarray(translation, dtype=np.float64)
            if translation.shape[-1:] != (3,) or not np.all(np.isfinite(translation)):
                raise ValueError(f"translation must be finite (..., 3), got shape {translation.shape}")

        # 1. Pose-corrective offsets on the shaped rest mesh: (..., V, 3)
        rest = body.vertices
        if body.posedirs is not None:
            rest = rest + np.einsum("vck,...k->...vc", body.posedirs, pose_corrective_features(rotmats))
        # 2. Joint transforms by forward kinematics: skinning (..., 24, 4, 4)
        fk = forward_kinematics(body.rest_joints, rotmats)
        # 3. Blend the 24 skinning transforms per vertex and apply them: (..., V, 4, 4) → (..., V, 3)
        blended = (body.weights @ fk.skinning.reshape(*fk.skinning.shape[:-2], 16)).reshape(
            *fk.skinning.shape[:-3], body.num_vertices, 4, 4)
        vertices = (blended[..., :3, :3] @ rest[..., None])[..., 0] + blended[..., :3, 3]
        joints = fk.joints
        # 4. Translation after skinning, as SMPL does: exact even when weight rows sum to 1 only roughly.
        if translation is not None:
            vertices = vertices + translation[..., None, :]
            joints = joints + translation[..., None, :]
        return vertices, joints


def _infer_gender(name: str) -> str | None:
    """Gender spelled in an SMPL file name (SMPL_FEMALE.pkl, basicModel_m_lbs_…, smpl_neutral.npz)."""
    lower = Path(name).name.lower()
    tokens = set(lower.replace("-", "_").replace(".", "_").split("_"))
    if "female" in lower or "f" in tokens:
        return "female"
    if "male" in lower or "m" in tokens:
        return "male"
    if "neutral" in lower or "n" in tokens:
        return "neutral"
    return None


def _find_in_folder(folder: Path, gender: str) -> Path:
    candidates = sorted(p for p in folder.iterdir()
                        if p.suffix.lower() in (".npz", ".pkl") and _infer_gender(p.name) == gender)
    if not candidates:
        raise BodyModelError(f"no {gender} SMPL model (.npz or .pkl with '{gender}' in its name) in {folder}")
    return min(candidates, key=lambda p: (p.suffix.lower() != ".npz", p.name))  # prefer .npz (no pickle)


def load(source, *, gender: str | None = None, betas=None) -> Body:
    """Load a body model.

    source: "mannequin" (the bundled licence-free body), a path to an SMPL ``.npz``/``.pkl`` file, or a
            folder holding SMPL_NEUTRAL/MALE/FEMALE files (picked by ``gender``).
    gender: "neutral" | "male" | "female"; default: read from the file name, else "neutral".
    betas:  optional shape coefficients (B' ≤ the file's B); applied to the vertices and, through the
            joint regressor, to the rest joints.
    Raises BodyModelError for a file that is not a usable SMPL model, saying what is wrong.
    """
    if gender is not None and gender not in GENDERS:
        raise ValueError(f"gender must be one of {', '.join(GENDERS)}, got {gender!r}")
    if isinstance(source, str) and source == "mannequin":
        if gender not in (None, "neutral"):
            raise BodyModelError(f"the mannequin is gender-neutral; a {gender} body needs an SMPL model file")
        arrays = read_mannequin()
        body = Body(**arrays, template_vertices=arrays["vertices"].copy(), betas=np.zeros(0), gender="neutral",
                    kind="mannequin", name="mannequin")
        return body if betas is None else body.shaped(betas)

    path = Path(source).expanduser()
    if path.is_dir():
        path = _find_in_folder(path, gender or "neutral")
    named = _infer_gender(path.name)
    if gender is not None and named is not None and named != gender:
        raise BodyModelError(f"{path.name} looks like a {named} model but gender={gender!r} was asked for")
    arrays = read_smpl_model(path)
    template = arrays["v_template"]
    body = Body(
        rest_joints=arrays["J_regressor"] @ template,
        vertices=template.copy(),
        faces=arrays["f"],
        weights=arrays["weights"],
        shapedirs=arrays["shapedirs"],
        posedirs=arrays["posedirs"],
        joint_regressor=arrays["J_regressor"],
        template_vertices=template,
        betas=np.zeros(arrays["shapedirs"].shape[2]),
        gender=gender or named or "neutral",
        kind="smpl",
        name=path.stem,
    )
    return body if betas is None else body.shaped(betas)
