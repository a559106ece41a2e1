"""``cfcore cluster``, ``cfcore neighbors``, ``cfcore retrieval-report`` end to end (CliRunner)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from scipy.sparse.linalg import svds

from cfcore.cli.main import cli
from cfcore.cluster import PseudoLabels, normalized_mutual_info
from cfcore.interactions import Interactions
from cfcore.io import save_artifact
from cfcore.neighbors import Neighbors
from cfcore.vectors import save_vectors


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Planted views (8 groups × 40 items, users view mostly one group), a model file built
    in the factor-model format (cfcore.model), the interactions file, owners and genres."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(8), 40)
    rows, cols = [], []
    for u in range(480):
        own = rng.choice(np.flatnonzero(group == u % 8), 22, replace=False)
        items = np.unique(np.concatenate([own, rng.choice(len(group), 3, replace=False)]))
        rows += [u] * len(items)
        cols += items.tolist()
    item_ids = np.arange(1000, 1000 + len(group))
    user_ids = np.arange(1, 481)
    inter = Interactions(
        sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(480, len(group))),
        user_ids,
        item_ids,
    )
    inter.save(d / "views.npz")
    u, s, vt = svds(inter.user_items.astype(np.float64), k=8, random_state=0)
    save_artifact(
        d / "model.npz",
        "factor-model",
        {
            "user_factors": (u * np.sqrt(s)).astype(np.float32),
            "item_factors": (vt.T * np.sqrt(s)).astype(np.float32),
            "user_ids": user_ids,
            "item_ids": item_ids,
        },
        {"params": {"factors": 8, "loss": "svd"}, "history": []},
    )
    owners = ["item_id,owner"] + [
        f"{i},{user_ids[int(np.flatnonzero(np.arange(480) % 8 == g)[0])]}"
        for i, g in zip(item_ids, group, strict=True)
    ]
    (d / "owners.csv").write_text("\n".join(owners) + "\n")
    genres = ["item_id,labels"] + [f"{i},g{g}|all" for i, g in zip(item_ids, group, strict=True)]
    (d / "genres.csv").write_text("\n".join(genres) + "\n")
    return d, group, item_ids


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def test_cluster_writes_labels_npz_and_csv_that_recover_the_groups(planted, tmp_path):
    d, group, item_ids = planted
    out = tmp_path / "labels.npz"
    res = run("cluster", d / "model.npz", "-k", 8, "-o", out, "--stability", "--threads", 1)
    assert res.exit_code == 0, res.output
    assert (
        "K=8 pseudo-classes" in res.output
        and "Gini" in res.output
        and "stability: NMI" in res.output
    )
    labels = PseudoLabels.load(out)
    np.testing.assert_array_equal(labels.item_ids, item_ids)
    assert normalized_mutual_info(labels.labels, group) >= 0.9
    csv = (tmp_path / "labels.csv").read_text().splitlines()
    assert csv[0] == "item_id,label" and csv[1].startswith("1000,") and len(csv) == 321
    assert labels.params["stability_nmi"] >= 0.9


def test_cluster_options_pca_euclidean_no_csv(planted, tmp_path):
    d, group, _ = planted
    out = tmp_path / "l.npz"
    res = run(
        "cluster",
        d / "model.npz",
        "-k",
        8,
        "-o",
        out,
        "--pca",
        "--euclidean",
        "--no-csv",
        "--nredo",
        2,
        "--niter",
        10,
        "--seed",
        3,
    )
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "l.csv").exists()
    labels = PseudoLabels.load(out)
    assert labels.params["pca"] and not labels.params["spherical"] and labels.params["seed"] == 3


def test_cluster_warns_with_a_suggested_k_and_refuses_k_above_items(planted, tmp_path):
    d, _, _ = planted
    res = CliRunner().invoke(
        cli, ["cluster", str(d / "model.npz"), "-k", "20", "-o", str(tmp_path / "a.npz")]
    )
    assert res.exit_code == 0
    assert "warning:" in res.output and "suggested k <= 8" in res.output
    res = run("cluster", d / "model.npz", "-k", 321, "-o", tmp_path / "b.npz")
    assert res.exit_code == 1
    assert (
        res.output.strip().splitlines()[-1].startswith("Error: k: 321 clusters for only 320 items")
    )
    assert not (tmp_path / "b.npz").exists()


def test_cluster_bad_files(planted, tmp_path):
    d, _, _ = planted
    res = run("cluster", d / "views.npz", "-k", 2, "-o", tmp_path / "x.npz")
    assert res.exit_code == 1 and "expected a item-vectors or factor-model file" in res.output
    save_artifact(
        tmp_path / "nan.npz",
        "factor-model",
        {
            "item_factors": np.array([[np.nan, 1.0], [1.0, 1.0]], np.float32),
            "item_ids": np.arange(2),
            "user_factors": np.ones((1, 2), np.float32),
            "user_ids": np.arange(1),
        },
    )
    res = run("cluster", tmp_path / "nan.npz", "-k", 1, "-o", tmp_path / "x.npz")
    assert res.exit_code == 1 and "item_factors contains NaN or inf" in res.output
    save_artifact(tmp_path / "part.npz", "factor-model", {"item_factors": np.ones((2, 2))})
    res = run("cluster", tmp_path / "part.npz", "-k", 1, "-o", tmp_path / "x.npz")
    assert res.exit_code == 1 and "missing arrays" in res.output
    res = run("cluster", tmp_path / "missing.npz", "-k", 1, "-o", tmp_path / "x.npz")
    assert res.exit_code == 1 and "no such file" in res.output
    assert not (tmp_path / "x.npz").exists()


def test_neighbors_file_and_printed_output(planted, tmp_path):
    d, group, item_ids = planted
    out = tmp_path / "nn.npz"
    res = run("neighbors", d / "model.npz", "-k", 20, "-o", out)
    assert res.exit_code == 0, res.output
    nn = Neighbors.load(out)
    assert nn.neighbor_ids.shape == (320, 20)
    pos = nn.neighbor_ids - 1000
    assert (group[pos] == group[:, None]).mean() >= 0.8
    res = run("neighbors", d / "model.npz", "-k", 2, "--queries", "1000,1001")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 0 and lines[0] == "query\trank\tneighbor\tscore" and len(lines) == 5
    assert lines[1].startswith("1000\t1\t") and "\t1000\t" not in "\n".join(lines[1:3])


def test_neighbors_queries_from_a_file_and_from_vectors(planted, tmp_path):
    d, _, item_ids = planted
    (tmp_path / "q.txt").write_text("item_id\n1005\n1100\n")
    res = run(
        "neighbors",
        d / "model.npz",
        "-k",
        3,
        "--queries",
        tmp_path / "q.txt",
        "-o",
        tmp_path / "a.npz",
    )
    assert res.exit_code == 0, res.output
    assert Neighbors.load(tmp_path / "a.npz").query_ids.tolist() == [1005, 1100]
    # "test" vectors query the indexed items (Fang §4.3: te queries tr)
    rng = np.random.default_rng(0)
    save_vectors(tmp_path / "q.npz", ["t1", "t2"], rng.standard_normal((2, 8)))
    res = run(
        "neighbors",
        d / "model.npz",
        "-k",
        4,
        "--queries",
        tmp_path / "q.npz",
        "--method",
        "hnsw",
        "-o",
        tmp_path / "b.npz",
    )
    assert res.exit_code == 0, res.output
    nn = Neighbors.load(tmp_path / "b.npz")
    assert nn.query_ids.tolist() == ["t1", "t2"] and nn.k == 4
    res = run("neighbors", d / "model.npz", "-k", 3, "--queries", "1000,77")
    assert res.exit_code == 1 and "unknown item id" in res.output and "77" in res.output
    save_vectors(tmp_path / "bad.npz", ["t1"], rng.standard_normal((1, 5)))
    res = run("neighbors", d / "model.npz", "--queries", tmp_path / "bad.npz")
    assert res.exit_code == 1 and "dimension 5 does not match" in res.output


def test_retrieval_report_end_to_end(planted, tmp_path):
    d, _, _ = planted
    nn = tmp_path / "nn.npz"
    assert run("neighbors", d / "model.npz", "-k", 30, "--method", "ivf", "-o", nn).exit_code == 0
    res = run(
        "retrieval-report",
        nn,
        d / "views.npz",
        "-R",
        30,
        "--owners",
        d / "owners.csv",
        "--genres",
        d / "genres.csv",
        "-o",
        tmp_path / "fig.png",
        "--json",
        tmp_path / "r.json",
    )
    assert res.exit_code == 0, res.output
    assert "shared_viewers_lift" in res.output and "owner_viewed@30" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    s = report["summary"]
    assert s["R"] == 30 and s["queries"] == 320
    assert min(report["curves"]["shared_viewers"]) > s["shared_viewers_random_mean"]
    assert s["owner_viewed@30"] > s["owner_viewed_random@30"]
    assert s["genre_jaccard_mean"] > s["genre_jaccard_random_mean"]
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_retrieval_report_errors(planted, tmp_path):
    d, _, _ = planted
    nn = tmp_path / "nn.npz"
    run("neighbors", d / "model.npz", "-k", 5, "-o", nn)
    res = run("retrieval-report", nn, d / "views.npz", "-R", 6)
    assert res.exit_code == 1 and "R: must be between 1 and the 5" in res.output
    Interactions(sp.identity(4, format="csr"), item_ids=[1, 2, 3, 4]).save(tmp_path / "other.npz")
    res = run("retrieval-report", nn, tmp_path / "other.npz", "-R", 5)
    assert res.exit_code == 1 and "among the interactions' items: only 0 of" in res.output
    res = run("retrieval-report", d / "model.npz", d / "views.npz")
    assert res.exit_code == 1 and "expected a neighbors file" in res.output
    res = run("retrieval-report", nn, d / "views.npz", "-R", 5, "--genres", "nope.csv")
    assert res.exit_code == 1 and "--genres" in res.output


@pytest.mark.realdata
def test_retrieval_report_with_ml100k_genres(ml100k_path, tmp_path):
    from cfcore.datasets import load_movielens

    inter = load_movielens("ml-100k", ml100k_path.parent)
    u, s, vt = svds(inter.user_items.astype(np.float64), k=24, random_state=0)
    save_vectors(tmp_path / "v.npz", inter.item_ids, (vt.T * np.sqrt(s)).astype(np.float32))
    assert run("neighbors", tmp_path / "v.npz", "-k", 50, "-o", tmp_path / "nn.npz").exit_code == 0
    res = run(
        "retrieval-report",
        tmp_path / "nn.npz",
        "ml-100k",
        "--data-dir",
        ml100k_path.parent,
        "-R",
        50,
        "--genres",
        "ml-100k",
        "--data-dir",
        ml100k_path.parent,
    )
    assert res.exit_code == 0, res.output
    assert "genre_agreement_mean" in res.output
