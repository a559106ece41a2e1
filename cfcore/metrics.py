"""Evaluation metrics: RMSE, ranking (AUC / Fang's PR), top-k, multi-label mAP, bootstrap CIs.

Ranking metrics take a *scorer*: a function mapping an array of user rows to a dense
``(len(rows), n_items)`` score matrix (:func:`factor_scorer` builds one from factor tables,
:func:`popularity_scorer` is the usual baseline). Users are processed in batches, so memory
stays ``batch_size × n_items``.

Which negatives? :func:`pairwise_ranking` compares each user's held-out positives with either
an explicit set of negatives (e.g. Fang's validation negatives sampled by popularity) or, by
default, *every item the user has not interacted with* — uniform unobserved items, with the
training items excluded. That is the usual held-out AUC, and the one the accuracy tests use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from cfcore._kernels.metrics import auc_complement, auc_explicit
from cfcore.errors import InputError

Scorer = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------- scorers
def factor_scorer(
    user_factors: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray | None = None
) -> Scorer:
    """Scores ``x_u · y_i (+ b_i)`` of a factor model (a user bias never changes a ranking)."""
    users = np.ascontiguousarray(user_factors, dtype=np.float32)
    items = np.ascontiguousarray(item_factors, dtype=np.float32)
    if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
        raise InputError(f"factor shapes do not match: users {users.shape}, items {items.shape}")
    bias = None if item_bias is None else np.asarray(item_bias, dtype=np.float32)

    def score(rows: np.ndarray) -> np.ndarray:
        out = users[rows] @ items.T
        if bias is not None:
            out += bias
        return out

    return score


def popularity_scorer(train_user_items: sp.spmatrix) -> Scorer:
    """Baseline: every user gets items ranked by their number of training users."""
    pop = np.asarray((train_user_items != 0).sum(axis=0), dtype=np.float32).ravel()

    def score(rows: np.ndarray) -> np.ndarray:
        return np.repeat(pop[None, :], len(rows), axis=0)

    return score


# ---------------------------------------------------------------------------- pointwise
def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error ``sqrt(mean((y - ŷ)²))``."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise InputError(f"rmse: shapes differ, {y_true.shape} vs {y_pred.shape}")
    if y_true.size == 0:
        raise InputError("rmse: no values")
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def auc_score(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """AUC = P(score(pos) > score(neg)) over all pairs, ties counting 1/2."""
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise InputError("auc_score: needs at least one positive and one negative score")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# ---------------------------------------------------------------------------- helpers
def _csr(
    m: sp.spmatrix | None, name: str, shape: tuple[int, int] | None = None
) -> sp.csr_matrix | None:
    if m is None:
        return None
    if hasattr(m, "user_items"):  # an Interactions
        m = m.user_items
    if not sp.issparse(m):
        raise InputError(f"{name}: expected a sparse users × items matrix, got {type(m).__name__}")
    csr = sp.csr_matrix(m, copy=True)
    csr.eliminate_zeros()  # a stored zero is not an interaction
    csr.sort_indices()
    if shape is not None and csr.shape != shape:
        raise InputError(f"{name}: shape {csr.shape} does not match {shape}")
    return csr


def _scores(scorer: Scorer, rows: np.ndarray, n_items: int) -> np.ndarray:
    s = np.asarray(scorer(rows), dtype=np.float32)
    if s.shape != (len(rows), n_items):
        raise InputError(f"scorer returned shape {s.shape}, expected {(len(rows), n_items)}")
    if not np.all(np.isfinite(s)):
        raise InputError("scorer returned NaN or inf scores (diverged model?)")
    return s


def _without(m: sp.csr_matrix, remove: sp.csr_matrix) -> sp.csr_matrix:
    """Entries of ``m`` that are not in ``remove`` (same shape), sorted."""
    out = sp.csr_matrix(m - m.multiply(remove))
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _row_mask(m: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Dense boolean (len(rows), n_items) mask of the stored entries of ``rows``."""
    sub = m[rows]
    mask = np.zeros(sub.shape, dtype=bool)
    r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    mask[r, sub.indices] = True
    return mask


