"""Retrieval measures of Fang et al. 2015, §4.3 (their Figure 5), plus genre agreement.

Given who viewed what (an :class:`~cfcore.interactions.Interactions`), optionally who owns
(uploaded) each item, and ranked neighbour lists (query item → neighbours, e.g. from
:class:`~cfcore.neighbors.NeighborIndex`):

* **shared-viewer curve** — for each rank r ≤ R, the mean over queries q of the Jaccard index
  of the viewer sets, J_r = mean_q |V(q) ∩ V(nn_r(q))| / |V(q) ∪ V(nn_r(q))|;
* **owner-viewed count** — the mean over queries of how many of the top-R neighbours were
  viewed by the query's owner (reported as a curve over r: the count among the top r);
* **random baseline** for both: the same measures for random pairs — each query paired with
  R items drawn uniformly (with replacement across ranks, never the query itself) from the
  candidate items, seeded (Fang §4.3: "randomly sample a large number of image pairs");
* **genre agreement** (not in the paper; MovieLens has genres, not owners) — the fraction of
  neighbours at rank r that share at least one label with the query, and the random baseline.

Viewer-set intersections are computed for all (query, neighbour) pairs at once with sparse
row products over the items × users CSR (|A ∩ B| = nnz of the element-wise product of two
binary rows), in chunks so memory stays bounded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore.errors import InputError
from cfcore.interactions import Interactions, binarize
from cfcore.io import atomic_write_text

#: pairs per chunk of the sparse pair-intersection (bounds the temporary product's size)
_CHUNK_PAIRS = 200_000


# --------------------------------------------------------------------------- low level
def pair_intersections(rows: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|S(a_p) ∩ S(b_p)| for each pair p, where S(i) is the column set of row i of ``rows``.

    Parameters
    ----------
    rows : csr_matrix, shape (n, m)
        Binary sets as rows (e.g. items × users: the viewers of each item).
    a, b : ndarray of int, shape (P,)
        Row indices of the pairs.

    Returns
    -------
    ndarray of int64, shape (P,)
    """
    a = np.asarray(a, dtype=np.int64).ravel()
    b = np.asarray(b, dtype=np.int64).ravel()
    out = np.empty(len(a), dtype=np.int64)
    for start in range(0, len(a), _CHUNK_PAIRS):
        stop = min(start + _CHUNK_PAIRS, len(a))
        prod = rows[a[start:stop]].multiply(rows[b[start:stop]])
        out[start:stop] = sp.csr_matrix(prod).getnnz(axis=1)
    return out


