"""How good are image features at collaborative retrieval and at predicting labels?

Fang et al. §4.3–4.4:

- **Shared-viewer curve.** Test items (never seen in training) query the train items by cosine
  similarity of their features. For each query q and rank r ≤ R the score is
  ``|viewers(q) ∩ viewers(nn_r(q))| / |viewers(q) ∪ viewers(nn_r(q))|``, averaged over queries;
  the random baseline pairs each query with R uniformly drawn train items.
- **Owner-viewed count.** When items have owners: how many of the top-R neighbours the
  query's owner viewed, averaged over queries.
- **Linear probe.** A linear classifier on the features, 80/20 split (the paper uses a linear
  SVM; we fit an L2-regularised logistic regression, one-vs-rest for multi-label data, with the
  penalty picked on a held-out quarter of the training part). Single-label: accuracy;
  multi-label (e.g. MovieLens genres): mean average precision over classes.

The neighbour search is cfcore's :class:`~cfcore.neighbors.NeighborIndex` (exact cosine,
faiss) and the measures are :func:`cfcore.retrieval.retrieval_report`, so features and item
factors are scored by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError


# ----------------------------------------------------------------------------- metrics
def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-class average precision; NaN for a class without positives.

    ``AP_c = (1/|P_c|) Σ_{i ∈ P_c} precision@rank(i)`` with items sorted by decreasing score
    (ties broken by order, as scikit-learn's step interpolation does for distinct scores).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score[:, None]
    ap = np.full(y_true.shape[1], np.nan)
    for c in range(y_true.shape[1]):
        pos = y_true[:, c] > 0
        if not pos.any():
            continue
        order = np.argsort(-y_score[:, c], kind="stable")
        hits = pos[order]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        ap[c] = precision[hits].mean()
    return ap


def mean_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean of :func:`average_precision` over classes that have a positive."""
    ap = average_precision(y_true, y_score)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


# ----------------------------------------------------------------------------- linear probe
@dataclass
class ProbeResult:
    metric: str
    score: float
    l2: float
    n_train: int
    n_test: int
    per_class: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "score": self.score,
            "l2": self.l2,
            "train": self.n_train,
            "test": self.n_test,
        }


def _fit_logistic(x, y, multilabel: bool, l2: float, iters: int = 200):
    import torch

    torch.manual_seed(0)
    n_out = y.shape[1] if multilabel else int(y.max()) + 1
    w = torch.zeros(x.shape[1], n_out, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_out, dtype=torch.float64, requires_grad=True)
    loss_fn = torch.nn.BCEWithLogitsLoss() if multilabel else torch.nn.CrossEntropyLoss()
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _probe_score(scores: np.ndarray, y: np.ndarray, multilabel: bool) -> tuple[float, np.ndarray]:
    if multilabel:
        ap = average_precision(y, scores)
        return float(np.nanmean(ap)), ap
    return float((scores.argmax(axis=1) == y).mean()), np.array([])


