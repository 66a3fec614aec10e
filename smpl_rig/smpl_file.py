"""Read the arrays of a user's own SMPL model file (``.npz`` or the original ``.pkl``), safely.

The official ``.pkl`` files were written by Python 2 and pickle chumpy arrays (``chumpy.ch.Ch``) and a
``scipy.sparse.csc_matrix`` joint regressor. Plain ``pickle.load`` would need chumpy installed and would
run whatever a file asks for, so ``SafeUnpickler`` resolves only numpy's array/dtype reconstruction
helpers and maps chumpy and scipy-sparse classes onto tiny local shims; everything else is refused with
a ``BodyModelError``. ``.npz`` files are read with ``allow_pickle=False``; a member that was saved as an
object array (a sparse regressor, typically) goes through the same restricted unpickler.

``read_smpl_arrays(path) -> dict`` returns plain float64/int arrays under the official key names.
"""
from __future__ import annotations

import copyreg
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .skeleton import PARENTS

__all__ = ["BodyModelError", "SMPL_KEYS", "SafeUnpickler", "read_smpl_arrays", "read_smpl_model", "safe_unpickle"]

SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
_MAX_FILE_BYTES = 2 * 1024 ** 3  # a real SMPL file is ~40–250 MB; refuse anything absurd before reading


class BodyModelError(ValueError):
    """A file or array that is not a usable body model (the message says what is wrong)."""


def _numpy_global(name: str):
    # numpy 2 moved numpy.core to numpy._core; pickles written by either name must resolve to the same thing.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, name)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """The one use of ``_codecs.encode`` in array pickles, without letting a file pick any other codec."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1") or not isinstance(text, str):
        raise BodyModelError(f"refusing _codecs.encode with encoding {encoding!r} in a body-model pickle")
    return text.encode("latin1")


class ChumpyShim:
    """Stand-in for any pickled chumpy object: keeps its state; ``.array`` is the stored value ``x``."""

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    @property
    def array(self) -> np.ndarray:
        if "x" not in self.state:
            raise BodyModelError("the file holds a chumpy expression without a stored value ('x'); "
                                 "convert it to plain arrays first")
        return np.asarray(self.state["x"])


class SparseMatrixShim:
    """Stand-in for a pickled ``scipy.sparse`` csc/csr matrix; ``.array`` densifies it with numpy alone.

    Unpickling calls ``__new__`` and ``__setstate__`` only, so the format is a class attribute.
    """
    fmt = "csc"

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    @property
    def array(self) -> np.ndarray:
        try:
            data = np.asarray(self.state["data"], dtype=np.float64)
            indices = np.asarray(self.state["indices"], dtype=np.int64)
            indptr = np.asarray(self.state["indptr"], dtype=np.int64)
            shape = tuple(int(n) for n in self.state.get("_shape", self.state.get("shape")))
        except (KeyError, TypeError, ValueError) as error:
            raise BodyModelError(f"malformed sparse {self.fmt} matrix in the file ({error})") from None
        compressed_axis = 1 if self.fmt == "csc" else 0   # csc: indptr runs over columns, csr: over rows
        if len(shape) != 2 or len(indptr) != shape[compressed_axis] + 1 or len(indices) != len(data):
            raise BodyModelError(f"malformed sparse {self.fmt} matrix in the file (shape {shape}, "
                                 f"{len(indptr)} pointers, {len(indices)} indices, {len(data)} values)")
        if len(indices) and (indices.min() < 0 or indices.max() >= shape[1 - compressed_axis]):
            raise BodyModelError(f"sparse {self.fmt} matrix in the file has out-of-range indices")
        dense = np.zeros(shape)
        outer = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))   # compressed-axis index per value
        if compressed_axis == 1:
            np.add.at(dense, (indices, outer), data)
        else:
            np.add.at(dense, (outer, indices), data)
        return dense


class _CscShim(SparseMatrixShim):
    fmt = "csc"


class _CsrShim(SparseMatrixShim):
    fmt = "csr"


_SPARSE_MODULES = ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr",
                   "scipy.sparse._csr", "scipy.sparse.compressed", "scipy.sparse._compressed")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, chumpy arrays and sparse matrices, and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
        ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
        ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("copy_reg", "_reconstructor"): lambda: copyreg._reconstructor,   # Python 2 name
        ("copyreg", "_reconstructor"): lambda: copyreg._reconstructor,
        # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
        ("_codecs", "encode"): lambda: _latin1_encode,
        ("__builtin__", "object"): lambda: object,
        ("builtins", "object"): lambda: object,
        ("__builtin__", "set"): lambda: set,          # chumpy keeps a set of dirty variables in its state
        ("builtins", "set"): lambda: set,
        ("__builtin__", "frozenset"): lambda: frozenset,
        ("builtins", "frozenset"): lambda: frozenset,
    }

    def find_class(self, module: str, name: str):
        allowed = self._ALLOWED.get((module, name))
        if allowed is not None:
            return allowed()
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyShim
        if module in _SPARSE_MODULES and name in ("csc_matrix", "csr_matrix"):
            return _CscShim if name == "csc_matrix" else _CsrShim
        raise BodyModelError(f"refusing to load {module}.{name} from a body-model pickle: only numpy arrays, "
                             f"chumpy arrays and scipy sparse matrices are allowed")


