"""``train.group_by_length``: each epoch's forget order with rows of similar token length side by
side, so that a batch pads its rows to a length close to theirs.

The epoch's seeded permutation (the one used without grouping) is cut into mega-batches of
``MEGA_BATCHES`` batches, each sorted longest first, cut into batches, and the full batches are
shuffled (seeded). Every row still comes exactly once per epoch, and the order is a pure function
of (seed, epoch, lengths, batch size), so a resumed run sees the batches an uninterrupted one does.

The loop's batches are fixed windows of a stream of epochs; when the batch size does not divide
the number of rows, an epoch starts inside a batch. The first ``offset`` rows of an epoch finish
that batch, and the grouping starts after them, so the grouped batches are the loop's batches.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MEGA_BATCHES = 50


def grouped_permutation(
    lengths: Sequence[int], seed: int, epoch: int, batch: int, offset: int = 0, mega_batches: int = MEGA_BATCHES
) -> np.ndarray:
    """Epoch ``epoch``'s order of ``range(len(lengths))``, batches of ``batch`` rows of similar length
    starting at position ``offset`` (see the module docstring)."""
    n = len(lengths)
    sizes = np.asarray(lengths)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    offset = min(offset, n)
    head, body = perm[:offset], perm[offset:]
    span = mega_batches * batch
    # longest first within each mega-batch; the stable sort keeps the seeded order among equal lengths
    parts = np.split(body, list(range(span, len(body), span)))
    body = np.concatenate([body[:0]] + [part[np.argsort(-sizes[part], kind="stable")] for part in parts])
    full = len(body) // batch
    batches = [body[i * batch: (i + 1) * batch] for i in range(full)]
    shuffled = np.random.default_rng([seed, epoch, 1]).permutation(full)
    # a short last batch stays last: the next epoch's head completes it
    return np.concatenate([head] + [batches[i] for i in shuffled] + [body[full * batch:]])


class LengthGroupedOrder:
    """``order(epoch)`` for ``stream_indices``: the grouped permutation of each epoch, whose
    batches line up with the stream's windows of ``batch`` positions."""

    def __init__(self, lengths: Sequence[int], seed: int, batch: int):
        self.lengths, self.seed, self.batch = list(lengths), seed, batch
        self._cached: tuple[int, np.ndarray] | None = None

    def __call__(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:  # consecutive micro-batches share an epoch
            offset = (-epoch * len(self.lengths)) % self.batch  # where epoch's first whole batch starts
            self._cached = (epoch, grouped_permutation(self.lengths, self.seed, epoch, self.batch, offset))
        return self._cached[1]
