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

The neighbour search and the retrieval measures come from ``cfcore.neighbors`` and
``cfcore.retrieval`` when that module offers them; otherwise an exact inner-product search
(faiss ``IndexFlatIP``) and the NumPy measures below are used — the same definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

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


# ----------------------------------------------------------------------------- neighbours
def nearest_neighbors(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine neighbours of each query row among the ``base`` rows.

    Returns
    -------
    indices : int64 (Q, k) rows of ``base``, best first; scores : float32 (Q, k) cosines.
    """
    if k > len(base):
        raise InputError(f"k = {k} neighbours requested but only {len(base)} train items")
    q = _unit(queries)
    b = _unit(base)
    try:
        from cfcore.neighbors import NeighborIndex  # the cluster helper's index, when present

        index = NeighborIndex(metric="cosine").fit(b)
        scores, idx = index.search(q, k)
        return np.asarray(idx, dtype=np.int64), np.asarray(scores, dtype=np.float32)
    except (ImportError, AttributeError, TypeError):
        pass
    import faiss

    index = faiss.IndexFlatIP(b.shape[1])
    index.add(b)
    scores, idx = index.search(q, k)
    return idx.astype(np.int64), scores.astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


# ----------------------------------------------------------------------------- retrieval
def _binary_rows(item_users: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    m = item_users[rows].tocsr()
    m.data = np.ones_like(m.data, dtype=np.float32)
    return m


def shared_viewer_curve(item_users: sp.csr_matrix, query_rows: np.ndarray,
                        neighbor_rows: np.ndarray) -> np.ndarray:
    """Mean Jaccard similarity of viewer sets at each rank (Fang §4.3, Fig. 5).

    Parameters
    ----------
    item_users : csr (n_items, n_users)
        Who viewed each item (any non-zero counts as a view).
    query_rows : int (Q,)
        Rows of the query items.
    neighbor_rows : int (Q, R)
        Rows of each query's neighbours, best first.

    Returns
    -------
    ndarray (R,)
        ``curve[r] = mean_q |V(q) ∩ V(n_qr)| / |V(q) ∪ V(n_qr)|`` (0 when both sets are empty).
    """
    q = _binary_rows(item_users, query_rows)
    flat = neighbor_rows.reshape(-1)
    uniq, inverse = np.unique(flat, return_inverse=True)
    n = _binary_rows(item_users, uniq)
    inter = (q @ n.T).toarray()  # (Q, |uniq|)
    q_size = np.asarray(q.sum(axis=1)).ravel()
    n_size = np.asarray(n.sum(axis=1)).ravel()
    cols = inverse.reshape(neighbor_rows.shape)
    i = np.take_along_axis(inter, cols, axis=1)
    union = q_size[:, None] + n_size[cols] - i
    jac = np.divide(i, union, out=np.zeros_like(i, dtype=np.float64), where=union > 0)
    return jac.mean(axis=0)


def owner_viewed_count(user_items: sp.csr_matrix, owner_rows: np.ndarray,
                       neighbor_rows: np.ndarray) -> float:
    """Mean over queries of how many neighbours the query's owner viewed (Fang §4.3).

    ``owner_rows[q]`` is the user row of query q's owner (``-1``: no owner, query skipped).
    """
    keep = owner_rows >= 0
    if not keep.any():
        return float("nan")
    ui = user_items.tocsr()
    counts = [np.isin(neighbor_rows[q], ui.indices[ui.indptr[u]:ui.indptr[u + 1]]).sum()
              for q, u in zip(np.flatnonzero(keep), owner_rows[keep], strict=True)]
    return float(np.mean(counts))


@dataclass
class RetrievalResult:
    """Shared-viewer curve of one feature set, its random baseline and owner counts."""

    curve: np.ndarray
    baseline: np.ndarray
    n_queries: int
    n_base: int
    owner_viewed: float = float("nan")
    owner_viewed_random: float = float("nan")

    def summary(self) -> dict[str, Any]:
        r = len(self.curve)
        out = {
            "queries": self.n_queries, "base_items": self.n_base, "R": r,
            "shared_viewers@1": float(self.curve[0]),
            "shared_viewers@10": float(self.curve[: min(10, r)].mean()),
            f"shared_viewers@{r}": float(self.curve.mean()),
            "random_baseline": float(self.baseline.mean()),
        }
        if np.isfinite(self.owner_viewed):
            out["owner_viewed"] = self.owner_viewed
            out["owner_viewed_random"] = self.owner_viewed_random
        return out


def retrieval_eval(vectors: np.ndarray, item_rows: np.ndarray, item_users: sp.csr_matrix,
                   query_mask: np.ndarray, R: int = 100, owner_rows: np.ndarray | None = None,
                   user_items: sp.csr_matrix | None = None, seed: int = 0) -> RetrievalResult:
    """Test items (``query_mask``) query the other items by cosine similarity of ``vectors``.

    Parameters
    ----------
    vectors : (n, d)
        Features of n items.
    item_rows : int (n,)
        Row of each item in ``item_users``.
    item_users : csr (n_items_total, n_users)
    query_mask : bool (n,)
        True for test (query) items; the rest is the searchable train set.
    R : int
        Ranks of the curve (paper: 100).
    owner_rows : int (n,), optional
        User row of each item's owner (−1: none), with ``user_items`` for the owner count.
    seed : int
        Seed of the random-pairs baseline (uniform train items per query, Fang §4.3).
    """
    query_mask = np.asarray(query_mask, dtype=bool)
    qi, bi = np.flatnonzero(query_mask), np.flatnonzero(~query_mask)
    if len(qi) == 0 or len(bi) == 0:
        raise InputError(f"need query and train items, got {len(qi)} and {len(bi)}")
    R = min(R, len(bi))
    nn_idx, _ = nearest_neighbors(vectors[qi], vectors[bi], R)
    nn_rows = item_rows[bi][nn_idx]
    q_rows = item_rows[qi]
    curve = shared_viewer_curve(item_users, q_rows, nn_rows)
    rng = np.random.default_rng(seed)
    rand_rows = item_rows[bi][rng.integers(0, len(bi), size=(len(qi), R))]
    baseline = shared_viewer_curve(item_users, q_rows, rand_rows)
    res = RetrievalResult(curve, baseline, len(qi), len(bi))
    if owner_rows is not None and user_items is not None:
        res.owner_viewed = owner_viewed_count(user_items, owner_rows[qi], nn_rows)
        res.owner_viewed_random = owner_viewed_count(user_items, owner_rows[qi], rand_rows)
    return res


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
        return {"metric": self.metric, "score": self.score, "l2": self.l2,
                "train": self.n_train, "test": self.n_test}


def _fit_logistic(x, y, multilabel: bool, l2: float, iters: int = 200):
    import torch

    torch.manual_seed(0)
    n_out = y.shape[1] if multilabel else int(y.max()) + 1
    w = torch.zeros(x.shape[1], n_out, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_out, dtype=torch.float64, requires_grad=True)
    loss_fn = torch.nn.BCEWithLogitsLoss() if multilabel else torch.nn.CrossEntropyLoss()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")

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


def linear_probe(features: np.ndarray, targets: np.ndarray, multilabel: bool | None = None,
                 test_fraction: float = 0.2, seed: int = 0,
                 l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1)) -> ProbeResult:
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
    return ProbeResult("mAP" if multilabel else "accuracy", score, float(best), len(train),
                       len(test), [float(v) for v in per_class])


# ----------------------------------------------------------------------------- comparison
FeatureSet = tuple[str, Sequence[str], np.ndarray]


def _as_feature_set(entry: Any) -> FeatureSet:
    if isinstance(entry, tuple) and len(entry) == 3:
        name, ids, vecs = entry
        return str(name), [str(i) for i in ids], np.asarray(vecs, dtype=np.float32)
    from cfvision.extract import load_item_vectors

    ids, vecs, _ = load_item_vectors(entry)
    return str(entry), ids, vecs


def _owner_rows(path: Any, items: Sequence[str], interactions: Any) -> np.ndarray:
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
    users = {str(u): r for r, u in enumerate(interactions.user_ids.tolist())}
    return np.asarray([users.get(owner.get(i, "\0"), -1) for i in items], dtype=np.int64)


def compare_features(feature_sets: Sequence[Any], interactions: Any,
                     test_items: Sequence[str] | None = None, test_fraction: float = 0.05,
                     R: int = 100, labels: Any = None, owners: Any = None, seed: int = 0,
                     plot: Any = None) -> dict[str, Any]:
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
        raise InputError("no item is in every feature file and in the interactions: "
                         "do the ids come from the same dataset?")
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
    item_rows = np.asarray([inter_cols[i] for i in common], dtype=np.int64)
    item_users = interactions.item_users()
    owner_rows = _owner_rows(owners, common, interactions) if owners is not None else None
    lab: Labels | None = None
    if labels is not None:
        lab = labels if isinstance(labels, Labels) else load_labels(labels)
        have = set(lab.item_ids)
        probe_items = [i for i in common if i in have]
        if len(probe_items) < 10:
            raise InputError(f"only {len(probe_items)} items have both features and a label in "
                             f"{lab.source}: do the ids come from the same dataset?")
        lab = lab.subset(probe_items)
    results: dict[str, Any] = {}
    curves = {}
    baseline = None
    for name, ids, vecs in sets:
        pos = {i: r for r, i in enumerate(ids)}
        x = vecs[[pos[i] for i in common]]
        ret = retrieval_eval(x, item_rows, item_users, query, R, owner_rows,
                             interactions.user_items if owner_rows is not None else None, seed)
        entry: dict[str, Any] = {**ret.summary(), "curve": ret.curve.tolist()}
        curves[name], baseline = ret.curve, ret.baseline
        if lab is not None:
            xp = x[[common.index(i) for i in lab.item_ids]] if len(lab) != len(common) else x
            entry["probe"] = linear_probe(xp, lab.targets, lab.multilabel, seed=seed).summary()
        results[name] = entry
    table = _table(results, int(query.sum()), len(common) - int(query.sum()))
    if plot is not None:
        _plot_curves(plot, curves, baseline)
    return {"items": len(common), "queries": int(query.sum()), "R": min(R, len(common) - int(query.sum())),
            "results": results, "table": table}


def _table(results: dict[str, Any], n_q: int, n_b: int) -> list[str]:
    lines = [f"{n_q} query items vs {n_b} train items"]
    head = f"{'features':<40} {'sv@1':>7} {'sv@10':>7} {'sv@R':>7} {'random':>7} {'probe':>12}"
    lines.append(head)
    for name, e in results.items():
        r = e["R"]
        probe = f"{e['probe']['metric']} {e['probe']['score']:.4f}" if "probe" in e else "-"
        lines.append(f"{name[-40:]:<40} {e['shared_viewers@1']:7.4f} {e['shared_viewers@10']:7.4f} "
                     f"{e[f'shared_viewers@{r}']:7.4f} {e['random_baseline']:7.4f} {probe:>12}")
        if "owner_viewed" in e:
            lines.append(f"{'':<40} owner viewed {e['owner_viewed']:.2f} of top-{r} "
                         f"(random {e['owner_viewed_random']:.2f})")
    return lines


def _plot_curves(path: Any, curves: dict[str, np.ndarray], baseline: np.ndarray | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cfcore.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=str(name)[-40:])
    if baseline is not None:
        ax.axhline(float(baseline.mean()), color="grey", linestyle="--", label="random pairs")
    ax.set_xlabel("neighbour rank r")
    ax.set_ylabel("shared viewers (Jaccard)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
