"""``cfcore cluster``, ``cfcore neighbors``, ``cfcore retrieval-report`` (Fang et al. §2.2, §4.2–4.3)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import click

from cfcore.cli.common import (
    data_dir_option,
    format_option,
    load_input,
    min_rating_option,
    read_table,
    seed_option,
    threads_option,
)
from cfcore.errors import InputError


def _echo_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)


def _read_ids(spec: str, what: str) -> Any:
    """Ids from a vectors .npz (returns ItemVectors), a text/CSV file (first column), or 'a,b,c'."""
    from cfcore.vectors import load_vectors

    path = Path(spec)
    if path.exists():
        if path.suffix == ".npz":
            return load_vectors(path)
        return [row[0] for row in read_table(path, what)]
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    if not ids:
        raise InputError(f"{what}: no ids in {spec!r}")
    return ids


# --------------------------------------------------------------------------- cluster
@click.command("cluster")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-k",
    "--k",
    "k",
    type=int,
    required=True,
    help="Number of pseudo-classes (Fang et al.: 200…5000 on 1.9M items, 2000 best).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Labels file (.npz); an item_id,label CSV is written beside it.",
)
@click.option(
    "--niter", type=click.IntRange(min=1), default=20, show_default=True, help="k-means iterations."
)
@click.option(
    "--nredo",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="k-means runs; the best objective is kept.",
)
@click.option(
    "--spherical/--euclidean",
    default=True,
    show_default=True,
    help="Cosine k-means on L2-normalised vectors, or plain Euclidean k-means.",
)
@click.option("--pca", is_flag=True, help="PCA-whiten the vectors before clustering.")
@click.option(
    "--pca-dim",
    type=click.IntRange(min=1),
    default=None,
    help="Dimensions kept by --pca [default: all].",
)
@click.option(
    "--max-points-per-centroid",
    type=click.IntRange(min=1),
    default=None,
    help="Let faiss train on a random subsample of K × this many items [default: use every item].",
)
@click.option(
    "--stability",
    is_flag=True,
    help="Also cluster with seed+1 and report the NMI between the runs.",
)
@click.option("--no-csv", is_flag=True, help="Do not write the item_id,label CSV.")
@click.option("--verbose", is_flag=True, help="Show faiss's per-iteration log.")
@seed_option
@threads_option
def cluster(
    model: Path,
    k: int,
    output: Path,
    niter: int,
    nredo: int,
    spherical: bool,
    pca: bool,
    pca_dim: int | None,
    max_points_per_centroid: int | None,
    stability: bool,
    no_csv: bool,
    verbose: bool,
    seed: int,
    threads: int,
) -> None:
    """Cluster the item vectors of MODEL into K pseudo-classes (faiss k-means).

    MODEL is a factor model from `cfcore factorize` or any item-vectors .npz (e.g. from
    `cfvision extract`). Writes OUTPUT (.npz, kind pseudo-labels) and OUTPUT with .csv.
    """
    from cfcore.cluster import ClusterWarning, cluster_items, normalized_mutual_info
    from cfcore.vectors import load_vectors

    vectors = load_vectors(model)
    kwargs = dict(
        spherical=spherical,
        pca=pca,
        pca_dim=pca_dim,
        niter=niter,
        nredo=nredo,
        threads=threads,
        max_points_per_centroid=max_points_per_centroid,
        verbose=verbose,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = cluster_items(vectors, k, seed=seed, **kwargs)
    seconds = time.perf_counter() - start
    _echo_warnings([w for w in caught if issubclass(w.category, ClusterWarning)])
    nmi = None
    if stability:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = cluster_items(vectors, k, seed=seed + 1, **kwargs)
        nmi = normalized_mutual_info(labels.labels, other.labels)
        labels.params["stability_nmi"] = nmi
    labels.save(output, csv=not no_csv)
    st = labels.imbalance()
    click.echo(
        f"{len(labels)} items × {vectors.dim} dims → K={labels.k} pseudo-classes in {seconds:.1f}s "
        f"(objective {labels.params['objective']:.4g})"
    )
    click.echo(
        f"sizes: largest {st['largest']}, median {st['median']:.0f}, smallest {st['smallest']}, "
        f"empty {st['empty']}, Gini {st['gini']:.3f}"
    )
    if nmi is not None:
        click.echo(f"stability: NMI(seed {seed}, seed {seed + 1}) = {nmi:.3f}")
    click.echo(f"wrote {output}" + ("" if no_csv else f" and {output.with_suffix('.csv')}"))


# --------------------------------------------------------------------------- neighbors
@click.command("neighbors")
@click.argument("vectors", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-k",
    "--k",
    "k",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Neighbours per query.",
)
@click.option(
    "--queries",
    default=None,
    help="Query items: ids 'a,b,c', a file of ids (one per line / first CSV column), or a "
    "vectors .npz whose vectors query this index [default: every item].",
)
@click.option(
    "--method",
    type=click.Choice(["exact", "ivf", "hnsw"]),
    default="exact",
    show_default=True,
    help="faiss index: exact inner product, or approximate IVF / HNSW for millions of items.",
)
@click.option(
    "--nlist", type=click.IntRange(min=1), default=None, help="IVF lists [default: ~4√n]."
)
@click.option(
    "--nprobe", type=click.IntRange(min=1), default=None, help="IVF lists visited per query."
)
@click.option("--include-self", is_flag=True, help="Keep the query item among its own neighbours.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Neighbours file (.npz, kind neighbors) [default: print query, rank, neighbour, score].",
)
@seed_option
@threads_option
def neighbors(
    vectors: Path,
    k: int,
    queries: str | None,
    method: str,
    nlist: int | None,
    nprobe: int | None,
    include_self: bool,
    output: Path | None,
    seed: int,
    threads: int,
) -> None:
    """Cosine k-nearest neighbours of items in VECTORS (a factor model or an item-vectors .npz)."""
    from cfcore.neighbors import NeighborIndex

    index = NeighborIndex(
        vectors, method=method, nlist=nlist, nprobe=nprobe, threads=threads, seed=seed
    )
    q = None if queries is None else _read_ids(queries, "queries")
    nn = index.search(q, k, exclude_self=not include_self)
    if output is None:
        click.echo("query\trank\tneighbor\tscore")
        for qid, row, scores in zip(
            nn.query_ids.tolist(), nn.neighbor_ids.tolist(), nn.scores.tolist(), strict=True
        ):
            for rank, (nid, score) in enumerate(zip(row, scores, strict=True), 1):
                click.echo(f"{qid}\t{rank}\t{nid}\t{score:.4f}")
        return
    nn.meta["vectors"] = str(vectors)
    nn.save(output)
    click.echo(
        f"{len(nn)} queries × {nn.k} neighbours ({method}) over {len(index)} items → {output}"
    )


# --------------------------------------------------------------------------- retrieval-report
@click.command("retrieval-report")
@click.argument(
    "neighbors_file", metavar="NEIGHBORS", type=click.Path(dir_okay=False, path_type=Path)
)
@click.argument("interactions")
@click.option(
    "-R",
    "--ranks",
    "ranks",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Ranks evaluated (the paper's R).",
)
@click.option(
    "--owners",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="CSV item_id,owner (user id): enables the owner-viewed count.",
)
@click.option(
    "--genres",
    default=None,
    help="Item genres for genre agreement: a dataset name (ml-100k, ml-latest-small, ml-1m), "
    "movies.csv, movies.dat, u.item, or a CSV item_id,labels ('|'-separated).",
)
@click.option(
    "--candidates",
    default=None,
    help="Items the random baseline draws from: a vectors .npz, a file of ids or 'a,b,c' "
    "[default: every item of INTERACTIONS].",
)
@click.option(
    "--on-empty",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="Query items without viewers: fail, or leave them out.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG plot of the curves (as Fang et al. Fig. 5).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the summary and every curve as JSON.",
)
@seed_option
@format_option
@data_dir_option
@min_rating_option
def retrieval_report(
    neighbors_file: Path,
    interactions: str,
    ranks: int,
    owners: Path | None,
    genres: str | None,
    candidates: str | None,
    on_empty: str,
    output: Path | None,
    json_path: Path | None,
    seed: int,
    fmt: str,
    data_dir: Path | None,
    min_rating: float | None,
) -> None:
    """Shared viewers, owner-viewed count and genre agreement of NEIGHBORS vs random pairs.

    NEIGHBORS is a file from `cfcore neighbors -o`; INTERACTIONS (a file or a dataset name)
    says who viewed each item. Fang et al. 2015 §4.3.
    """
    from cfcore.labels import read_labels
    from cfcore.retrieval import read_owners
    from cfcore.retrieval import retrieval_report as report_fn
    from cfcore.vectors import ItemVectors

    inter = load_input(interactions, fmt, data_dir, min_rating)
    labels = None
    if genres is not None:
        try:
            labels = read_labels(genres, data_dir=data_dir)
        except InputError as exc:
            raise InputError(f"--genres: {exc}") from None
    cand = None
    if candidates is not None:
        got = _read_ids(candidates, "candidates")
        cand = got.ids if isinstance(got, ItemVectors) else got
    report = report_fn(
        neighbors_file,
        inter,
        ranks,
        owners=None if owners is None else read_owners(owners),
        genres=labels,
        candidates=cand,
        seed=seed,
        on_empty=on_empty,
    )
    for key, value in report.summary().items():
        if value is None:
            continue
        click.echo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if report.meta.get("skipped_empty_queries"):
        click.echo(
            f"skipped {report.meta['skipped_empty_queries']} query item(s) without viewers",
            err=True,
        )
    if output is not None:
        report.plot(output, name=Path(neighbors_file).stem)
        click.echo(f"wrote {output}")
    if json_path is not None:
        report.save_json(json_path)
        click.echo(f"wrote {json_path}")


COMMANDS = [cluster, neighbors, retrieval_report]
