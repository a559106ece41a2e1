"""The Spark backend in local mode: id mapping, the partitioned sampler, DSGD, the CLI.

One ``local[2]`` session serves every test (the ``spark`` fixture); the data is ml-100k.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from cfcore.errors import InputError
from cfcore.sampling import sample_negatives as sample_on_one_machine

pytestmark = [pytest.mark.spark, pytest.mark.realdata]


@pytest.fixture(scope="module")
def views_frame(spark, ml100k):
    """ml-100k as a Spark DataFrame of raw ids, rows shuffled and duplicated a little."""
    coo = ml100k.user_items.tocoo()
    order = np.random.default_rng(0).permutation(coo.nnz)
    order = np.concatenate([order, order[:500]])  # duplicates count once
    return spark.createDataFrame(
        pa.table(
            {
                "userId": ml100k.user_ids[coo.row[order]].astype(str),
                "movieId": ml100k.item_ids[coo.col[order]],
                "rating": np.full(len(order), 4.0),
            }
        )
    )


@pytest.fixture(scope="module")
def views(views_frame):
    from cfcore.spark import SparkInteractions

    return SparkInteractions.from_dataframe(views_frame)


def _matrix(frame, shape) -> sp.csr_matrix:
    table = frame.toArrow()
    u, i = table.column("u").to_numpy(), table.column("i").to_numpy()
    return sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape)


def test_ids_are_mapped_by_spark_in_sorted_order(views, ml100k):
    """The dense indices are those of cfcore.Interactions.from_pairs (sorted raw ids)."""
    from cfcore.interactions import Interactions

    assert (views.n_users, views.n_items, views.nnz) == (943, 1682, 100_000)
    coo = ml100k.user_items.tocoo()
    expected = Interactions.from_pairs(
        ml100k.user_ids[coo.row].astype(str), ml100k.item_ids[coo.col]
    )
    user_ids, item_ids = views.raw_ids()
    assert user_ids.tolist() == expected.user_ids.tolist()
    assert item_ids.tolist() == expected.item_ids.tolist()
    assert (views.to_interactions().user_items != expected.user_items).nnz == 0
    assert (views.item_popularity() == expected.item_popularity()).all()


def test_bad_dataframes_get_clear_errors(spark):
    from cfcore.spark import SparkInteractions

    df = spark.createDataFrame(pa.table({"user": [1.5, 2.0], "item": [1, 2]}))
    with pytest.raises(
        InputError, match="'user' .* has type double; ids must be integers or strings"
    ):
        SparkInteractions.from_dataframe(df)
    df = spark.createDataFrame(pa.table({"user": [1, None], "item": [1, 2]}))
    with pytest.raises(InputError, match="'user' has 1 missing ids"):
        SparkInteractions.from_dataframe(df)
    with pytest.raises(InputError, match="no column 'who' for users"):
        SparkInteractions.from_dataframe(df, user_col="who")
    with pytest.raises(InputError, match="min_rating given but there is no rating column"):
        SparkInteractions.from_dataframe(df, min_rating=4)


def test_sampler_gives_one_machines_negatives_whatever_the_partitioning(views, ml100k):
    """Users draw from their (seed, epoch, user) streams in any partition: 1, 3 or 8
    partitions give the same negatives — exactly those sample_negatives draws on one
    machine."""
    from cfcore.spark import sample_negatives

    interactions = views.to_interactions()
    whole = sample_on_one_machine(
        interactions.user_items, 2.0, "log-popularity", seed=7, epoch=3, warn_short=False
    ).to_csr()
    for partitions in (1, 3, 8):
        frame = sample_negatives(
            views, 2.0, "log-popularity", seed=7, epoch=3, partitions=partitions
        )
        got = _matrix(frame, interactions.shape)
        assert got.nnz == whole.nnz
        assert (got != whole).nnz == 0
    other = _matrix(sample_negatives(views, 2.0, "log-popularity", seed=7, epoch=4), whole.shape)
    assert (other != whole).nnz > 0  # a fresh draw per epoch


def test_sampler_checks_its_arguments_on_the_driver(views):
    from cfcore.spark import sample_negatives

    with pytest.raises(InputError, match="neg_ratio"):
        sample_negatives(views, neg_ratio=0)
    with pytest.raises(InputError, match="popularity: expected shape"):
        sample_negatives(views, popularity=np.ones(3))


def test_missing_java_is_one_clear_error(monkeypatch, tmp_path):
    from cfcore.spark.session import SparkUnavailableError, check_java

    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(SparkUnavailableError, match="needs Java 17 or newer and found none"):
        check_java()


def _cli(*args: str):
    from click.testing import CliRunner

    from cfcore.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_sample_negatives_on_spark_writes_one_machines_file_or_parquet(spark, tmp_path):
    import pyarrow.parquet as pq

    from cfcore.sampling import NegativeSample

    local, remote = tmp_path / "local.npz", tmp_path / "spark.npz"
    assert _cli("sample-negatives", "ml-100k", "-o", str(local), "--seed", "2").exit_code == 0
    result = _cli(
        "sample-negatives", "ml-100k", "-o", str(remote), "--seed", "2",
        "--backend", "spark", "--master", "local[2]",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    a, b = NegativeSample.load(local), NegativeSample.load(remote)
    assert (a.to_csr() != b.to_csr()).nnz == 0
    assert (a.n_short, a.requested) == (b.n_short, b.requested)
    np.testing.assert_array_equal(a.user_ids, b.user_ids)  # both carry the raw ids
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    table = tmp_path / "neg.parquet"
    result = _cli(
        "sample-negatives", "ml-100k", "-o", str(table), "--seed", "2", "--backend", "spark"
    )
    assert result.exit_code == 0, result.output
    frame = pq.read_table(table)
    assert frame.column_names == ["user", "item"] and frame.num_rows == a.nnz


def test_cli_master_needs_the_spark_backend():
    result = _cli("factorize", "ml-100k", "-o", "m.npz", "--master", "local[2]")
    assert result.exit_code == 2 and "--master applies to --backend spark only" in result.output


# ---------------------------------------------------------------------------- DSGD
def test_cli_factorize_on_spark_matches_one_machine_held_out_auc(spark, ml100k_path, tmp_path):
    """`cfcore factorize --backend spark --master local[2]` (DSGD, 2 × 2 blocks) on
    ml-100k's u1 split: held-out AUC within 0.01 of the single-machine engine's."""
    from cfcore.factorize import Factorizer
    from cfcore.ids import id_positions
    from cfcore.metrics import evaluate
    from cfcore.readers import read_interactions

    base, test = ml100k_path / "u1.base", ml100k_path / "u1.test"
    common = ["--factors", "32", "--epochs", "10", "--seed", "0", "--quiet"]
    local, remote = tmp_path / "local.npz", tmp_path / "spark.npz"
    assert _cli("factorize", str(base), "-o", str(local), *common).exit_code == 0
    result = _cli(
        "factorize", str(base), "-o", str(remote), *common, "--backend", "spark",
        "--master", "local[2]",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    train, held_out = read_interactions(base), read_interactions(test)
    rows = id_positions(train.user_ids, held_out.user_ids)
    cols = id_positions(train.item_ids, held_out.item_ids)
    coo = held_out.user_items.tocoo()
    r, c = rows[coo.row], cols[coo.col]
    keep = (r >= 0) & (c >= 0)  # u1.test has items u1.base never saw
    test_matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (r[keep], c[keep])), shape=train.shape
    )
    aucs = []
    for path in (local, remote):
        model = Factorizer.load(path)
        assert model.user_ids_.tolist() == train.user_ids.tolist()
        aucs.append(evaluate(model.scorer(), train.user_items, test_matrix)["auc"])
    assert aucs[0] > 0.9
    assert abs(aucs[0] - aucs[1]) <= 0.01, aucs


@pytest.mark.parametrize("loss", ["bpr", "warp"])
def test_dsgd_pairwise_losses_learn_like_one_machine(spark, ml100k_split, loss):
    """BPR pairs positives with negatives of the same item block, WARP searches the block
    with the catalogue's rank weights: both stay within 0.02 held-out AUC of one machine."""
    from cfcore.factorize import Factorizer
    from cfcore.metrics import evaluate
    from cfcore.spark import SparkFactorizer

    train, test = ml100k_split
    params = dict(factors=32, loss=loss, epochs=5, seed=0, progress=False)
    one = Factorizer(**params, threads=2).fit(train)
    dsgd = SparkFactorizer(**params, blocks=2).fit(train)
    auc_one = evaluate(one.scorer(), train.user_items, test.user_items)["auc"]
    auc_dsgd = evaluate(dsgd.scorer(), train.user_items, test.user_items)["auc"]
    assert auc_dsgd > auc_one - 0.02, (auc_one, auc_dsgd)
    assert [len(h["stratum_seconds"]) for h in dsgd.history_] == [2] * 5
    assert dsgd.history_[-1]["updates"] > 0.9 * train.nnz  # few positives lack a negative


