"""Fixed train / validation / test splits by seed. The test split is the project's pose benchmark, so a
split depends only on (number of samples, seed, fractions) — never on the order samples were written in.
"""
from __future__ import annotations

import numpy as np

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)


def assign_splits(n: int, seed: int = 0, fractions=DEFAULT_FRACTIONS) -> np.ndarray:
    """(n,) int8 split ids (0 train, 1 validation, 2 test): a seeded permutation cut by ``fractions``."""
    if n < 0:
        raise ValueError(f"the number of samples must be ≥ 0, got {n}")
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions.tolist()}")
    order = np.random.default_rng([seed, 7919]).permutation(n)
    n_val, n_test = int(round(n * fractions[1])), int(round(n * fractions[2]))
    ids = np.zeros(n, dtype=np.int8)
    ids[order[:n_test]] = 2
    ids[order[n_test:n_test + n_val]] = 1
    return ids


def split_id(name: str) -> int:
    """0, 1 or 2 for "train", "validation" ("val") or "test"."""
    name = {"val": "validation", "valid": "validation"}.get(name, name)
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    return SPLITS.index(name)
