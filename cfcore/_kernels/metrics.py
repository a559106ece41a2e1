"""Per-user AUC kernels (rows in parallel) for :func:`cfcore.metrics.pairwise_ranking`.

For user row r with positive scores P, negatives N: ``AUC = Σ_{p∈P} (#{n < p} + ½#{n = p}) / |P||N|``.
Counts come from binary searches in sorted score arrays, so a row costs
O((|P| + |N|) log |N|) instead of |P|·|N| comparisons.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


@numba.njit(cache=True)
def _gather_sorted(row_scores, indices, start, stop):
    out = np.empty(stop - start, dtype=np.float32)
    for k in range(stop - start):
        out[k] = row_scores[indices[start + k]]
    out.sort()
    return out


@numba.njit(parallel=True, cache=True)
def auc_explicit(scores, pos_indptr, pos_indices, neg_indptr, neg_indices, out):
    """AUC of each row's positives against its explicit (disjoint) negatives; NaN if either is empty."""
    for r in prange(scores.shape[0]):
        p0, p1 = pos_indptr[r], pos_indptr[r + 1]
        n0, n1 = neg_indptr[r], neg_indptr[r + 1]
        if p1 == p0 or n1 == n0:
            out[r] = np.nan
            continue
        neg = _gather_sorted(scores[r], neg_indices, n0, n1)
        total = 0.0
        for k in range(p0, p1):
            v = scores[r, pos_indices[k]]
            lo = np.searchsorted(neg, v, side="left")
            hi = np.searchsorted(neg, v, side="right")
            total += lo + 0.5 * (hi - lo)
        out[r] = total / ((p1 - p0) * (n1 - n0))


@numba.njit(parallel=True, cache=True)
def auc_complement(scores, sorted_scores, pos_indptr, pos_indices, excl_indptr, excl_indices, out):
    """AUC of each row's positives against every item that is neither positive nor excluded.

    ``sorted_scores`` is ``np.sort(scores, axis=1)``; positives and exclusions must be disjoint.
    Negatives below a score = all items below it − positives below it − exclusions below it.
    """
    n_items = scores.shape[1]
    for r in prange(scores.shape[0]):
        p0, p1 = pos_indptr[r], pos_indptr[r + 1]
        e0, e1 = excl_indptr[r], excl_indptr[r + 1]
        n_neg = n_items - (p1 - p0) - (e1 - e0)
        if p1 == p0 or n_neg <= 0:
            out[r] = np.nan
            continue
        pos = _gather_sorted(scores[r], pos_indices, p0, p1)
        excl = _gather_sorted(scores[r], excl_indices, e0, e1)
        row = sorted_scores[r]
        total = 0.0
        for k in range(pos.shape[0]):
            v = pos[k]
            lo = (
                np.searchsorted(row, v, side="left")
                - np.searchsorted(pos, v, side="left")
                - np.searchsorted(excl, v, side="left")
            )
            hi = (
                np.searchsorted(row, v, side="right")
                - np.searchsorted(pos, v, side="right")
                - np.searchsorted(excl, v, side="right")
            )
            total += lo + 0.5 * (hi - lo)
        out[r] = total / ((p1 - p0) * n_neg)
