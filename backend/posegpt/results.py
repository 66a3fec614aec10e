"""What a chat turn returns: the assistant text and one PoseResult per `<POSE>` (contract 3).

Every rotation conversion goes through smpl_rig.rotations; the frame change through smpl_rig.frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from smpl_rig import frames, rotations

from .errors import PoseGPTError


@dataclass
class PoseResult:
    """One predicted pose, 24 SMPL joints, float32 numpy arrays.

    rotmat (24, 3, 3), rotvec (24, 3), d6 (24, 6), quat_wxyz (24, 4): as predicted, joint 0 the global
    orientation in the CAMERA frame (``frame``). rotmat_smpl (24, 3, 3): joint 0 left-multiplied by
    Rx(180°), i.e. in the SMPL model frame (what an armature wants). rotmat_upright (24, 3, 3): joint 0 =
    identity (standing upright, facing the viewer). ``token_index``: position of its `<POSE>` in the reply.
    """

    rotmat: np.ndarray
    rotvec: np.ndarray
    d6: np.ndarray
    quat_wxyz: np.ndarray
    rotmat_smpl: np.ndarray
    rotmat_upright: np.ndarray
    frame: str = "camera"
    token_index: int = -1

    def to_dict(self) -> dict:
        return {"rotmat": self.rotmat, "rotvec": self.rotvec, "d6": self.d6, "quat_wxyz": self.quat_wxyz,
                "rotmat_smpl": self.rotmat_smpl, "rotmat_upright": self.rotmat_upright, "frame": self.frame,
                "token_index": self.token_index}


@dataclass
class ChatResult:
    """``text``: the assistant reply (`<POSE>` kept where it was emitted); ``poses`` in reply order;
    ``timings``: seconds and token counts of this turn; ``token_ids``: the reply's token ids;
    ``history_trimmed``: the oldest whole turns dropped from the session so this one fits the context."""

    text: str
    poses: list[PoseResult]
    timings: dict[str, float]
    session_id: str = ""
    token_ids: list[int] = field(default_factory=list)
    history_trimmed: int = 0


def pose_results(head_d6: torch.Tensor, token_indices: list[int] | None = None) -> list[PoseResult | PoseGPTError]:
    """(N, 24, 6) or (N, 144) raw head outputs → one PoseResult per row, every form computed for all rows at
    once; a row with NaN/inf (or degenerate 6D columns) gets PoseGPTError("bad_model_output") instead."""
    d6 = head_d6.detach().float().cpu().reshape(-1, 24, 6).double()
    finite = torch.isfinite(d6).flatten(1).all(1)
    rotmat = rotations.d6_to_rotmat(torch.where(finite[:, None, None], d6, torch.zeros_like(d6))).numpy()
    good = finite.numpy() & np.isfinite(rotmat).reshape(len(rotmat), -1).all(1)
    rotmat = np.where(good[:, None, None, None], rotmat, np.eye(3))
    smpl = rotmat.copy()
    smpl[:, 0] = frames.camera_to_smpl_orient(rotmat[:, 0])
    upright = rotmat.copy()
    upright[:, 0] = np.eye(3)
    rotvec, quat, d6_clean = (rotations.rotmat_to_rotvec(rotmat), rotations.rotmat_to_quat_wxyz(rotmat),
                              rotations.rotmat_to_d6(rotmat))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    out: list[PoseResult | PoseGPTError] = []
    for n in range(len(rotmat)):
        if not good[n]:
            out.append(PoseGPTError("bad_model_output", "the pose head produced NaN, infinite or degenerate values"))
            continue
        out.append(PoseResult(rotmat=f32(rotmat[n]), rotvec=f32(rotvec[n]), d6=f32(d6_clean[n]),
                              quat_wxyz=f32(quat[n]), rotmat_smpl=f32(smpl[n]), rotmat_upright=f32(upright[n]),
                              token_index=-1 if token_indices is None else int(token_indices[n])))
    return out