def safe_unpickle(data: bytes):
    """Unpickle ``data`` with ``SafeUnpickler`` (Python 2 pickles included: byte strings as latin-1)."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except BodyModelError:
        raise
    except Exception as error:  # a truncated or corrupt pickle raises many different types
        raise BodyModelError(f"not a readable pickle ({type(error).__name__}: {error})") from None


def _plain(value, key: str) -> np.ndarray:
    """A shim or array-like → a plain numeric ndarray."""
    if isinstance(value, (ChumpyShim, SparseMatrixShim)):
        value = value.array
    array = np.asarray(value)
    if array.dtype == object and array.shape == ():   # np.savez of a sparse matrix: a 0-d object array
        return _plain(array.item(), key)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise BodyModelError(f"{key!r} is not a numeric array (dtype {array.dtype})")
    return array


def _read_npz(path: Path) -> dict:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:
        raise BodyModelError(f"{path.name} is not a readable .npz file ({error})") from None
    with archive:
        missing = [key for key in SMPL_KEYS if key not in archive.files]
        if missing:
            raise BodyModelError(f"{path.name} is not an SMPL model: missing {', '.join(missing)} "
                                 f"(has {', '.join(archive.files) or 'nothing'})")
        arrays = {}
        for key in SMPL_KEYS:
            try:
                arrays[key] = archive[key]
            except ValueError:  # an object array (pickled member): read it with the restricted unpickler
                arrays[key] = _read_npz_object_member(path, key)
    return arrays


def _read_npz_object_member(path: Path, key: str):
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        read_header(member)
        return safe_unpickle(member.read())


def _read_pkl(path: Path) -> dict:
    content = safe_unpickle(path.read_bytes())
    if not isinstance(content, dict):
        raise BodyModelError(f"{path.name} is not an SMPL model: the pickle holds a {type(content).__name__}, "
                             f"not a dict of arrays")
    missing = [key for key in SMPL_KEYS if key not in content]
    if missing:
        raise BodyModelError(f"{path.name} is not an SMPL model: missing {', '.join(missing)}")
    return {key: content[key] for key in SMPL_KEYS}


def read_smpl_arrays(path) -> dict:
    """The seven SMPL arrays of a model file, as plain numpy arrays (shapes not yet checked).

    Returns a dict with ``v_template`` (V,3), ``shapedirs`` (V,3,B), ``posedirs`` (V,3,207),
    ``J_regressor`` (24,V) dense, ``weights`` (V,24), ``kintree_table`` (2,24), ``f`` (F,3).
    """
    path = Path(path)
    if not path.is_file():
        raise BodyModelError(f"no SMPL model file at {path}")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise BodyModelError(f"{path.name} is {path.stat().st_size / 1e9:.1f} GB; too large for an SMPL model")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        raw = _read_npz(path)
    elif suffix == ".pkl":
        raw = _read_pkl(path)
    else:
        raise BodyModelError(f"{path.name}: expected an SMPL model file ending in .npz or .pkl")
    return {key: _plain(value, key) for key, value in raw.items()}


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise BodyModelError(f"{name} is not a usable SMPL model: {message}")


def read_smpl_model(path) -> dict:
    """``read_smpl_arrays`` plus every check a posable SMPL body needs; float64 arrays, int32 faces.

    Raises BodyModelError naming the array and the shape it has versus the shape it should have.
    """
    name = Path(path).name
    a = read_smpl_arrays(path)
    template = a["v_template"].astype(np.float64)
    _check(template.ndim == 2 and template.shape[1] == 3 and template.shape[0] > 0, name,
           f"v_template should be (V, 3), got {template.shape}")
    num_vertices = template.shape[0]
    shapes = {
        "shapedirs": (num_vertices, 3, None),
        "posedirs": (num_vertices, 3, 207),
        "J_regressor": (24, num_vertices),
        "weights": (num_vertices, 24),
        "kintree_table": (2, 24),
        "f": (None, 3),
    }
    for key, expected in shapes.items():
        shape = a[key].shape
        fits = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
        if not fits:
            wanted = "(" + ", ".join("N" if e is None else str(e) for e in expected) + ")"
            hint = ("; only SMPL's 24-joint skeleton is supported (not SMPL-H or SMPL-X)"
                    if key in ("J_regressor", "weights", "kintree_table") and 24 not in shape else "")
            _check(False, name, f"{key} should be {wanted} for V={num_vertices}, got {shape}{hint}")
    _check(a["shapedirs"].shape[2] > 0, name, "shapedirs has no shape directions")

    arrays = {key: a[key].astype(np.float64) for key in ("shapedirs", "posedirs", "J_regressor", "weights")}
    arrays["v_template"] = template
    for key, value in arrays.items():
        _check(bool(np.all(np.isfinite(value))), name, f"{key} contains NaN or infinity")

    parents = a["kintree_table"][0].astype(np.int64)
    parents[0] = -1                         # the root's parent is stored as 2**32 - 1 in the official files
    _check(tuple(parents) == PARENTS and tuple(a["kintree_table"][1]) == tuple(range(24)), name,
           f"kintree_table is not SMPL's kinematic tree (parents {tuple(parents)})")
    faces = a["f"]
    _check(np.issubdtype(faces.dtype, np.integer) or bool(np.all(faces == np.round(faces))), name,
           f"f should hold integer vertex indices, got dtype {faces.dtype}")
    faces = faces.astype(np.int64)
    _check(faces.size == 0 or (faces.min() >= 0 and faces.max() < num_vertices), name,
           f"f indexes vertices outside 0..{num_vertices - 1}")
    row_sums = arrays["weights"].sum(1)
    _check(bool(np.allclose(row_sums, 1.0, atol=1e-3)), name,
           f"skinning weights rows should sum to 1 (they range {row_sums.min():.4f}..{row_sums.max():.4f})")
    arrays["f"] = faces.astype(np.int32)
    arrays["kintree_table"] = np.stack([parents, np.arange(24)])
    return arrays