def pair_jaccard(rows: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard index |S(a) ∩ S(b)| / |S(a) ∪ S(b)| of row sets, pair by pair (float64).

    A pair of two empty sets has no defined Jaccard index and gives NaN; callers decide.
    """
    sizes = np.diff(rows.indptr).astype(np.int64)
    inter = pair_intersections(rows, a, b)
    union = sizes[np.asarray(a, dtype=np.int64)] + sizes[np.asarray(b, dtype=np.int64)] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def shared_viewer_curve(
    item_users: sp.csr_matrix, query_pos: np.ndarray, neighbor_pos: np.ndarray
) -> np.ndarray:
    """Fang §4.3 (1): mean Jaccard of viewer sets at each rank.

    Parameters
    ----------
    item_users : csr_matrix, shape (n_items, n_users)
        Binary; row i lists the viewers of item i.
    query_pos : ndarray of int, shape (Q,)
        Row of each query item.
    neighbor_pos : ndarray of int, shape (Q, R)
        Rows of the ranked neighbours.

    Returns
    -------
    ndarray of float64, shape (R,)
        J_r = (1/Q) Σ_q |V(q) ∩ V(nn_r(q))| / |V(q) ∪ V(nn_r(q))|.
    """
    q, r = neighbor_pos.shape
    jac = pair_jaccard(item_users, np.repeat(query_pos, r), neighbor_pos.ravel()).reshape(q, r)
    if np.isnan(jac).any():
        raise InputError("shared-viewer curve: a query item has no viewers (Jaccard undefined)")
    return jac.mean(axis=0)


def owner_viewed_counts(
    user_items: sp.csr_matrix, owner_rows: np.ndarray, neighbor_pos: np.ndarray
) -> np.ndarray:
    """Fang §4.3 (2): for each query, how many of its ranked neighbours its owner viewed.

    Parameters
    ----------
    user_items : csr_matrix, shape (n_users, n_items)
        Binary views.
    owner_rows : ndarray of int, shape (Q,)
        Row of each query's owner.
    neighbor_pos : ndarray of int, shape (Q, R)

    Returns
    -------
    ndarray of float64, shape (Q, R)
        1 where the owner viewed the neighbour at that rank, else 0; its cumulative sum along
        a row is the count within the top r.
    """
    q, r = neighbor_pos.shape
    rows = np.repeat(np.asarray(owner_rows, dtype=np.int64), r)
    hit = pair_member(user_items, rows, neighbor_pos.ravel())
    return hit.reshape(q, r).astype(np.float64)


def pair_member(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether ``matrix[rows[p], cols[p]]`` is stored and non-zero, pair by pair (bool).

    Uses scipy's per-entry CSR lookup (binary search in each row), in chunks, so memory stays
    proportional to the number of pairs, not to the matrix.
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    cols = np.asarray(cols, dtype=np.int64).ravel()
    out = np.zeros(len(rows), dtype=bool)
    if matrix.nnz == 0 or len(rows) == 0:
        return out
    for start in range(0, len(rows), _CHUNK_PAIRS):
        stop = min(start + _CHUNK_PAIRS, len(rows))
        out[start:stop] = np.asarray(matrix[rows[start:stop], cols[start:stop]]).ravel() != 0
    return out


# --------------------------------------------------------------------------- report
@dataclass
class RetrievalReport:
    """Retrieval measures of one neighbour list, with the random-pairs baseline.

    Attributes
    ----------
    ranks : ndarray, shape (R,)
        1..R.
    shared_viewers, shared_viewers_random : ndarray, shape (R,)
        Mean Jaccard of viewer sets at each rank, for the neighbours and for random pairs.
    owner_viewed, owner_viewed_random : ndarray, shape (R,) or None
        Mean number of the top-r neighbours (random items) viewed by the query's owner.
    genre_agreement, genre_agreement_random : ndarray, shape (R,) or None
        Fraction of rank-r neighbours (random items) sharing ≥ 1 label with the query.
    genre_jaccard, genre_jaccard_random : ndarray, shape (R,) or None
        Mean Jaccard of the label sets at each rank.
    n_queries : int
    meta : dict
        Seed, counts of skipped queries, sources.
    """

    ranks: np.ndarray
    shared_viewers: np.ndarray
    shared_viewers_random: np.ndarray
    n_queries: int
    owner_viewed: np.ndarray | None = None
    owner_viewed_random: np.ndarray | None = None
    genre_agreement: np.ndarray | None = None
    genre_agreement_random: np.ndarray | None = None
    genre_jaccard: np.ndarray | None = None
    genre_jaccard_random: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def R(self) -> int:  # noqa: N802 - the paper's name
        return int(len(self.ranks))

    def summary(self) -> dict[str, float | int | None]:
        """Headline numbers: means over ranks, at rank 1 and at R, lift over random."""
        sv, rnd = self.shared_viewers, self.shared_viewers_random
        out: dict[str, float | int | None] = {
            "queries": self.n_queries,
            "R": self.R,
            "shared_viewers@1": float(sv[0]),
            f"shared_viewers@{self.R}": float(sv[-1]),
            "shared_viewers_mean": float(sv.mean()),
            "shared_viewers_random_mean": float(rnd.mean()),
            "shared_viewers_lift": float(sv.mean() / rnd.mean()) if rnd.mean() > 0 else None,
        }
        if self.owner_viewed is not None and self.owner_viewed_random is not None:
            out[f"owner_viewed@{self.R}"] = float(self.owner_viewed[-1])
            out[f"owner_viewed_random@{self.R}"] = float(self.owner_viewed_random[-1])
        if self.genre_agreement is not None and self.genre_agreement_random is not None:
            out["genre_agreement_mean"] = float(self.genre_agreement.mean())
            out["genre_agreement_random_mean"] = float(self.genre_agreement_random.mean())
            out["genre_agreement@1"] = float(self.genre_agreement[0])
        if self.genre_jaccard is not None and self.genre_jaccard_random is not None:
            out["genre_jaccard_mean"] = float(self.genre_jaccard.mean())
            out["genre_jaccard_random_mean"] = float(self.genre_jaccard_random.mean())
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the summary, every curve as a list, and meta."""
        curves = {}
        for name in (
            "shared_viewers",
            "shared_viewers_random",
            "owner_viewed",
            "owner_viewed_random",
            "genre_agreement",
            "genre_agreement_random",
            "genre_jaccard",
            "genre_jaccard_random",
        ):
            value = getattr(self, name)
            if value is not None:
                curves[name] = [round(float(v), 8) for v in value]
        return {"summary": self.summary(), "curves": curves, "meta": self.meta}

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    def plot(self, path: str | os.PathLike[str], name: str = "neighbours") -> Path:
        """PNG of the curves against the random baseline (as Fang et al. Fig. 5)."""
        return plot_reports(path, {name: self})


def plot_reports(path: str | os.PathLike[str], reports: Mapping[str, RetrievalReport]) -> Path:
    """One PNG comparing several neighbour lists (e.g. learned vs ImageNet features).

    Panels: shared viewers (Jaccard) vs rank; owner-viewed count in the top r (when owners
    were given); genre agreement vs rank (when genres were given). The random-pairs baseline
    of the first report is the dashed black line, as in the paper.
    """
    from cfcore.plots import draw_lines, new_figure, save_figure

    if not reports:
        raise InputError("plot: no reports to draw")
    first = next(iter(reports.values()))
    panels = ["shared"]
    if all(r.owner_viewed is not None for r in reports.values()):
        panels.append("owner")
    if all(r.genre_agreement is not None for r in reports.values()):
        panels.append("genre")
    fig, axes = new_figure(ncols=len(panels))
    axes = np.atleast_1d(axes)
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "shared":
            draw_lines(
                ax,
                {n: (r.ranks, r.shared_viewers) for n, r in reports.items()},
                hlines={"random pairs": float(first.shared_viewers_random.mean())},
                xlabel="rank of neighbour",
                ylabel="shared viewers (Jaccard)",
                title="(a) common viewers of query and NN",
            )
        elif panel == "owner":
            draw_lines(
                ax,
                {n: (r.ranks, r.owner_viewed) for n, r in reports.items()},
                baselines={"random pairs": (first.ranks, first.owner_viewed_random)},
                xlabel="top r neighbours",
                ylabel="viewed by the query's owner",
                title="(b) NNs viewed by the owner",
            )
        else:
            draw_lines(
                ax,
                {n: (r.ranks, r.genre_agreement) for n, r in reports.items()},
                hlines={"random pairs": float(first.genre_agreement_random.mean())},
                xlabel="rank of neighbour",
                ylabel="share ≥ 1 genre",
                title="genre agreement",
            )
    return save_figure(fig, path)


def _as_interactions(interactions: Any) -> Interactions:
    if isinstance(interactions, Interactions):
        return interactions
    if sp.issparse(interactions):
        return Interactions(interactions)
    raise InputError(
        f"interactions: expected an Interactions or a users × items sparse matrix, got {type(interactions).__name__}"
    )


def _positions_of(ids: np.ndarray, inter: Interactions, what: str) -> np.ndarray:
    """Columns of raw item ids in ``inter``; every id must be there
    (:func:`cfcore.ids.require_overlap`, the check ``cfcore evaluate`` uses too)."""
    from cfcore.ids import id_positions, require_overlap

    ids = np.asarray(ids)
    at = id_positions(inter.item_ids, ids.ravel())
    unknown = ids.ravel()[at < 0]
    require_overlap(
        len(at) - len(unknown),
        len(at),
        f"{what} among the interactions' items",
        1.0,
        unknown[0].item() if len(unknown) else None,
    )
    return at.reshape(ids.shape)


def _random_pairs(query_pos: np.ndarray, candidates: np.ndarray, r: int, seed: int) -> np.ndarray:
    """R candidates per query, uniform with replacement across ranks, never the query itself.

    The random-pairs baseline of Fang et al. §4.3; seeded with numpy's PCG64 (``seed``).
    """
    rng = np.random.default_rng(seed)
    if len(candidates) < 2:
        raise InputError("random baseline: need at least 2 candidate items")
    out = candidates[rng.integers(0, len(candidates), size=(len(query_pos), r))]
    clash = out == query_pos[:, None]
    while clash.any():
        out[clash] = candidates[rng.integers(0, len(candidates), size=int(clash.sum()))]
        clash = out == query_pos[:, None]
    return out


def _label_matrix(genres: Any, inter: Interactions) -> tuple[sp.csr_matrix, np.ndarray]:
    """Items × labels binary CSR aligned with ``inter``'s items, and which items have labels."""
    from cfcore.ids import id_positions

    if hasattr(genres, "item_ids") and hasattr(genres, "matrix"):
        g_ids, g_lab = np.asarray(genres.item_ids), genres.matrix
    elif isinstance(genres, tuple) and len(genres) == 2:
        g_ids, g_lab = np.asarray(genres[0]), genres[1]
    else:
        raise InputError(
            "genres: expected cfcore.labels.ItemLabels (e.g. read_labels('ml-100k')) "
            "or a tuple (item_ids, labels)"
        )
    g_lab = binarize(g_lab)
    if g_lab.shape[0] != len(g_ids):
        raise InputError(f"genres: {len(g_ids)} ids for {g_lab.shape[0]} label rows")
    rows = id_positions(g_ids, inter.item_ids)
    has = rows >= 0
    if not has.any():
        raise InputError("genres: none of the interactions' item ids has labels")
    empty = sp.csr_matrix((1, g_lab.shape[1]), dtype=np.float32)
    aligned = sp.vstack([g_lab, empty]).tocsr()[np.where(has, rows, g_lab.shape[0])]
    has &= np.diff(aligned.indptr) > 0
    return binarize(aligned), has


def read_owners(path: str | os.PathLike[str]) -> dict[str, str]:
    """Owner (uploader, a user id) of each item: a CSV or TSV ``item_id,owner``.

    A first line naming the columns (``item_id``/``item``/``id``…) is skipped. Ids are kept
    as text; :func:`retrieval_report` matches them to integer or string ids alike.

    Raises
    ------
    InputError
        No such file, a row without two fields (naming the line), an item listed twice with
        different owners, or no row at all.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise InputError(f"owners file {path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    owners: dict[str, str] = {}
    for lineno, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1):
        if not row or not "".join(row).strip():
            continue
        item = row[0].strip()
        if lineno == 1 and item.lower() in ("item_id", "itemid", "item", "id", "movieid"):
            continue
        if len(row) < 2 or not row[1].strip():
            raise InputError(f"{path}:{lineno}: expected item_id,owner, got {row!r}")
        owner = row[1].strip()
        if owners.setdefault(item, owner) != owner:
            raise InputError(
                f"{path}:{lineno}: item {item!r} has two owners ({owners[item]}, {owner})"
            )
    if not owners:
        raise InputError(f"{path}: no owners in the file")
    return owners


def owner_positions(
    owners: Mapping[Any, Any], query_ids: np.ndarray, interactions: Interactions
) -> tuple[np.ndarray, int]:
    """Row of each query's owner among the users of ``interactions`` (-1: no owner, or an
    owner who is not a user), and how many owners are not users."""
    user_ids = interactions.user_ids
    upos = {key: i for i, key in enumerate(user_ids.tolist())}
    conv = int if user_ids.dtype.kind in "iu" else str
    rows = np.full(len(query_ids), -1, dtype=np.int64)
    n_unknown = 0
    by_id = {str(key): value for key, value in owners.items()}
    for j, qid in enumerate(np.asarray(query_ids).tolist()):
        owner = by_id.get(str(qid))
        if owner is None:
            continue
        try:
            rows[j] = upos.get(conv(owner), -1)
        except ValueError:
            rows[j] = -1
        n_unknown += rows[j] < 0
    return rows, int(n_unknown)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counts = mask.sum(axis=0)
    return np.where(
        counts > 0, np.where(mask, values, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan
    )


def retrieval_report(
    neighbors: Any,
    interactions: Any,
    R: int | None = 100,  # noqa: N803 - the paper's name
    *,
    owners: Mapping[Any, Any] | None = None,
    genres: Any = None,
    candidates: Any = None,
    seed: int = 0,
    on_empty: str = "error",
) -> RetrievalReport:
    """Fang et al. §4.3 retrieval measures of a neighbour list, against random pairs.

    Parameters
    ----------
    neighbors : Neighbors or path
        Ranked neighbours (``query_ids``, ``neighbor_ids`` Q × k), best first.
    interactions : Interactions or csr_matrix
        Who viewed what; its item ids must include every query and neighbour id.
    R : int, optional
        Ranks to evaluate (paper: 100); ``None`` = every column of ``neighbors``.
    owners : mapping of item id → user id, optional
        The owner (uploader) of each query item; enables the owner-viewed count. Queries
        without an owner, or whose owner is not among the users, are left out of it.
    genres : ItemLabels or (item_ids, labels), optional
        Multi-label item labels (e.g. ``cfcore.labels.read_labels("ml-100k")``); enables
        genre agreement. Pairs where either item has no label are left out.
    candidates : array-like of item ids, optional
        Items the random baseline draws from (default: every item of ``interactions``). Pass
        the searched (train) items when test items query train items.
    seed : int
        Seed of the random pairs.
    on_empty : {"error", "skip"}
        What to do with query items that have no viewers (their Jaccard is undefined).

    Returns
    -------
    RetrievalReport
    """
    from cfcore.neighbors import Neighbors

    if isinstance(neighbors, (str, os.PathLike)):
        neighbors = Neighbors.load(neighbors)
    if not isinstance(neighbors, Neighbors):
        raise InputError(
            f"neighbors: expected a Neighbors or a path, got {type(neighbors).__name__}"
        )
    if on_empty not in ("error", "skip"):
        raise InputError(f"on_empty: expected 'error' or 'skip', got {on_empty!r}")
    inter = _as_interactions(interactions)
    k = neighbors.k
    R = k if R is None else int(R)  # noqa: N806
    if not 1 <= R <= k:
        raise InputError(f"R: must be between 1 and the {k} neighbours per query, got {R}")
    if len(neighbors) == 0:
        raise InputError("neighbors: no queries")
    qpos = _positions_of(neighbors.query_ids, inter, "neighbors: query ids")
    npos = _positions_of(neighbors.neighbor_ids[:, :R], inter, "neighbors: neighbour ids")
    item_users = inter.item_users()
    n_viewers = np.diff(item_users.indptr)
    empty_q = n_viewers[qpos] == 0
    skipped = int(empty_q.sum())
    if skipped:
        if on_empty == "error":
            first = neighbors.query_ids[np.flatnonzero(empty_q)[0]].item()
            raise InputError(
                f"{skipped} query item(s) have no viewers in the interactions (first: {first!r}); "
                "the shared-viewer measure is undefined for them — pass interactions that include "
                "the query items' views, or on_empty='skip'"
            )
        keep = ~empty_q
        if not keep.any():
            raise InputError("no query item has any viewer: nothing to measure")
        qpos, npos = qpos[keep], npos[keep]
    query_ids = np.asarray(neighbors.query_ids)[~empty_q]
    if candidates is None:
        cand = np.arange(inter.n_items, dtype=np.int64)
    else:
        cand = np.unique(_positions_of(np.asarray(candidates), inter, "candidates"))
    rpos = _random_pairs(qpos, cand, R, seed)

    q = len(qpos)
    shared = shared_viewer_curve(item_users, qpos, npos)
    shared_rnd = shared_viewer_curve(item_users, qpos, rpos)
    report = RetrievalReport(
        np.arange(1, R + 1),
        shared,
        shared_rnd,
        q,
        meta={
            "seed": int(seed),
            "skipped_empty_queries": skipped,
            "k": k,
            "neighbors": dict(neighbors.meta),
            "candidates": int(len(cand)),
        },
    )

    if owners is not None:
        owner_rows, n_unknown_owner = owner_positions(owners, query_ids, inter)
        has = owner_rows >= 0
        if not has.any():
            raise InputError("owners: no query item has an owner among the interactions' users")
        hits = owner_viewed_counts(inter.user_items, owner_rows[has], npos[has])
        hits_rnd = owner_viewed_counts(inter.user_items, owner_rows[has], rpos[has])
        report.owner_viewed = np.cumsum(hits, axis=1).mean(axis=0)
        report.owner_viewed_random = np.cumsum(hits_rnd, axis=1).mean(axis=0)
        report.meta["owner_queries"] = int(has.sum())
        report.meta["owners_not_users"] = int(n_unknown_owner)

    if genres is not None:
        labels, has_label = _label_matrix(genres, inter)
        for suffix, pos in (("", npos), ("_random", rpos)):
            a = np.repeat(qpos, R)
            b = pos.ravel()
            inter_g = pair_intersections(labels, a, b).reshape(q, R)
            jac = pair_jaccard(labels, a, b).reshape(q, R)
            mask = has_label[qpos][:, None] & has_label[pos]
            setattr(
                report,
                f"genre_agreement{suffix}",
                _masked_mean((inter_g > 0).astype(np.float64), mask),
            )
            setattr(report, f"genre_jaccard{suffix}", _masked_mean(np.nan_to_num(jac), mask))
        report.meta["genre_queries"] = int(has_label[qpos].sum())
    return report