def linear_probe(
    features: np.ndarray,
    targets: np.ndarray,
    multilabel: bool | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
) -> ProbeResult:
    """Linear classifier on frozen features, ``1 − test_fraction`` / ``test_fraction`` split.

    Features are standardised with the training part's mean and deviation; the L2 penalty is
    chosen from ``l2_grid`` on a quarter of the training part, then the model is refit on the
    whole training part and scored on the test part.

    Returns
    -------
    ProbeResult
        ``metric`` is ``accuracy`` (single-label) or ``mAP`` (multi-label, classes without a
        test positive are skipped).
    """
    import torch

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    if multilabel is None:
        multilabel = y.ndim == 2
    if len(x) != len(y):
        raise InputError(f"{len(x)} feature rows but {len(y)} label rows")
    if len(x) < 10:
        raise InputError(f"a linear probe needs at least 10 labelled items, got {len(x)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = perm[:n_test], perm[n_test:]
    n_val = max(1, len(train) // 4)
    fit_part, val_part = train[n_val:], train[:n_val]

    def tensors(rows, mean, std):
        xt = torch.from_numpy((x[rows] - mean) / std)
        yt = torch.from_numpy(y[rows].astype(np.float64 if multilabel else np.int64))
        return xt, yt

    def run(fit_rows, eval_rows, l2):
        mean, std = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0) + 1e-8
        xf, yf = tensors(fit_rows, mean, std)
        xe, _ = tensors(eval_rows, mean, std)
        w, b = _fit_logistic(xf, yf, multilabel, l2)
        return _probe_score((xe @ w + b).numpy(), y[eval_rows], multilabel)

    best = max(l2_grid, key=lambda l2: run(fit_part, val_part, l2)[0])
    score, per_class = run(train, test, best)
    return ProbeResult(
        "mAP" if multilabel else "accuracy",
        score,
        float(best),
        len(train),
        len(test),
        [float(v) for v in per_class],
    )


# ----------------------------------------------------------------------------- comparison
FeatureSet = tuple[str, Sequence[str], np.ndarray]


def _as_feature_set(entry: Any) -> FeatureSet:
    if isinstance(entry, tuple) and len(entry) == 3:
        name, ids, vecs = entry
        return str(name), [str(i) for i in ids], np.asarray(vecs, dtype=np.float32)
    from cfvision.extract import load_item_vectors

    ids, vecs, _ = load_item_vectors(entry)
    return str(entry), ids, vecs


def _read_owners(path: Any) -> dict[str, str]:
    """CSV ``item_id,owner`` (header optional)."""
    import csv

    from cfvision.data import _normalise_id

    owner: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or (lineno == 1 and row[0].strip().lower() in ("item_id", "item")):
                continue
            if len(row) < 2:
                raise InputError(f"{path}:{lineno}: expected item_id,owner")
            owner[_normalise_id(row[0])] = row[1].strip()
    if not owner:
        raise InputError(f"{path}: no owners")
    return owner


def retrieval_eval(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    query_mask: np.ndarray,
    interactions: Any,
    R: int = 100,
    owners: dict[str, str] | None = None,
    genres: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> Any:
    """Test items (``query_mask``) query the other items by cosine similarity (Fang §4.3).

    Parameters
    ----------
    item_ids : sequence of str
        Ids of the rows of ``vectors`` (all among ``interactions``' items).
    vectors : (n, d)
    query_mask : bool (n,)
        True for query (test) items; the others are searched (and are the random baseline's
        candidates).
    interactions : cfcore.Interactions
        Viewer sets.
    R : int
        Neighbours per query (paper: 100; capped at the number of searched items).
    owners, genres
        Passed to :func:`cfcore.retrieval.retrieval_report`.

    Returns
    -------
    cfcore.retrieval.RetrievalReport
    """
    from cfcore.neighbors import NeighborIndex
    from cfcore.retrieval import retrieval_report
    from cfvision.data import ids_to_array

    query_mask = np.asarray(query_mask, dtype=bool)
    ids = ids_to_array(item_ids)
    if interactions.item_ids.dtype.kind == "U":
        ids = ids.astype(str)
    qi, bi = np.flatnonzero(query_mask), np.flatnonzero(~query_mask)
    if len(qi) == 0 or len(bi) == 0:
        raise InputError(f"need query and train items, got {len(qi)} and {len(bi)}")
    R = min(R, len(bi))  # noqa: N806 - the paper's name
    index = NeighborIndex(np.asarray(vectors[bi], dtype=np.float32), ids[bi])
    nn = index.search(np.asarray(vectors[qi], dtype=np.float32), k=R, query_ids=ids[qi])
    return retrieval_report(
        nn,
        interactions,
        R,
        owners=owners,
        genres=genres,
        candidates=ids[bi],
        seed=seed,
        on_empty="skip",
    )


def per_query_shared_viewers(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    query_mask: np.ndarray,
    interactions: Any,
    R: int = 100,
) -> np.ndarray:
    """Each query's mean viewer-set Jaccard over its top ``R`` neighbours, shape (Q,).

    The mean of this vector is the mean of the shared-viewer curve; per query it allows paired
    comparisons of two feature sets (e.g. a bootstrap confidence interval of the difference).
    Queries without viewers are NaN.
    """
    from cfcore.neighbors import NeighborIndex
    from cfcore.retrieval import pair_jaccard

    query_mask = np.asarray(query_mask, dtype=bool)
    cols = {str(i): c for c, i in enumerate(interactions.item_ids.tolist())}
    rows = np.asarray([cols[str(i)] for i in item_ids], dtype=np.int64)
    qi, bi = np.flatnonzero(query_mask), np.flatnonzero(~query_mask)
    R = min(R, len(bi))  # noqa: N806 - the paper's name
    nn = NeighborIndex(np.asarray(vectors[bi], dtype=np.float32)).search(
        np.asarray(vectors[qi], dtype=np.float32), k=R, exclude_self=False
    )
    nrows = rows[bi][nn.positions]
    jac = pair_jaccard(interactions.item_users(), np.repeat(rows[qi], R), nrows.ravel())
    return jac.reshape(len(qi), R).mean(axis=1)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a − b`` over paired rows and its 95% bootstrap interval (rows resampled)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(d.mean()), float(low), float(high)


def compare_features(
    feature_sets: Sequence[Any],
    interactions: Any,
    test_items: Sequence[str] | None = None,
    test_fraction: float = 0.05,
    R: int = 100,
    labels: Any = None,
    owners: Any = None,
    seed: int = 0,
    plot: Any = None,
) -> dict[str, Any]:
    """Score several feature sets on the same items, query split and probe split.

    Parameters
    ----------
    feature_sets : sequence
        Paths of item-vectors / factor-model files, or ``(name, item_ids, vectors)`` tuples.
    interactions : cfcore.Interactions
        Who viewed what (the viewer sets of the shared-viewer curve).
    test_items : sequence of str, optional
        Query items; default a seeded random ``test_fraction`` of the common items.
    R : int
        Neighbours per query.
    labels : path or :class:`cfvision.data.Labels`, optional
        Labels for the linear probe (items without a label are left out of the probe).
    owners : path, optional
        CSV ``item_id,owner`` for the owner-viewed count.
    plot : path, optional
        PNG of the curves and the random baseline.

    Returns
    -------
    dict
        ``items``, ``queries``, per-set ``results`` (retrieval summary, curve and probe) and a
        printable ``table`` (list of lines).
    """
    from cfvision.data import Labels, load_labels

    sets = [_as_feature_set(e) for e in feature_sets]
    inter_cols = {str(i): c for c, i in enumerate(interactions.item_ids.tolist())}
    common = [i for i in dict.fromkeys(sets[0][1]) if i in inter_cols]
    for _name, ids, _ in sets[1:]:
        have = set(ids)
        common = [i for i in common if i in have]
    if not common:
        raise InputError(
            "no item is in every feature file and in the interactions: "
            "do the ids come from the same dataset?"
        )
    if test_items is not None:
        wanted = {str(i) for i in test_items}
        query = np.asarray([i in wanted for i in common])
        if not query.any():
            raise InputError("none of the --test-items has features and interactions")
    else:
        rng = np.random.default_rng(seed)
        n_q = max(1, int(round(len(common) * test_fraction)))
        query = np.zeros(len(common), dtype=bool)
        query[rng.choice(len(common), n_q, replace=False)] = True
    owner_map = _read_owners(owners) if owners is not None else None
    lab: Labels | None = None
    if labels is not None:
        lab = labels if isinstance(labels, Labels) else load_labels(labels)
        have = set(lab.item_ids)
        probe_items = [i for i in common if i in have]
        if len(probe_items) < 10:
            raise InputError(
                f"only {len(probe_items)} items have both features and a label in "
                f"{lab.source}: do the ids come from the same dataset?"
            )
        lab = lab.subset(probe_items)
    genres = None
    if lab is not None:
        from cfvision.data import ids_to_array

        onehot = (
            lab.targets if lab.multilabel else np.eye(lab.n_classes, dtype=np.float32)[lab.targets]
        )
        genres = (ids_to_array(lab.item_ids), onehot)
    results: dict[str, Any] = {}
    reports = {}
    for name, ids, vecs in sets:
        pos = {i: r for r, i in enumerate(ids)}
        x = vecs[[pos[i] for i in common]]
        rep = retrieval_eval(common, x, query, interactions, R, owner_map, genres, seed)
        reports[name] = rep
        entry: dict[str, Any] = rep.to_dict()
        if lab is not None:
            row = {i: r for r, i in enumerate(common)}
            xp = x[[row[i] for i in lab.item_ids]]
            entry["probe"] = linear_probe(xp, lab.targets, lab.multilabel, seed=seed).summary()
        results[name] = entry
    n_q = int(query.sum())
    table = _table(results, n_q, len(common) - n_q)
    if plot is not None:
        from cfcore.retrieval import plot_reports

        plot_reports(
            plot, {Path(n).stem if n.endswith(".npz") else n: r for n, r in reports.items()}
        )
    return {"items": len(common), "queries": n_q, "results": results, "table": table}


def _table(results: dict[str, Any], n_q: int, n_b: int) -> list[str]:
    lines = [
        f"{n_q} query items vs {n_b} train items (shared viewers: mean Jaccard of viewer sets)"
    ]
    lines.append(
        f"{'features':<32} {'sv@1':>7} {'sv mean':>8} {'random':>7} {'lift':>6} "
        f"{'genre@1':>8} {'probe':>14}"
    )
    for name, e in results.items():
        s = e["summary"]
        probe = f"{e['probe']['metric']} {e['probe']['score']:.4f}" if "probe" in e else "-"
        genre = f"{s['genre_agreement@1']:.3f}" if "genre_agreement@1" in s else "-"
        lift = f"{s['shared_viewers_lift']:.2f}" if s.get("shared_viewers_lift") else "-"
        lines.append(
            f"{str(name)[-32:]:<32} {s['shared_viewers@1']:7.4f} "
            f"{s['shared_viewers_mean']:8.4f} {s['shared_viewers_random_mean']:7.4f} "
            f"{lift:>6} {genre:>8} {probe:>14}"
        )
        r = s["R"]
        if f"owner_viewed@{r}" in s:
            lines.append(
                f"{'':<32} owner viewed {s[f'owner_viewed@{r}']:.2f} of the top {r} "
                f"(random {s[f'owner_viewed_random@{r}']:.2f})"
            )
    return lines
