"""The one numpy/torch shim of ``smpl_rig``: every function that takes "a numpy array or a torch tensor"
asks this module which library it is holding, instead of testing ``type(x).__module__`` itself.

- ``is_torch(x)``: True for a torch tensor (torch is imported only when one is given).
- ``namespace(x)``: the operations ``smpl_rig`` needs (stack, concat, sqrt, …), for ``x``'s library.
- ``like(const, x)``: a float64 numpy constant in the array type, float dtype and device of ``x``.
- ``to_numpy(x)``: a float64 numpy array (a tensor is detached and copied to the CPU).

numpy is the only hard dependency: the Blender add-on ships ``smpl_rig`` without torch.
"""
from __future__ import annotations

import numpy as np

__all__ = ["is_torch", "namespace", "like", "to_numpy"]


def is_torch(x) -> bool:
    """True when ``x`` is a torch tensor (checked by module name, so numpy-only installs never import torch)."""
    return type(x).__module__.startswith("torch")


class _Numpy:
    stack = staticmethod(lambda xs, axis: np.stack(xs, axis=axis))
    concat = staticmethod(lambda xs, axis: np.concatenate(xs, axis=axis))
    sqrt = staticmethod(np.sqrt)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    arctan2 = staticmethod(np.arctan2)
    where = staticmethod(np.where)
    abs = staticmethod(np.abs)
    norm = staticmethod(lambda x: np.linalg.norm(x, axis=-1, keepdims=True))
    cross = staticmethod(lambda a, b: np.cross(a, b, axis=-1))
    clip = staticmethod(np.clip)
    argmax = staticmethod(lambda x: np.argmax(x, axis=-1))
    take = staticmethod(lambda x, idx: np.take_along_axis(x, idx[..., None, None], axis=-2)[..., 0, :])
    cumprod = staticmethod(lambda x, axis: np.cumprod(x, axis=axis))
    eye_like = staticmethod(lambda x: np.broadcast_to(np.eye(3, dtype=x.dtype), x.shape[:-1] + (3, 3)).copy())
    swap = staticmethod(lambda m: np.swapaxes(m, -1, -2))
    expand = staticmethod(np.broadcast_to)
    isfinite_all = staticmethod(lambda x: bool(np.all(np.isfinite(x))))
    asarray = staticmethod(lambda x: x if isinstance(x, np.ndarray) and x.dtype.kind == "f"
                           else np.asarray(x, dtype=np.float64))


class _Torch:
    def __init__(self):
        import torch
        self.t = torch

    def stack(self, xs, axis):
        return self.t.stack(xs, dim=axis)

    def concat(self, xs, axis):
        return self.t.cat(xs, dim=axis)

    def sqrt(self, x):
        return self.t.sqrt(x)

    def sin(self, x):
        return self.t.sin(x)

    def cos(self, x):
        return self.t.cos(x)

    def arctan2(self, a, b):
        return self.t.atan2(a, b)

    def where(self, c, a, b):
        return self.t.where(c, a, b)

    def abs(self, x):
        return self.t.abs(x)

    def norm(self, x):
        return self.t.linalg.vector_norm(x, dim=-1, keepdim=True)

    def cross(self, a, b):
        return self.t.linalg.cross(a, b, dim=-1)

    def clip(self, x, lo, hi):
        return self.t.clamp(x, lo, hi)

    def argmax(self, x):
        return self.t.argmax(x, dim=-1)

    def take(self, x, idx):
        index = idx[..., None, None].expand(*idx.shape, 1, x.shape[-1])
        return self.t.gather(x, -2, index)[..., 0, :]

    def cumprod(self, x, axis):
        return self.t.cumprod(x, dim=axis)

    def eye_like(self, x):
        return self.t.eye(3, dtype=x.dtype, device=x.device).expand(*x.shape[:-1], 3, 3).clone()

    def swap(self, m):
        return m.transpose(-1, -2)

    def expand(self, x, shape):
        return x.expand(*shape)

    def isfinite_all(self, x):
        return bool(self.t.isfinite(x).all())

    def asarray(self, x):
        return x if x.is_floating_point() else x.double()


_NUMPY = _Numpy()
_TORCH = None


def namespace(x):
    """The array operations for ``x``'s library (numpy's, or torch's when ``x`` is a tensor)."""
    global _TORCH
    if is_torch(x):
        if _TORCH is None:
            _TORCH = _Torch()
        return _TORCH
    return _NUMPY


def like(const: np.ndarray, x):
    """The numpy constant ``const`` in the array type, dtype and device of ``x`` (float64 when ``x`` is
    not floating point)."""
    if is_torch(x):
        import torch
        return torch.as_tensor(const, dtype=x.dtype if x.is_floating_point() else torch.float64, device=x.device)
    dtype = np.asarray(x).dtype
    return np.asarray(const).astype(dtype if dtype.kind == "f" else np.float64)


def to_numpy(x) -> np.ndarray:
    """``x`` as a float64 numpy array; a torch tensor is detached and copied to the CPU first."""
    if is_torch(x):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
