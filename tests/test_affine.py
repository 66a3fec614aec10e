"""smpl_rig.affine: the closed-form inverses the Blender side uses instead of LAPACK on 4 × 4 matrices."""
from __future__ import annotations

import numpy as np
import pytest

from smpl_rig import rotations
from smpl_rig.affine import inverse_3x3, inverse_affine


def _random_affine(rng, n):
    m = np.zeros((n, 4, 4))
    m[:, :3, :3] = rotations.rotvec_to_rotmat(rng.normal(0, 1, (n, 3))) * rng.uniform(0.01, 100, (n, 1, 3))
    m[:, :3, :3] += rng.normal(0, 0.3, (n, 3, 3))          # shear too: Blender's matrices need not be rigid
    m[:, :3, 3] = rng.normal(0, 10, (n, 3))
    m[:, 3, 3] = 1.0
    return m


def test_inverses_match_lapack():
    rng = np.random.default_rng(0)
    m = _random_affine(rng, 200)
    np.testing.assert_allclose(inverse_affine(m), np.linalg.inv(m), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(inverse_3x3(m[:, :3, :3]), np.linalg.inv(m[:, :3, :3]), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(inverse_affine(m[0]) @ m[0], np.eye(4), atol=1e-9)      # one matrix, no batch


def test_a_singular_matrix_is_refused():
    with pytest.raises(np.linalg.LinAlgError):
        inverse_3x3(np.diag([1.0, 0.0, 1.0]))