def test_dsgd_divergence_and_bad_input_get_the_libraries_errors(spark, ml100k_split):
    from cfcore.errors import DivergenceError
    from cfcore.spark import SparkFactorizer

    train, test = ml100k_split
    with pytest.raises(DivergenceError, match="diverged in epoch"):
        SparkFactorizer(
            factors=8, epochs=3, learning_rate=50.0, optimizer="sgd", progress=False
        ).fit(train)
    with pytest.raises(InputError, match="loss: expected one of"):
        SparkFactorizer(loss="hinge").fit(train)
    with pytest.raises(InputError, match="validation: not supported"):
        SparkFactorizer().fit(train, validation=test)
    with pytest.raises(InputError, match="blocks: expected an integer >= 1"):
        SparkFactorizer(blocks=0).fit(train)


def test_parquet_files_and_directories_are_read_by_spark(spark, ml100k, tmp_path):
    import pyarrow.parquet as pq

    from cfcore.spark import SparkInteractions

    coo = ml100k.user_items.tocoo()
    table = pa.table(
        {
            "user_id": ml100k.user_ids[coo.row],
            "item_id": ml100k.item_ids[coo.col],
            "rating": (coo.col % 5 + 1).astype(np.float64),
        }
    )
    pq.write_table(table, tmp_path / "views.parquet")
    (tmp_path / "parts").mkdir()
    pq.write_table(table.slice(0, 50_000), tmp_path / "parts" / "a.parquet")
    pq.write_table(table.slice(50_000), tmp_path / "parts" / "b.parquet")
    one = SparkInteractions.read(spark, tmp_path / "views.parquet", min_rating=4)
    many = SparkInteractions.read(spark, tmp_path / "parts", min_rating=4)
    kept = int((table.column("rating").to_numpy() >= 4).sum())
    assert one.nnz == many.nnz == kept
    assert one.raw_ids()[1].tolist() == many.raw_ids()[1].tolist()
    with pytest.raises(InputError, match="no such file or directory"):
        SparkInteractions.read(spark, tmp_path / "missing.parquet")


def test_factor_tables_written_by_the_executors_load_back_as_the_collected_model(
    spark, ml100k_split, tmp_path
):
    """collect=False leaves the factors on the executors; save_tables writes them as
    Parquet and load_tables reads them into the same Factorizer a collecting fit gives
    (one thread per task: DSGD is deterministic for a seed)."""
    from cfcore.spark import SparkFactorizer, load_tables

    train, _ = ml100k_split
    params = dict(factors=8, epochs=2, seed=3, progress=False, blocks=2, use_biases=True)
    kept = SparkFactorizer(**params).fit(train)
    spread = SparkFactorizer(**params, collect=False).fit(train)
    assert not spread.is_fitted
    loaded = load_tables(spread.save_tables(str(tmp_path / "tables")))
    assert loaded.user_ids_.tolist() == kept.user_ids_.tolist()
    assert loaded.item_ids_.tolist() == kept.item_ids_.tolist()
    np.testing.assert_array_equal(loaded.user_factors_, kept.user_factors_)
    np.testing.assert_array_equal(loaded.item_factors_, kept.item_factors_)
    np.testing.assert_array_equal(loaded.item_bias_, kept.item_bias_)
    assert (loaded.item_popularity_ == train.item_popularity()).all()
