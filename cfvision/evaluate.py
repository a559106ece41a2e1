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
from cfcore.ids import parse_ids


# ----------------------------------------------------------------------------- linear probe
@dataclass
class ProbeResult:
    """A linear probe's score; ``test_scores``/``test_targets`` (the test part's decision
    values and labels, rows in ``test_rows`` order) allow paired comparisons of two probes on
    the same split (:func:`cfcore.metrics.paired_bootstrap`)."""

    metric: str
    score: float
    l2: float
    n_train: int
    n_test: int
    per_class: list[float] = field(default_factory=list)
    test_rows: np.ndarray | None = field(default=None, repr=False)
    test_scores: np.ndarray | None = field(default=None, repr=False)
    test_targets: np.ndarray | None = field(default=None, repr=False)

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
    from cfcore.metrics import average_precision, mean_average_precision

    if multilabel:
        return mean_average_precision(y, scores), average_precision(y, scores)
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
        scores = (xe @ w + b).numpy()
        return (*_probe_score(scores, y[eval_rows], multilabel), scores)

    best = max(l2_grid, key=lambda l2: run(fit_part, val_part, l2)[0])
    score, per_class, scores = run(train, test, best)
    return ProbeResult(
        "mAP" if multilabel else "accuracy",
        score,
        float(best),
        len(train),
        len(test),
        [float(v) for v in per_class],
        test,
        scores,
        y[test],
    )


# ----------------------------------------------------------------------------- comparison
FeatureSet = tuple[str, np.ndarray, np.ndarray]


def _as_feature_set(entry: Any) -> FeatureSet:
    """``(name, raw item ids, vectors)`` from a tuple or a vectors / factor-model file."""
    from cfcore.vectors import load_vectors

    if isinstance(entry, tuple) and len(entry) == 3:
        name, ids, vecs = entry
        return str(name), parse_ids(np.asarray(ids)), np.asarray(vecs, dtype=np.float32)
    vectors = load_vectors(entry)
    return str(entry), vectors.ids, vectors.vectors


