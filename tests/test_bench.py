"""The benchmark harness: synthetic data generator, suite runner, report, skipped peers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import runner
from bench.methods import METHODS, Method, missing_reason
from bench.report import render
from bench.synthetic import LOW_RANK, SyntheticSpec, parse_count, power_law_interactions, spec_for
from cfcore.errors import InputError

SPEC = SyntheticSpec(n_users=3000, n_items=1500, nnz=90_000, topics=16, seed=3)


@pytest.fixture(scope="module")
def generated():
    return power_law_interactions(SPEC, return_latent=True)


# ---------------------------------------------------------------------- generator
def test_generator_is_seeded_and_has_the_requested_shape(generated):
    inter, _, _ = generated
    again = power_law_interactions(SPEC)
    other = power_law_interactions(SyntheticSpec(**{**SPEC.__dict__, "seed": 4}))
    assert inter.shape == (3000, 1500)
    assert inter.nnz == 90_000  # exactly: users are topped up until they have their count
    np.testing.assert_array_equal(inter.user_items.indptr, again.user_items.indptr)
    np.testing.assert_array_equal(inter.user_items.indices, again.user_items.indices)
    assert not np.array_equal(inter.user_items.indices[:1000], other.user_items.indices[:1000])
    # canonical CSR: float32 ones, sorted, no duplicate (user, item)
    m = inter.user_items
    assert m.dtype == np.float32 and np.all(m.data == 1)
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    assert np.all(np.diff(rows * m.shape[1] + m.indices) > 0)
    assert inter.user_activity().min() >= SPEC.min_per_user


def test_generator_has_power_law_skew(generated):
    inter, _, _ = generated
    pop = np.sort(inter.item_popularity())[::-1]
    act = np.sort(inter.user_activity())[::-1]
    # Zipf items: the top 1% of items carry many times their uniform share (1%) ...
    assert pop[: len(pop) // 100].sum() / inter.nnz > 0.08
    # ... and log-popularity falls roughly linearly in log-rank with slope ≈ −a (a = 1)
    ranks = np.arange(20, 400)
    slope = np.polyfit(np.log(ranks + 1), np.log(pop[ranks]), 1)[0]
    assert -1.6 < slope < -0.5
    # log-normal users: heavy right tail, mean well above the median
    assert act[0] > 8 * np.median(act)
    assert act.mean() > 1.2 * np.median(act)


def test_generator_plants_topics_a_model_can_learn(generated):
    inter, item_topic, user_topics = generated
    coo = inter.user_items.tocoo()
    in_topic = (item_topic[coo.col] == user_topics[coo.row, 0]) | (
        item_topic[coo.col] == user_topics[coo.row, 1]
    )
    # affinity 0.8 of draws come from the user's topics (random: 2/16)
    assert in_topic.mean() > 0.7


def test_low_rank_generator_plants_preferences_a_ranking_can_recover():
    from cfcore.metrics import popularity_scorer, top_k_metrics
    from cfcore.splits import holdout_split

    spec = SyntheticSpec(n_users=3000, n_items=1500, nnz=90_000, seed=3, **LOW_RANK)
    inter, membership, mixture = power_law_interactions(spec, return_latent=True)
    assert inter.nnz == 90_000 and inter.user_activity().min() >= spec.min_per_user
    assert membership.shape == (1500, 32) and mixture.shape == (3000, 32)
    np.testing.assert_allclose(mixture.sum(1), 1.0)
    train, test = holdout_split(inter, 0.2, seed=0)
    # the planted preference Σ_k θ_uk φ_k(i), φ_k ∝ popularity × membership, ranks held-out
    # items far better than popularity does: there is structure to rank by
    pop = np.asarray(train.user_items.sum(0)).ravel()
    phi = membership.T * pop
    phi /= phi.sum(1, keepdims=True)

    def ndcg(scorer):
        return top_k_metrics(scorer, test.user_items, 10, exclude=train.user_items)["ndcg@10"]

    planted = ndcg(lambda rows: (mixture[rows] @ phi).astype(np.float32))
    popular = ndcg(popularity_scorer(train.user_items))
    assert planted > 3 * popular > 0.1  # measured: 0.211 vs 0.060


def test_named_shapes_and_sizes():
    shaped = spec_for("synth-4m@200kx100k")
    assert (shaped.n_users, shaped.n_items, shaped.nnz) == (200_000, 100_000, 4_000_000)
    with pytest.raises(InputError, match="<users>x<items>"):
        spec_for("synth-4m@200k")
    ml1m = spec_for("synth-ml1m")
    assert (ml1m.n_users, ml1m.n_items, ml1m.nnz) == (6040, 3706, 1_000_209)
    big = spec_for("synth-16m")
    assert (big.n_users, big.n_items, big.nnz) == (200_000, 100_000, 16_000_000)
    low = spec_for("lowrank-16m")
    assert (low.n_users, low.n_items, low.structure) == (200_000, 100_000, "low-rank")
    assert spec_for("lowrank-ml1m").n_items == 3706 and spec_for("synth-ml1m").structure == "topics"
    with pytest.raises(InputError, match="synthetic"):
        spec_for("lowrank-")
    assert parse_count("250k") == 250_000 and parse_count("100m") == 100_000_000
    with pytest.raises(InputError, match="size"):
        parse_count("lots")
    with pytest.raises(InputError, match="too dense"):
        power_law_interactions(SyntheticSpec(10, 10, 90))


def test_report_sizes_and_orders_every_dataset_name():
    """The size-scaling and per-dataset sections read shaped names (a report of a
    ``synth-4m@200kx100k`` run once failed after every job had run), real data first."""
    from bench.report import _dataset_order, _size_of

    assert _size_of("synth-4m@200kx100k") == _size_of("synth-4m") == 4_000_000
    assert _size_of("synth-ml1m") is None and _size_of("lowrank-16m") is None
    names = ["lowrank-16m", "synth-4m@200kx100k", "ml-100k", "lowrank-ml1m"]
    assert sorted(names, key=_dataset_order) == [
        "ml-100k",
        "lowrank-ml1m",
        "synth-4m@200kx100k",
        "lowrank-16m",
    ]


# ---------------------------------------------------------------------- runner
def test_missing_peer_is_skipped_with_a_message(tmp_path, monkeypatch):
    fake = Method(
        "ghost-bpr",
        "collabfeat_no_such_peer_lib",
        "ghost-peer",
        "bpr",
        "nothing",
        lambda task: None,
    )
    monkeypatch.setitem(METHODS, "ghost-bpr", fake)
    assert "not installed" in missing_reason(fake)
    lines: list[str] = []
    job = {
        "kind": "fit",
        "dataset": "synth-40k",
        "method": "ghost-bpr",
        "threads": 1,
        "epochs": 1,
        "factors": 8,
    }
    records = runner.run_jobs([job], tmp_path, "test", tmp_path / "cache", log=lines.append)
    assert records[0]["status"] == "skipped"
    assert "pip install ghost-peer" in records[0]["reason"]
    assert any("ghost-bpr" in line and "skipped" in line for line in lines)
    saved = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert saved["status"] == "skipped"
    assert "skipped" in render(records, suite="test")


def test_resume_keeps_finished_jobs_of_the_same_spec_only(tmp_path, monkeypatch):
    fake = Method("ghost-bpr", "collabfeat_no_such_peer_lib", "ghost-peer", "bpr", "-", None)
    monkeypatch.setitem(METHODS, "ghost-bpr", fake)
    job = {"kind": "fit", "dataset": "synth-40k", "method": "ghost-bpr", "threads": 1}
    job |= {"epochs": 3, "factors": 8}
    rec_id = "001-fit-ghost-bpr-synth-40k-t1"
    (tmp_path / "records").mkdir()

    def run(finished_epochs: int, resume: bool) -> tuple[dict, list[str]]:
        done = {**job, "id": rec_id, "status": "ok", "epochs": finished_epochs}
        done |= {"seconds_per_epoch": 1.0, "updates_per_s": 5e6, "peak_rss_mb": 10.0}
        (tmp_path / "records" / f"{rec_id}.json").write_text(json.dumps(done))
        lines: list[str] = []
        rec = runner.run_jobs([job], tmp_path, "t", tmp_path / "c", lines.append, resume=resume)
        return rec[0], lines

    kept, lines = run(3, resume=True)
    assert (
        kept["status"] == "ok" and kept["resumed"] and "kept from the interrupted run" in lines[0]
    )
    header = render([{**kept, "status": "skipped", "reason": "-"}], suite="t")  # header only
    assert "1 of 1 jobs kept from an interrupted run" in header
    assert run(3, resume=False)[0]["status"] == "skipped"  # without --resume: run again
    assert run(5, resume=True)[0]["status"] == "skipped"  # another spec: not reused
    with pytest.raises(ValueError, match="--out"):
        runner.run_suite("tiny", resume=True, log=lambda s: None)


def test_jobs_that_would_not_fit_in_memory_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.system, "mem_available_bytes", lambda: 4 << 30)
    jobs = [
        {"kind": "prepare", "dataset": "synth-100m"},
        {
            "kind": "fit",
            "dataset": "synth-100m",
            "method": "collabfeat-squared-fang",
            "threads": 1,
            "epochs": 1,
            "factors": 8,
        },
    ]
    records = runner.run_jobs(jobs, tmp_path, "test", tmp_path / "cache", log=lambda s: None)
    assert [r["status"] for r in records] == ["skipped", "skipped"]
    assert "GiB available" in records[0]["reason"]
    assert "unavailable" in records[1]["reason"]  # its dataset was never prepared


@pytest.mark.slow
def test_tiny_suite_writes_json_markdown_and_plots(tmp_path):
    published = runner.PUBLISHED.read_bytes() if runner.PUBLISHED.exists() else None
    out, records = runner.run_suite("tiny", out_dir=tmp_path / "run", log=lambda s: None)
    # the committed page is only rewritten by quality/quick/full/vision runs into the default
    # directory
    assert (runner.PUBLISHED.read_bytes() if runner.PUBLISHED.exists() else None) == published
    for r in records:  # a peer that is not installed is skipped, everything else runs
        assert r["status"] == "ok" or "not installed" in r.get("reason", ""), r.get("reason")
    ran = {r["method"] for r in records if r["kind"] == "fit" and r["status"] == "ok"}
    assert json.loads((out / "results.json").read_text()) == records
    assert len(list((out / "records").glob("*.json"))) == len(records)
    fits = [r for r in records if r["kind"] == "fit" and r["status"] == "ok"]
    assert "collabfeat-squared-fang" in ran and "popularity" in ran
    for r in fits:
        assert 0 <= r["ndcg@10"] <= 1 and r["fit_seconds"] >= 0
    for r in (r for r in fits if r["updates_per_s"] is not None):
        for key in (
            "dataset",
            "threads",
            "factors",
            "epochs",
            "seconds_per_epoch",
            "updates_per_s",
            "peak_rss_mb",
            "auc",
            "pr",
            "precision@10",
        ):
            assert r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))
        assert 0.5 < r["auc"] <= 1.0 and abs(r["auc"] + r["pr"] - 1) < 1e-9
        assert r["machine"]["cpu_model"] and r["versions"]["numpy"]
        assert r["peak_rss_mb"] > 0 and r["updates_per_s"] > 0
    ceiling = next(r for r in records if r["kind"] == "ceiling")["rows"][0]
    assert ceiling["bandwidth_gbs"] > 0 and ceiling["cache_updates_per_s"] > 0
    sampler = next(r for r in records if r["kind"] == "sampler")
    assert sampler["samples_per_s"] > 0
    reader = next(r for r in records if r["kind"] == "reader")
    assert reader["rows"] == reader["nnz"] == 40_000 and reader["format"] == "csv"
    assert reader["seconds"] > 0 and reader["baseline_seconds"] > 0
    memory = next(r for r in records if r["kind"] == "factorize-file")
    assert memory["nnz"] == 40_000 and memory["peak_delta_mb"] > 0
    assert memory["bytes_per_interaction"] == memory["peak_delta_mb"] * 2**20 / 40_000
    # time to quality: a curve point per epoch, timed by the fit it scores
    warp = next(r for r in fits if r["method"] == "collabfeat-warp")
    assert [p["epoch"] for p in warp["curve"]] == [1, 2, 3]
    seconds = [p["seconds"] for p in warp["curve"]]
    assert 0 < seconds[0] < seconds[1] < seconds[2] == warp["fit_seconds"]
    md = (out / "RESULTS.md").read_text()
    assert "## Reader and memory" in md and "`cfcore factorize` (csv, 64 factors" in md
    assert md.index("## Time to quality") < md.index("## Targets")
    assert "| method | s to 95% |" in md and "lowrank-40k" in md
    assert "| method | threads |" in md and "collabfeat-squared-fang" in md
    if "libmf-squared" in ran:
        assert "libmf-squared" in md and "×" in md  # the same-run ratio column is filled
    pngs = sorted(out.glob("*.png"))
    assert pngs
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_states_targets_from_same_run_ratios():
    def fit(method, family, rate, auc, threads=2, dataset="synth-ml1m"):
        return {
            "status": "ok",
            "kind": "fit",
            "method": method,
            "family": family,
            "library": method.split("-")[0],
            "dataset": dataset,
            "threads": threads,
            "n_users": 6040,
            "n_items": 3706,
            "train_nnz": 800_000,
            "test_nnz": 200_000,
            "factors": 64,
            "epochs": 10,
            "seconds_per_epoch": 1.0,
            "updates_per_s": rate,
            "auc": auc,
            "pr": 1 - auc,
            "precision@10": 0.2,
            "peak_rss_mb": 100.0,
            "eval_users": 6040,
            "counting": "x",
            "id": method,
        }

    records = [
        fit("collabfeat-squared-fang", "squared", 25e6, 0.90),
        fit("libmf-squared", "squared", 10e6, 0.89),
        fit("collabfeat-warp-10", "warp", 2e6, 0.80),
        fit("lightfm-warp", "warp", 0.5e6, 0.88),
        {
            "status": "ok",
            "kind": "ceiling",
            "id": "c",
            "prefetch": "llvm.prefetch",
            "rows": [
                {
                    "threads": 2,
                    "bandwidth_gbs": 10.0,
                    "cache_updates_per_s": 50e6,
                    "cache_prefetch_updates_per_s": 40e6,
                    "dram_updates_per_s": 10e6,
                    "dram_prefetch_updates_per_s": 20e6,
                }
            ],
        },
    ]
    md = render(records, suite="test")
    row = next(line for line in md.splitlines() if line.startswith("| collabfeat-squared-fang ÷"))
    assert "**2.50×**" in row and "| met |" in row
    warp = next(line for line in md.splitlines() if line.startswith("| collabfeat-warp-10 ÷"))
    assert "**4.00×**" in warp and "not met" in warp  # below 5× and a worse AUC
    # fraction of the in-cache ceiling: 25 M/s of the best bare loop (50 M/s)
    assert "| 50% |" in md


def test_user_file_dataset_is_split_and_cached(tmp_path):
    from bench.data import load_split

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 60, 2000), rng.integers(0, 40, 2000)
    path = tmp_path / "views.csv"
    path.write_text(
        "user,item\n" + "".join(f"u{u},i{i}\n" for u, i in zip(users, items, strict=True))
    )
    split = load_split(f"file:{path}", seed=0, cache_dir=tmp_path / "cache")
    assert split.train.shape == split.test.shape == (60, 40)
    assert split.train.nnz + split.test.nnz == len(set(zip(users, items, strict=True)))
    assert split.train.multiply(split.test).nnz == 0  # disjoint
    cached = load_split(f"file:{path}", seed=0, cache_dir=tmp_path / "cache")
    assert (cached.train != split.train).nnz == 0 and (cached.test != split.test).nnz == 0
    with pytest.raises(InputError, match="unknown dataset"):
        load_split("no-such-dataset", cache_dir=None)


def test_interaction_files_hold_the_dataset_in_every_format(tmp_path):
    from bench.data import FILE_FORMATS, interaction_file, synthetic_spec
    from cfcore.readers import read_interactions

    whole = power_law_interactions(synthetic_spec("synth-20k"))
    for fmt in FILE_FORMATS:
        path = interaction_file("synth-20k", fmt, tmp_path)
        assert interaction_file("synth-20k", fmt, tmp_path) == path  # cached
        inter = read_interactions(path)
        assert inter.user_ids.dtype == np.int64 and inter.n_duplicates == 0
        assert inter.nnz == whole.nnz == 20_000
        same = whole.subset(whole.user_index(inter.user_ids), whole.item_index(inter.item_ids))
        assert (inter.user_items != same.user_items).nnz == 0


# ---------------------------------------------------------------------- vision suite
def test_vision_suite_lists_every_backbone_on_cpu_and_cuda_and_the_workers_grid():
    from bench.suites import jobs

    js = jobs("vision", threads=[1, 2])
    table = {(j["arch"], j["image_size"], j["device"]) for j in js if j["purpose"] == "table"}
    assert table == {
        (a, s, d)
        for a, s in (("small", 64), ("resnet18", 112), ("resnet18", 224))
        for d in ("cpu", "cuda")
    }
    grid = {(j["threads"], j["workers"]) for j in js if j["purpose"] == "workers"}
    assert grid == {(1, 0), (1, 1), (1, 2), (2, 1), (2, 2)}  # (2, None→0) is the table's row


@pytest.mark.slow
def test_vision_job_measures_train_and_ceiling_and_publishes_its_block(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    job = {
        "kind": "vision",
        "arch": "small",
        "image_size": 16,
        "device": "cpu",
        "threads": 1,
        "batch_size": 8,
        "items": 40,
        "epochs": 2,
        "workers": None,
        "purpose": "table",
        "images": "synthetic",
        "n_images": 40,
    }
    monkeypatch.setenv("COLLABFEAT_CACHE", str(tmp_path / "cfcache"))
    records = runner.run_jobs(
        [job], tmp_path / "run", "vision", tmp_path / "cache", log=lambda s: None
    )
    rec = records[0]
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["items"] == 40 and len(rec["epoch_images_per_s"]) == 2
    assert rec["train_images_per_s"] > 0 and rec["ceiling_images_per_s"] > 0
    assert rec["fraction"] == pytest.approx(rec["train_images_per_s"] / rec["ceiling_images_per_s"])
    assert rec["images"] == "synthetic 185×278 JPEGs" and rec["workers_effective"] == 0
    assert rec["purpose"] == "table"
    skipped = runner.skip_reason({**job, "device": "cuda"}, set())
    import torch

    assert (skipped is None) == torch.cuda.is_available()
    md = render(
        records
        + [{**rec, "device": "cuda", "arch": "resnet18", "image_size": 224, "fraction": 0.5}],
        suite="vision",
        command="python -m bench run vision",
    )
    assert "| small | 16 px | cpu |" in md and "≥ 80% ✘" in md
    # publishing: every kind of run rewrites only its own block, time to quality first
    results = tmp_path / "RESULTS.md"
    vision_begin, _ = runner.block_markers("vision")
    runner.publish_report(md, "vision", results)
    text = results.read_text()
    assert text.startswith(runner.PAGE_HEAD) and "## collabfeat benchmark: `vision` suite" in text
    runner.publish_report("# quick report\n\nnumbers\n", "quick", results)
    runner.publish_report("# quality report\n", "quality", results)
    text = results.read_text()
    assert (
        text.index("## quality report") < text.index("## quick report") < text.index(vision_begin)
    )
    runner.publish_report("# full report\n", "full", results)
    text = results.read_text()
    assert "## full report" in text and "numbers" not in text and "## quality report" in text
    assert text.count(vision_begin) == 1 and "| small | 16 px | cpu |" in text
    runner.publish_report(md.replace("16 px", "17 px"), "vision", results)
    text = results.read_text()
    assert text.count(vision_begin) == 1 and "17 px" in text and "16 px" not in text
    with pytest.raises(ValueError, match="no block"):
        runner.publish_report("# tiny\n", "tiny", results)