# ---------------------------------------------------------------------------- ranking
def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns and values of the ``n`` largest scores of each row, best first.

    Ties are broken by the lower column index, so the result never depends on the
    partitioning algorithm. ``n`` larger than the number of columns returns them all.
    """
    n = min(n, scores.shape[1])
    part = (
        np.argpartition(-scores, n - 1, axis=1)[:, :n]
        if n < scores.shape[1]
        else (np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy())
    )
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if part.size else part
    ids = np.take_along_axis(part, order, axis=1)
    return ids, np.take_along_axis(vals, order, axis=1)


def pairwise_ranking(
    scorer: Scorer,
    positives: sp.spmatrix,
    negatives: sp.spmatrix | None = None,
    exclude: sp.spmatrix | None = None,
    n_negatives: int | None = None,
    users: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """Per-user AUC and Fang's personalized-ranking error PR, averaged over users.

    For user u with held-out positives P_u and negatives N_u:
    ``AUC_u = (1/|P_u||N_u|) Σ_{i∈P_u, j∈N_u} [s_ui > s_uj] + ½[s_ui = s_uj]`` and
    ``PR_u = 1 − AUC_u`` (the fraction of mis-ordered pairs; 0.5 is random, lower is better).

    Parameters
    ----------
    scorer : callable
        User rows → dense scores.
    positives : sparse (n_users, n_items)
        Held-out positives.
    negatives : sparse, optional
        Explicit negatives (e.g. Fang's sampled validation negatives). Default: every item
        not in ``positives`` or ``exclude`` (uniform unobserved items).
    exclude : sparse, optional
        Items never used as negatives (normally the training matrix).
    n_negatives : int, optional
        With ``negatives=None``, compare against this many unobserved items per user drawn
        uniformly (seeded) instead of all of them — for catalogues too large to rank whole.
    users : array of int, optional
        Evaluate only these user rows (default: all users with a positive).
    seed : int
        Seed for ``n_negatives`` sampling.

    Returns
    -------
    dict
        ``auc`` and ``pr`` (means over evaluated users) and ``users`` (how many).
    """
    pos = _csr(positives, "positives")
    assert pos is not None
    n_users, n_items = pos.shape
    neg = _csr(negatives, "negatives", pos.shape)
    excl = _csr(exclude, "exclude", pos.shape)
    if n_negatives is not None and n_negatives < 1:
        raise InputError(f"n_negatives must be >= 1, got {n_negatives}")
    candidates = np.flatnonzero(np.diff(pos.indptr) > 0) if users is None else np.asarray(users)
    rng = np.random.default_rng(seed)
    aucs: list[np.ndarray] = []
    for start in range(0, len(candidates), batch_size):
        rows = candidates[start : start + batch_size]
        scores = _scores(scorer, rows, n_items)
        p_rows = pos[rows]
        out = np.empty(len(rows), dtype=np.float64)
        if neg is None and n_negatives is not None:
            # n_negatives uniform draws without replacement among each row's candidates:
            # keep the candidates with the n smallest random keys.
            cand = ~_row_mask(pos, rows)
            if excl is not None:
                cand &= ~_row_mask(excl, rows)
            keys = np.where(cand, rng.random(cand.shape), np.inf)
            m = min(n_negatives, n_items) - 1
            kth = np.partition(keys, m, axis=1)[:, m]
            n_rows = sp.csr_matrix(cand & (keys <= kth[:, None]), dtype=np.float32)
        elif neg is not None:
            n_rows = _without(neg[rows], p_rows)
        else:
            n_rows = None
        if n_rows is not None:
            auc_explicit(scores, p_rows.indptr, p_rows.indices, n_rows.indptr, n_rows.indices, out)
        else:
            e_rows = (
                _without(excl[rows], p_rows)
                if excl is not None
                else sp.csr_matrix(p_rows.shape, dtype=np.float32)
            )
            auc_complement(
                scores,
                np.sort(scores, axis=1),
                p_rows.indptr,
                p_rows.indices,
                e_rows.indptr,
                e_rows.indices,
                out,
            )
        aucs.append(out[~np.isnan(out)])
    if not aucs or not sum(len(a) for a in aucs):
        raise InputError("pairwise_ranking: no user has both a positive and a negative")
    auc = np.concatenate(aucs)
    return {"auc": float(auc.mean()), "pr": float((1.0 - auc).mean()), "users": int(len(auc))}


def top_k_metrics(
    scorer: Scorer,
    test: sp.spmatrix,
    k: int = 10,
    exclude: sp.spmatrix | None = None,
    users: np.ndarray | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Precision, recall, accuracy (hit rate), MAP and NDCG at ``k``, averaged over users.

    For user u with relevant set T_u and top-k list (excluded items removed) with hits h_r:
    precision = Σh/k; recall = Σh/|T_u|; accuracy = [Σh ≥ 1] (Denton's A@k);
    AP@k = Σ_r h_r·precision@r / min(|T_u|, k); NDCG = Σ h_r/log2(r+1) / IDCG.
    Users with no relevant item are skipped.

    Returns
    -------
    dict
        Keys ``precision@k``, ``recall@k``, ``accuracy@k``, ``map@k``, ``ndcg@k`` with the
        number substituted, plus ``users``.
    """
    t = _csr(test, "test")
    assert t is not None
    n_items = t.shape[1]
    if not 1 <= k <= n_items:
        raise InputError(f"k must lie in [1, {n_items}] (the catalogue size), got {k}")
    excl = _csr(exclude, "exclude", t.shape)
    candidates = np.flatnonzero(np.diff(t.indptr) > 0) if users is None else np.asarray(users)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal_dcg = np.cumsum(discounts)  # ideal_dcg[m - 1]: DCG of m hits at the top
    sums = np.zeros(5)
    n = 0
    for start in range(0, len(candidates), batch_size):
        rows = candidates[start : start + batch_size]
        scores = _scores(scorer, rows, n_items)
        if excl is not None:
            scores[_row_mask(excl, rows)] = -np.inf
        top, _ = top_n(scores, k)
        rel = _row_mask(t, rows)
        hits = np.take_along_axis(rel, top, 1).astype(np.float64)
        n_rel = rel.sum(1)
        keep = n_rel > 0
        hits, n_rel = hits[keep], n_rel[keep]
        n_hits = hits.sum(1)
        prec_at = np.cumsum(hits, 1) / np.arange(1, k + 1)
        ideal = ideal_dcg[np.minimum(n_rel, k) - 1]
        sums += [
            (n_hits / k).sum(),
            (n_hits / n_rel).sum(),
            (n_hits > 0).sum(),
            ((prec_at * hits).sum(1) / np.minimum(n_rel, k)).sum(),
            ((hits * discounts).sum(1) / ideal).sum(),
        ]
        n += len(n_rel)
    if n == 0:
        raise InputError("top_k_metrics: no user has a relevant item")
    names = ("precision", "recall", "accuracy", "map", "ndcg")
    out: dict[str, float] = {
        f"{name}@{k}": float(v / n) for name, v in zip(names, sums, strict=True)
    }
    out["users"] = n
    return out


def top_k_per_label(
    scorer: Scorer,
    test: sp.spmatrix,
    k: int = 10,
    rows: np.ndarray | None = None,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Precision and recall at ``k`` of each column (label) of a multi-label test matrix.

    With the top-k list of every row (Denton et al. 2015, §4.2, per hashtag y):
    ``recall@k(y) = hits_y / support_y`` — of the rows that have y, the fraction that rank it
    in their top k — and ``precision@k(y) = hits_y / predicted_y`` — of the rows that rank y
    in their top k, the fraction that have it. NaN where the denominator is 0.

    Parameters
    ----------
    scorer : callable
        Rows → dense ``(len(rows), n_labels)`` scores.
    test : sparse (n_rows, n_labels)
        The true labels of each row.
    k : int
    rows : array of int, optional
        Evaluate only these rows (default: every row with a label).

    Returns
    -------
    dict
        ``support``, ``predicted``, ``hits`` (int64 per label), ``precision``, ``recall``
        (float64 per label).
    """
    t = _csr(test, "test")
    assert t is not None
    n_labels = t.shape[1]
    if not 1 <= k <= n_labels:
        raise InputError(f"k must lie in [1, {n_labels}] (the number of labels), got {k}")
    candidates = np.flatnonzero(np.diff(t.indptr) > 0) if rows is None else np.asarray(rows)
    predicted = np.zeros(n_labels, np.int64)
    hits = np.zeros(n_labels, np.int64)
    support = np.zeros(n_labels, np.int64)
    for start in range(0, len(candidates), batch_size):
        batch = candidates[start : start + batch_size]
        top, _ = top_n(_scores(scorer, batch, n_labels), k)
        rel = _row_mask(t, batch)
        hit = np.take_along_axis(rel, top, 1)
        predicted += np.bincount(top.ravel(), minlength=n_labels)
        hits += np.bincount(top[hit], minlength=n_labels)
        support += rel.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), np.nan)
        recall = np.where(support > 0, hits / np.maximum(support, 1), np.nan)
    return {
        "support": support,
        "predicted": predicted,
        "hits": hits,
        "precision": precision,
        "recall": recall,
    }


def evaluate(
    scorer: Scorer,
    train: sp.spmatrix,
    test: sp.spmatrix,
    k: int = 10,
    n_negatives: int | None = None,
    users: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out evaluation of a recommender: AUC/PR against uniform unobserved items (train
    excluded) plus :func:`top_k_metrics` with training items filtered out."""
    out = pairwise_ranking(
        scorer, test, exclude=train, n_negatives=n_negatives, users=users, seed=seed
    )
    out.update(top_k_metrics(scorer, test, k=k, exclude=train, users=users))
    return out


# ---------------------------------------------------------------------------- multi-label
def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-class average precision of multi-label predictions.

    ``AP_c = (1/|P_c|) Σ_{i∈P_c} precision@rank(i)`` with items ranked by decreasing score.
    Tied scores form one threshold: every item of a tie gets the precision at the tie's
    end, so the order of tied items never matters (scikit-learn's
    ``average_precision_score``; a constant score — the popularity baseline of a class —
    gets the class's prevalence).

    A class without a positive has no defined AP: its entry is **NaN** (never an error, so a
    small validation split cannot stop a training run); :func:`mean_average_precision` leaves
    such classes out and raises only when no class has a positive. NaN or inf *scores* raise
    (a diverged model must not be scored).

    Parameters
    ----------
    y_true : array (n_samples, n_classes) of {0, 1}
    y_score : array (n_samples, n_classes)

    Returns
    -------
    ndarray (n_classes,)
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score.reshape(-1, 1)
    if y_true.shape != y_score.shape:
        raise InputError(f"average_precision: shapes differ, {y_true.shape} vs {y_score.shape}")
    if not np.all(np.isfinite(y_score)):
        raise InputError("average_precision: scores contain NaN or inf")
    order = np.argsort(-y_score, axis=0, kind="stable")
    hits = np.take_along_axis(y_true > 0, order, 0).astype(np.float64)
    ranked = np.take_along_axis(y_score, order, 0)
    n = len(hits)
    n_pos = hits.sum(0)
    precision = np.cumsum(hits, 0) / np.arange(1, n + 1)[:, None]
    # the last rank of each tie: the next score differs (or the list ends)
    is_end = np.ones_like(hits, dtype=bool)
    is_end[:-1] = ranked[1:] != ranked[:-1]
    ends = np.where(is_end, np.arange(n)[:, None], n)
    tie_end = np.minimum.accumulate(ends[::-1], axis=0)[::-1]
    precision = np.take_along_axis(precision, tie_end, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * hits).sum(0) / n_pos
    ap[n_pos == 0] = np.nan
    return ap


def mean_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """mAP: the mean of :func:`average_precision` over the classes that have a positive.

    Raises
    ------
    InputError
        No class has a positive example (nothing to average).
    """
    ap = average_precision(y_true, y_score)
    if np.all(np.isnan(ap)):
        raise InputError("mean_average_precision: no class has a positive example")
    return float(np.nanmean(ap))


# ---------------------------------------------------------------------------- bootstrap
def bootstrap_samples(
    statistic: Callable[..., float], *arrays: Any, n_boot: int = 1000, seed: int = 0
) -> tuple[float, np.ndarray]:
    """``statistic(*arrays)`` and its value on ``n_boot`` bootstrap resamples of the rows.

    The one resampling loop of the library: every array is indexed by the same resampled
    rows (numpy PCG64 seeded with ``seed``), so arrays that describe the same items stay
    paired. A resample on which the statistic is undefined (it raises :class:`InputError`,
    e.g. mAP with no positive) counts as NaN.

    Returns
    -------
    point : float
        The statistic on the data as given.
    samples : ndarray of float64, shape (n_boot,)
    """
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    arrays_np: list[Any] = [np.asarray(a) for a in arrays]
    if not arrays_np:
        raise InputError("bootstrap: no arrays to resample")
    n = len(arrays_np[0])
    if any(len(a) != n for a in arrays_np):
        raise InputError("bootstrap: arrays must have the same number of rows")
    if n == 0:
        raise InputError("bootstrap: no rows")
    rng = np.random.default_rng(seed)
    point = float(statistic(*arrays_np))
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        try:
            stats[b] = statistic(*(a[idx] for a in arrays_np))
        except InputError:
            stats[b] = np.nan
    return point, stats


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    if not np.isfinite(stats).any():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(stats, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


class PairedBootstrap(NamedTuple):
    """Difference of a metric between two methods on the same items, with its uncertainty."""

    difference: float  #: metric(a) − metric(b) on the data as given
    low: float  #: lower end of the confidence interval
    high: float  #: upper end
    p_value: float  #: two-sided p-value of "no difference" (see :func:`paired_bootstrap`)


def _normal_interval(
    point: float, stats: np.ndarray, confidence: float
) -> tuple[float, float, float]:
    """``point ± z·sd`` of the finite resampled values, and the two-sided normal p-value of
    ``point = 0``."""
    from statistics import NormalDist

    ok = stats[np.isfinite(stats)]
    if len(ok) < 2:
        return float("nan"), float("nan"), float("nan")
    sd = float(ok.std(ddof=1))
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * sd
    if sd > 0:
        p = 2 * (1 - NormalDist().cdf(abs(point) / sd))
    else:
        p = 1.0 if point == 0 else 0.0
    return point - half, point + half, float(p)


def _check_interval(interval: str) -> None:
    if interval not in ("percentile", "normal"):
        raise InputError(f"interval must be percentile or normal, got {interval!r}")


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    interval: str = "percentile",
) -> tuple[float, float, float]:
    """Bootstrap confidence interval of ``metric(*arrays)`` resampling rows.

    E.g. ``bootstrap_ci(mean_average_precision, y_true, y_score)``, or for a mean of
    per-query values ``bootstrap_ci(np.mean, values)``. Two methods scored on the same
    items: :func:`paired_bootstrap`.

    Parameters
    ----------
    interval : {"percentile", "normal"}
        ``percentile``: the ``(1 ± confidence)/2`` quantiles of the resampled values.
        ``normal``: ``point ± z·sd`` of the resampled values, centred on the estimate. Use it
        for statistics that resampling itself biases: mAP on a few hundred items is one — a
        row drawn twice ties with itself (a duplicated positive lifts its class's AP) and a
        resample that misses a rare class's only positive drops that class — which moves the
        whole resampled distribution above the estimate (by ~0.02 for a test mAP of 0.2 on
        249 items), so that the percentile interval may not even contain it.

    Returns
    -------
    (point, low, high)
    """
    _percentiles(np.zeros(1), confidence)  # validate before the work
    _check_interval(interval)
    point, stats = bootstrap_samples(metric, *arrays, n_boot=n_boot, seed=seed)
    if interval == "percentile":
        return (point, *_percentiles(stats, confidence))
    low, high, _ = _normal_interval(point, stats, confidence)
    return point, low, high


def paired_bootstrap(
    metric: Callable[..., float],
    a: np.ndarray,
    b: np.ndarray,
    *shared: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    interval: str = "percentile",
) -> PairedBootstrap:
    """Paired bootstrap of ``metric(*shared, a) − metric(*shared, b)`` over the same rows.

    ``a`` and ``b`` are two methods' outputs for the same items (scores, or per-query
    values); ``shared`` arrays (e.g. ``y_true``) come first in the metric's call, as in
    ``metric(y_true, y_score)``. Every resample draws one set of rows for all arrays, so
    item-to-item variation cancels out of the difference.

    ``interval="percentile"``: the CI is the resampled differences' quantiles and the p-value
    ``2 · min(P*(d ≤ 0), P*(d ≥ 0))`` (resolution ``1 / n_boot``). ``interval="normal"``:
    ``d ± z·sd`` and the two-sided normal p-value of ``d / sd`` — a paired z-test with the
    bootstrap's standard error, for metrics whose resamples are biased (mAP: see
    :func:`bootstrap_ci`).

    Examples
    --------
    >>> paired_bootstrap(mean_average_precision, scores_a, scores_b, y_true)  # doctest: +SKIP
    >>> paired_bootstrap(np.mean, per_query_a, per_query_b)  # doctest: +SKIP

    Returns
    -------
    PairedBootstrap
        ``(difference, low, high, p_value)``.
    """
    _percentiles(np.zeros(1), confidence)
    _check_interval(interval)
    k = len(shared)

    def diff(*arrays: np.ndarray) -> float:
        return float(metric(*arrays[:k], arrays[k])) - float(metric(*arrays[:k], arrays[k + 1]))

    point, stats = bootstrap_samples(diff, *shared, a, b, n_boot=n_boot, seed=seed)
    if interval == "normal":
        return PairedBootstrap(point, *_normal_interval(point, stats, confidence))
    low, high = _percentiles(stats, confidence)
    ok = stats[np.isfinite(stats)]
    p = float(min(1.0, 2 * min((ok <= 0).mean(), (ok >= 0).mean()))) if len(ok) else float("nan")
    return PairedBootstrap(point, low, high, p)
