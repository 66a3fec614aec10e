"""Per-batch mixing of the three data sources (paper: image : text : instruction = 2 : 1 : 1 in every batch).

Each batch is split between the sources by largest remainder (16 × 2:1:1 → 8, 4, 4 exactly); when the
weights do not divide the batch, the leftover slots go to sources drawn in proportion to what is left,
so the ratio holds on average over many batches. Each source walks its own reshuffled permutation, epoch
after epoch. A source with no data (not configured, empty) is dropped from the mix with a log line.

The whole state (positions, epochs, generator) is a small dict: ``state_dict`` / ``load_state_dict`` make
a resumed run draw exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)


def batch_counts(weights: dict[str, float], batch_size: int, rng: np.random.Generator) -> dict[str, int]:
    """How many samples each source gets in one batch: floor of its exact share, then the leftover slots
    drawn without replacement in proportion to the fractional parts (so the expectation is exact)."""
    total = sum(weights.values())
    exact = {k: batch_size * w / total for k, w in weights.items()}
    counts = {k: int(math.floor(v + 1e-9)) for k, v in exact.items()}
    left = batch_size - sum(counts.values())
    if left:
        names = [k for k in weights if exact[k] - counts[k] > 1e-9]
        fractions = np.array([exact[k] - counts[k] for k in names])
        chosen = rng.choice(len(names), size=left, replace=False, p=fractions / fractions.sum())
        for i in chosen:
            counts[names[int(i)]] += 1
    return counts


class MixSampler:
    """Yields batches as lists of ``(source name, index into that source)``.

    sizes: {source: number of samples}; weights: {source: mix weight}; a source missing from ``sizes``, with
    size 0, or with weight 0 is left out (logged).
    """

    def __init__(self, sizes: dict[str, int], weights: dict[str, float], batch_size: int, seed: int = 0):
        self.weights = {}
        for name, weight in weights.items():
            if weight <= 0:
                continue
            if not sizes.get(name):
                log.warning("data source %r has no samples: dropped from the mix", name)
                continue
            self.weights[name] = float(weight)
        if not self.weights:
            raise ValueError(f"no data source left to sample from (sizes {sizes}, weights {weights})")
        self.sizes = {k: int(sizes[k]) for k in self.weights}
        self.batch_size = batch_size
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.position = {k: 0 for k in self.weights}
        self.epoch = {k: 0 for k in self.weights}
        self._orders = {k: self._order(k) for k in self.weights}
        log.info("data mix per batch of %d: %s", batch_size,
                 ", ".join(f"{k} {self.weights[k]:g} ({self.sizes[k]} samples)" for k in self.weights))

    def _order(self, name: str) -> np.ndarray:
        # A permutation per (seed, source, epoch): independent of how far the other sources got.
        key = [self.seed, sorted(self.weights).index(name), self.epoch[name]]
        return np.random.default_rng(key).permutation(self.sizes[name])

    def _take(self, name: str) -> int:
        if self.position[name] >= self.sizes[name]:
            self.epoch[name] += 1
            self.position[name] = 0
            self._orders[name] = self._order(name)
        index = int(self._orders[name][self.position[name]])
        self.position[name] += 1
        return index

    def next_batch(self) -> list[tuple[str, int]]:
        counts = batch_counts(self.weights, self.batch_size, self.rng)
        return [(name, self._take(name)) for name in self.weights for _ in range(counts[name])]

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"seed": self.seed, "position": dict(self.position), "epoch": dict(self.epoch),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if set(state["position"]) != set(self.weights):
            raise ValueError(f"sampler state covers sources {sorted(state['position'])}, this run has "
                             f"{sorted(self.weights)}")
        self.seed = state["seed"]
        self.position = {k: int(v) for k, v in state["position"].items()}
        self.epoch = {k: int(v) for k, v in state["epoch"].items()}
        self.rng.bit_generator.state = state["rng"]
        self._orders = {k: self._order(k) for k in self.weights}