def retrieval_eval(
    item_ids: Any,
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
    item_ids : array-like
        Raw ids of the rows of ``vectors`` (all among ``interactions``' items).
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

    query_mask = np.asarray(query_mask, dtype=bool)
    ids = np.asarray(item_ids)
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


def per_query_retrieval(
    item_ids: Any,
    vectors: np.ndarray,
    query_mask: np.ndarray,
    interactions: Any,
    R: int = 100,
    owners: Any = None,
) -> dict[str, np.ndarray]:
    """Each query's retrieval measures over its top ``R`` neighbours, for paired comparisons.

    Returns
    -------
    dict of str to ndarray, shape (Q,)
        ``shared_viewers``: the query's mean viewer-set Jaccard over its neighbours (the mean
        of this vector is the mean of the shared-viewer curve; NaN for queries without
        viewers); with ``owners`` (a mapping item id → user id, or a CSV path),
        ``owner_viewed``: how many of the ``R`` neighbours the query's owner viewed (NaN for
        queries without a known owner). Compare two feature sets with
        :func:`cfcore.metrics.paired_bootstrap` over the queries where both are finite.
    """
    from cfcore.ids import id_positions
    from cfcore.neighbors import NeighborIndex
    from cfcore.retrieval import owner_positions, owner_viewed_counts, pair_jaccard, read_owners

    query_mask = np.asarray(query_mask, dtype=bool)
    rows = id_positions(interactions.item_ids, item_ids, unknown="item not in the interactions:")
    qi, bi = np.flatnonzero(query_mask), np.flatnonzero(~query_mask)
    R = min(R, len(bi))  # noqa: N806 - the paper's name
    nn = NeighborIndex(np.asarray(vectors[bi], dtype=np.float32)).search(
        np.asarray(vectors[qi], dtype=np.float32), k=R, exclude_self=False
    )
    nrows = rows[bi][nn.positions]
    jac = pair_jaccard(interactions.item_users(), np.repeat(rows[qi], R), nrows.ravel())
    out = {"shared_viewers": jac.reshape(len(qi), R).mean(axis=1)}
    if owners is not None:
        owners = owners if isinstance(owners, dict) else read_owners(owners)
        owner_rows, _ = owner_positions(owners, np.asarray(item_ids)[qi], interactions)
        has = owner_rows >= 0
        counts = np.full(len(qi), np.nan)
        hits = owner_viewed_counts(interactions.user_items, owner_rows[has], nrows[has])
        counts[has] = hits.sum(axis=1)
        out["owner_viewed"] = counts
    return out


def per_query_shared_viewers(
    item_ids: Any,
    vectors: np.ndarray,
    query_mask: np.ndarray,
    interactions: Any,
    R: int = 100,
) -> np.ndarray:
    """Each query's mean viewer-set Jaccard over its top ``R`` neighbours, shape (Q,)
    (:func:`per_query_retrieval`'s ``shared_viewers``)."""
    return per_query_retrieval(item_ids, vectors, query_mask, interactions, R)["shared_viewers"]


def compare_to_baseline(
    feature_sets: Sequence[FeatureSet],
    baseline: str,
    interactions: Any,
    test_items: Any,
    R: int = 100,
    owners: Any = None,
    probes: dict[str, ProbeResult] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Paired bootstraps of every feature set against ``baseline`` (e.g. random init).

    Per query (the same queries and searched items for every set: those in every set), the
    difference of the shared-viewer mean and, with ``owners``, of the owner-viewed count
    (:func:`per_query_retrieval`); and over the probe's test items, the difference of the
    linear probe's score (``probes`` from :func:`compare_features`, same split for every set).

    Returns
    -------
    dict
        ``{set name: {measure: {"diff", "low", "high", "p", "n"}}}`` — the mean difference,
        its 95% bootstrap interval, the two-sided p-value and the number of paired units
        (:func:`cfcore.metrics.paired_bootstrap`).
    """
    from cfcore.ids import id_positions
    from cfcore.metrics import mean_average_precision, paired_bootstrap

    sets = {name: (parse_ids(ids), vecs) for name, ids, vecs in map(_as_feature_set, feature_sets)}
    if baseline not in sets:
        raise InputError(f"baseline {baseline!r} is not one of {', '.join(sets)}")
    common = sets[baseline][0]
    keep = id_positions(interactions.item_ids, common) >= 0
    for ids, _ in sets.values():
        keep &= id_positions(ids, common) >= 0
    common = common[keep]
    query = id_positions(np.asarray(test_items), common) >= 0
    if owners is not None and not isinstance(owners, dict):
        from cfcore.retrieval import read_owners

        owners = read_owners(owners)
    measures = {
        name: per_query_retrieval(
            common, vecs[id_positions(ids, common)], query, interactions, R, owners
        )
        for name, (ids, vecs) in sets.items()
    }

    def entry(result: Any, n: int) -> dict[str, Any]:
        diff, low, high, p = (float(v) for v in result)
        return {"diff": diff, "low": low, "high": high, "p": p, "n": n}

    out: dict[str, dict[str, Any]] = {}
    for name in sets:
        if name == baseline:
            continue
        out[name] = {}
        for measure, values in measures[name].items():
            a, b = values, measures[baseline][measure]
            both = np.isfinite(a) & np.isfinite(b)
            if both.sum() >= 2:
                r = paired_bootstrap(np.mean, a[both], b[both], n_boot=n_boot, seed=seed)
                out[name][measure] = entry(r, int(both.sum()))
        if probes and name in probes and baseline in probes:
            pa, pb = probes[name], probes[baseline]
            if pa.metric == "mAP":
                r = paired_bootstrap(
                    mean_average_precision, pa.test_scores, pb.test_scores, pa.test_targets,
                    n_boot=n_boot, seed=seed,
                )  # fmt: skip
            else:
                hit_a = (pa.test_scores.argmax(axis=1) == pa.test_targets).astype(float)
                hit_b = (pb.test_scores.argmax(axis=1) == pb.test_targets).astype(float)
                r = paired_bootstrap(np.mean, hit_a, hit_b, n_boot=n_boot, seed=seed)
            out[name][f"probe_{pa.metric}"] = entry(r, int(pa.n_test))
    return out


def compare_features(
    feature_sets: Sequence[Any],
    interactions: Any,
    test_items: Any = None,
    test_fraction: float = 0.05,
    R: int = 100,
    labels: Any = None,
    owners: Any = None,
    seed: int = 0,
    plot: Any = None,
    data_dir: Any = None,
) -> dict[str, Any]:
    """Score several feature sets on the same items, query split and probe split.

    Parameters
    ----------
    feature_sets : sequence
        Paths of item-vectors / factor-model files, or ``(name, item_ids, vectors)`` tuples.
    interactions : cfcore.Interactions
        Who viewed what (the viewer sets of the shared-viewer curve).
    test_items : array-like, optional
        Raw ids of the query items; default a seeded random ``test_fraction`` of the common
        items.
    R : int
        Neighbours per query.
    labels : str, path or :class:`cfvision.data.Labels`, optional
        Labels for the linear probe and genre agreement: anything
        :func:`cfvision.data.load_labels` reads — e.g. ``"ml-100k"`` for its genres (items
        without a label are left out of the probe).
    owners : path, optional
        CSV ``item_id,owner`` for the owner-viewed count (:func:`cfcore.retrieval.read_owners`).
    plot : path, optional
        PNG of the curves and the random baseline.
    data_dir : path, optional
        Data directory for a dataset name in ``labels``.

    Returns
    -------
    dict
        ``items``, ``queries``, per-set ``results`` (retrieval summary, curve and probe), a
        printable ``table`` (list of lines) and the :class:`ProbeResult` of each set
        (``probes``; the same split for every set, so two can be compared pairwise).
    """
    from cfcore.ids import id_positions
    from cfcore.retrieval import read_owners
    from cfvision.data import Labels, load_labels

    sets = [_as_feature_set(e) for e in feature_sets]
    common = sets[0][1]
    keep = id_positions(interactions.item_ids, common) >= 0
    for _name, ids, _ in sets[1:]:
        keep &= id_positions(ids, common) >= 0
    common = common[keep]
    if not len(common):
        raise InputError(
            "no item is in every feature file and in the interactions: "
            "do the ids come from the same dataset?"
        )
    if test_items is not None:
        query = id_positions(np.asarray(test_items), common) >= 0
        if not query.any():
            raise InputError("none of the --test-items has features and interactions")
    else:
        rng = np.random.default_rng(seed)
        n_q = max(1, int(round(len(common) * test_fraction)))
        query = np.zeros(len(common), dtype=bool)
        query[rng.choice(len(common), n_q, replace=False)] = True
    owner_map = read_owners(owners) if owners is not None else None
    lab: Labels | None = None
    genres = None
    if labels is not None:
        lab = labels if isinstance(labels, Labels) else load_labels(labels, data_dir)
        rows = id_positions(lab.item_ids, common)
        probe = np.flatnonzero(rows >= 0)
        if len(probe) < 10:
            raise InputError(
                f"only {len(probe)} items have both features and a label in "
                f"{lab.source}: do the ids come from the same dataset?"
            )
        lab = lab.select(rows[probe])
        genres = (lab.item_ids, lab.one_hot())
    results: dict[str, Any] = {}
    reports = {}
    probes: dict[str, ProbeResult] = {}
    for name, ids, vecs in sets:
        x = vecs[id_positions(ids, common)]
        rep = retrieval_eval(common, x, query, interactions, R, owner_map, genres, seed)
        reports[name] = rep
        entry: dict[str, Any] = rep.to_dict()
        if lab is not None:
            probes[name] = linear_probe(x[probe], lab.targets, lab.multilabel, seed=seed)
            entry["probe"] = probes[name].summary()
        results[name] = entry
    n_q = int(query.sum())
    table = _table(results, n_q, len(common) - n_q)
    if plot is not None:
        from cfcore.retrieval import plot_reports

        plot_reports(
            plot, {Path(n).stem if n.endswith(".npz") else n: r for n, r in reports.items()}
        )
    return {
        "items": len(common),
        "queries": n_q,
        "results": results,
        "table": table,
        "probes": probes,
    }


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
