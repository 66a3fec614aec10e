"""Synthetic SMPL-layout model files for tests: random but well-formed, never a real SMPL file.

``write_synthetic_smpl(path, fmt="npz"|"pkl", num_betas=10, seed=0, num_vertices=400)`` writes the
official key layout (v_template, shapedirs, posedirs, J_regressor, weights, kintree_table, f). The body
is human-ish: vertices scattered along the bones of a T-pose skeleton about 1.75 m tall, so heights and
tolerances quoted against them behave as with a real model.

The ``.pkl`` form imitates the original files: a protocol-2 pickle whose v_template and shapedirs are
chumpy ``Ch`` objects (state dict with the array under ``x``) and whose J_regressor is a
``scipy.sparse.csc_matrix`` — written without chumpy or scipy, by naming those classes in the pickle
stream directly (``_FakeClassPickler``), so nothing under those module names is ever created.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from smpl_rig.skeleton import NUM_JOINTS, PARENTS

# Approximate rest joints of a neutral adult in the SMPL frame (+Y up, facing +Z, body left +X), metres.
TPOSE_JOINTS = np.array([
    [0.000, -0.223, 0.028], [0.068, -0.315, 0.015], [-0.069, -0.319, 0.018], [-0.003, -0.115, 0.001],
    [0.103, -0.690, 0.017], [-0.106, -0.694, 0.013], [0.003, 0.024, 0.005], [0.089, -1.088, -0.028],
    [-0.091, -1.092, -0.030], [0.002, 0.080, 0.033], [0.114, -1.143, 0.092], [-0.116, -1.146, 0.095],
    [-0.002, 0.292, -0.017], [0.077, 0.196, -0.002], [-0.080, 0.194, -0.007], [0.005, 0.356, 0.049],
    [0.173, 0.227, -0.016], [-0.175, 0.225, -0.019], [0.432, 0.213, -0.044], [-0.436, 0.215, -0.040],
    [0.681, 0.222, -0.044], [-0.684, 0.219, -0.047], [0.765, 0.214, -0.057], [-0.769, 0.214, -0.060],
])
RING = 8                       # vertices around each joint that the joint regressor averages
_HEAD_TOP, _SOLE = 0.20, 0.06  # the head's crown above the head joint, the sole below the ankles


def synthetic_smpl_arrays(num_betas: int = 10, seed: int = 0, num_vertices: int = 400) -> dict:
    """The arrays of a synthetic SMPL model, official key names and dtypes."""
    if num_vertices < NUM_JOINTS * RING + 2 * NUM_JOINTS:
        raise ValueError(f"num_vertices must be at least {NUM_JOINTS * RING + 2 * NUM_JOINTS}")
    rng = np.random.default_rng(seed)

    # 1. Rings of opposite vertex pairs around every joint: the regressor weights each pair equally,
    #    so the mean-shape regressed joint is exactly TPOSE_JOINTS.
    angles = np.arange(RING) * 2 * np.pi / RING
    ring = 0.03 * np.stack([np.cos(angles), np.sin(angles), 0.5 * (np.cos(angles) - np.sin(angles))], 1)  # odd in θ+π
    ring_vertices = (TPOSE_JOINTS[:, None, :] + ring[None]).reshape(-1, 3)         # (24*RING, 3)
    ring_owner = np.repeat(np.arange(NUM_JOINTS), RING)

    # 2. The rest scattered along each bone (parent → child), around the head and under the feet.
    count = num_vertices - len(ring_vertices)
    owner = rng.integers(1, NUM_JOINTS, count)                                    # the child joint of the bone
    along = rng.uniform(0, 1, (count, 1))
    bone_vertices = TPOSE_JOINTS[np.asarray(PARENTS)[owner]] * (1 - along) + TPOSE_JOINTS[owner] * along
    bone_vertices += rng.normal(scale=0.04, size=(count, 3))
    bone_owner = np.asarray(PARENTS)[owner]                                       # the bone moves with its parent
    head = np.flatnonzero(owner == 15)[:4]
    bone_vertices[head] = TPOSE_JOINTS[15] + [0.0, _HEAD_TOP, 0.0] + rng.normal(scale=0.01, size=(len(head), 3))
    for foot in (10, 11):
        sole = np.flatnonzero(owner == foot)[:2]
        bone_vertices[sole, 1] = TPOSE_JOINTS[foot, 1] - _SOLE
    v_template = np.concatenate([ring_vertices, bone_vertices])                  # (V, 3)
    vertex_owner = np.concatenate([ring_owner, bone_owner])

    # 3. Joint regressor: rows sum to 1, equal weight on opposite ring vertices.
    regressor = np.zeros((NUM_JOINTS, num_vertices))
    for joint in range(NUM_JOINTS):
        pair_weights = rng.dirichlet(np.ones(RING // 2)) / 2
        regressor[joint, joint * RING:(joint + 1) * RING] = np.tile(pair_weights, 2)

    # 4. Skinning weights: mostly the owning joint, some to its parent and one random other; rows sum to 1.
    weights = np.zeros((num_vertices, NUM_JOINTS))
    partners = np.stack([vertex_owner, np.maximum(np.asarray(PARENTS)[vertex_owner], 0),
                         rng.integers(0, NUM_JOINTS, num_vertices)], 1)
    share = rng.dirichlet([8.0, 2.0, 1.0], num_vertices)
    np.add.at(weights, (np.arange(num_vertices)[:, None], partners), share)

    # 5. Blendshapes: the first shape direction scales the body about the pelvis; the rest are small noise.
    shapedirs = rng.normal(scale=0.004, size=(num_vertices, 3, num_betas))
    if num_betas:
        shapedirs[:, :, 0] = 0.03 * (v_template - TPOSE_JOINTS[0])
    posedirs = rng.normal(scale=0.002, size=(num_vertices, 3, 9 * (NUM_JOINTS - 1)))

    # 6. Triangles between vertices of the same owner (a plausible, if crumpled, surface).
    faces = []
    for joint in range(NUM_JOINTS):
        members = np.flatnonzero(vertex_owner == joint)
        for _ in range(2 * len(members)):
            faces.append(rng.choice(members, 3, replace=False))
    kintree = np.array([[2 ** 32 - 1] + list(PARENTS[1:]), list(range(NUM_JOINTS))], dtype=np.int64)
    return {
        "v_template": v_template, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": regressor,
        "weights": weights, "kintree_table": kintree, "f": np.asarray(faces, dtype=np.uint32),
    }


class _FakeCh:
    """Pickles as ``chumpy.ch.Ch`` with chumpy's state layout (the array under ``x``)."""
    pickle_name = ("chumpy.ch", "Ch")

    def __init__(self, x: np.ndarray):
        self.x = x

    def __getstate__(self):
        return {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}}


class _FakeCscMatrix:
    """Pickles as an old ``scipy.sparse.csc.csc_matrix`` (state: _shape, data, indices, indptr, ...)."""
    pickle_name = ("scipy.sparse.csc", "csc_matrix")

    def __init__(self, dense: np.ndarray):
        rows, cols = np.nonzero(dense.T)            # column-major order: columns outer, rows inner
        self.state = {
            "_shape": dense.shape, "maxprint": 50, "format": "csc",
            "data": dense.T[rows, cols].astype(np.float64), "indices": cols.astype(np.int32),
            "indptr": np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[1]))]).astype(np.int32),
        }

    def __getstate__(self):
        return self.state


class _FakeClassPickler(pickle._Pickler):
    """Writes what Python 2's pickler wrote for the original files.

    The fake classes go under their ``pickle_name`` instead of being looked up by import, and at
    protocol 2 text and bytes go out as Python 2 byte strings (BINSTRING), as a Python 2 ``str`` was:
    array buffers included, which Python 3 would otherwise wrap in ``_codecs.encode`` calls.
    """

    def save_global(self, obj, name=None):
        if isinstance(obj, type) and hasattr(obj, "pickle_name"):
            module, qualname = obj.pickle_name
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
            self.memoize(obj)
            return
        super().save_global(obj, name)

    def save_py2_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if self.proto < 2:
            return (pickle._Pickler.save_str if isinstance(obj, str) else pickle._Pickler.save_bytes)(self, obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string


def write_synthetic_smpl(path, fmt: str = "npz", num_betas: int = 10, seed: int = 0, num_vertices: int = 400,
                         pickle_protocol: int = 2) -> Path:
    """Write a synthetic SMPL model file at ``path`` (.npz: plain arrays; .pkl: chumpy/sparse objects)."""
    path = Path(path)
    arrays = synthetic_smpl_arrays(num_betas=num_betas, seed=seed, num_vertices=num_vertices)
    if fmt == "npz":
        with open(path, "wb") as f:      # an open file keeps numpy from appending .npz to other suffixes
            np.savez(f, **arrays)
    elif fmt == "pkl":
        content = dict(arrays)
        content["v_template"] = _FakeCh(arrays["v_template"])
        content["shapedirs"] = _FakeCh(arrays["shapedirs"])
        content["J_regressor"] = _FakeCscMatrix(arrays["J_regressor"])
        content.update(bs_style="lbs", bs_type="lrotmin", J=arrays["J_regressor"] @ arrays["v_template"])
        with open(path, "wb") as f:
            _FakeClassPickler(f, protocol=pickle_protocol).dump(content)
    else:
        raise ValueError(f"fmt must be 'npz' or 'pkl', got {fmt!r}")
    return path
