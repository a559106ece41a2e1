"""``cfvision experiment`` / ``multitask`` / ``cf2label``: the grid, its table, reruns, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402
from test_multitask import make_collab_data, mt_config  # noqa: E402

from cfcore.errors import InputError  # noqa: E402
from cfvision.cli import cli  # noqa: E402
from cfvision.experiment import (  # noqa: E402
    ExperimentConfig,
    experiment_config,
    load_job,
    run_experiment,
)


@pytest.fixture()
def collab(tmp_path):
    return make_collab_data(tmp_path)


def small_grid(root, **kw) -> ExperimentConfig:
    base = mt_config(root, output=str(root / "exp"), epochs=2)
    grid = dict(
        methods=["image-only", "mtl"],
        confidences=["uniform", "interactions"],
        seeds=[0, 1],
        label_ratios=[1.0, 0.5],
    )
    return ExperimentConfig(base, **{**grid, **kw})


def test_experiment_runs_the_grid_writes_the_table_and_skips_finished_runs(collab):
    torch.set_num_threads(1)
    cfg = small_grid(collab)
    result = run_experiment(cfg, log=None)
    assert result.ran == 2 * 2 * 3 and result.skipped == 0  # seeds × ratios × variants
    exp = collab / "exp"
    for seed in (0, 1):
        assert (exp / f"seed-{seed}" / "split.csv").is_file()
        assert (exp / f"seed-{seed}" / "cf_model.npz").is_file()
        # every run of a seed used the seed's split and CF model
        for run in (exp / f"seed-{seed}").glob("ratio-*/*/result.json"):
            config = json.loads(run.read_text())["config"]
            assert config["split"] == str(exp / f"seed-{seed}" / "split.csv")
    table = (exp / "table.md").read_text()
    assert "| 1 | Image-only |" in table and "| 0.5 | MTL-reconstruct (interaction) |" in table
    assert (exp / "label_ratio.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((exp / "summary.json").read_text())["rows"]
    assert len(rows) == 2 * 3
    mtl = next(r for r in rows if r["variant"] == "mtl-uniform" and r["label_ratio"] == 1.0)
    base = next(r for r in rows if r["variant"] == "image-only" and r["label_ratio"] == 1.0)
    # the table's mAP is the mean over seeds; the change is against image-only
    assert mtl["map"] == pytest.approx(np.mean(list(mtl["per_seed"].values())))
    assert mtl["relative"] == pytest.approx((mtl["map"] - base["map"]) / base["map"])
    assert mtl["difference"] == pytest.approx(mtl["map"] - base["map"])
    assert mtl["difference_ci"][0] <= mtl["difference"] <= mtl["difference_ci"][1]
    assert 0 <= mtl["p_value"] <= 1 and "relative" not in base

    again = run_experiment(cfg, log=None)
    assert again.ran == 0 and again.skipped == 12
    assert (exp / "table.md").read_text() == table  # the same numbers from the same runs

    changed = small_grid(collab)
    changed.base.epochs = 3
    with pytest.raises(InputError, match="finished run with other settings .*epochs"):
        run_experiment(changed, log=None)


def test_an_interrupted_grid_resumes_where_it_stopped(collab):
    torch.set_num_threads(1)
    cfg = small_grid(collab, methods=["mtl"], confidences=["uniform"], seeds=[0], label_ratios=[1])
    calls = []

    def stop_second_epoch(epoch, step):
        calls.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    import cfvision.experiment as experiment

    original = experiment.train_multitask
    experiment.train_multitask = lambda run, log=None: original(run, stop_second_epoch, log)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(cfg, log=None)
    finally:
        experiment.train_multitask = original
    run = collab / "exp" / "seed-0" / "ratio-1" / "mtl-uniform"
    assert (run / "checkpoint.pt").exists() and not (run / "result.json").exists()
    messages = []
    result = run_experiment(cfg, log=messages.append)
    assert result.ran == 1 and any("(resuming)" in m for m in messages)
    assert len(json.loads((run / "result.json").read_text())["config"]) > 10


def test_job_files_name_their_errors(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('images = "img"\nlabels = "l.csv"\ninteractions = "v.csv"\noutput = "o"\n')
    cfg = load_job(job, {"epochs": 3, "seeds": [0, 1]})
    assert cfg.base.epochs == 3 and cfg.seeds == [0, 1] and cfg.label_ratios == [1.0]
    job.write_text(job.read_text() + "epochz = 3\n")
    with pytest.raises(InputError, match="unknown setting.*epochz"):
        load_job(job)
    job.write_text("images = [\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_job(job)
    with pytest.raises(InputError, match="missing interactions, output"):
        experiment_config({"images": "i", "labels": "l"})
    with pytest.raises(InputError, match="set per run by the grid"):
        experiment_config(
            {"images": "i", "labels": "l", "interactions": "v", "output": "o", "method": "mtl"}
        )
    with pytest.raises(InputError, match="methods"):
        experiment_config(
            {"images": "i", "labels": "l", "interactions": "v", "output": "o", "methods": ["x"]}
        )


# ----------------------------------------------------------------------------- the CLI
def _common(root):
    return [
        "--arch",
        "small",
        "--image-size",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--lr",
        "0.02",
        "--factors",
        "8",
        "--cf-epochs",
        "10",
        "--device",
        "cpu",
        "--quiet",
        "--n-boot",
        "50",
        "--cache-dir",
        str(root / "cache"),
    ]


def test_cli_multitask_and_cf2label(collab):
    torch.set_num_threads(1)
    runner = CliRunner()
    args = [str(collab / "img"), str(collab / "labels.csv"), str(collab / "views.csv")]
    out = runner.invoke(cli, ["multitask", *args, "-o", str(collab / "r"), *_common(collab)])
    assert out.exit_code == 0, out.output
    assert "test mAP" in out.output and (collab / "r" / "result.json").is_file()
    again = runner.invoke(cli, ["multitask", *args, "-o", str(collab / "r"), *_common(collab)])
    assert again.exit_code == 1 and "pass --resume" in again.output
    resumed = runner.invoke(
        cli, ["multitask", *args, "-o", str(collab / "r"), "--resume", *_common(collab)]
    )
    assert resumed.exit_code == 0 and "already holds all 2 epochs" in resumed.output

    # the trained trunk's features, as for any cfvision checkpoint
    feats = runner.invoke(
        cli,
        [
            "extract",
            str(collab / "img"),
            "--checkpoint",
            str(collab / "r" / "checkpoint.pt"),
            "-o",
            str(collab / "f.npz"),
            "--device",
            "cpu",
            "--quiet",
            "--cache-dir",
            str(collab / "cache"),
        ],
    )
    assert feats.exit_code == 0, feats.output
    from cfcore.vectors import load_vectors

    assert load_vectors(collab / "f.npz").vectors.shape == (72, 128)

    model = str(collab / "r" / "cf_model.npz")
    out = runner.invoke(
        cli,
        [
            "cf2label",
            model,
            str(collab / "labels.csv"),
            "-o",
            str(collab / "c2l.pt"),
            "--json",
            str(collab / "c2l.json"),
            "--n-boot",
            "50",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "CF2Label test mAP" in out.output and "vs popularity" in out.output
    summary = json.loads((collab / "c2l.json").read_text())
    assert summary["map"] > summary["popularity_map"]  # users like one class each
    from cfvision.cf2label import load_cf2label

    net, state = load_cf2label(collab / "c2l.pt")
    assert state["n_classes"] == len(summary["per_class_ap"]) == 4
    assert state["class_names"] == ["c0", "c1", "c2", "x"]
    bad = runner.invoke(cli, ["cf2label", str(collab / "labels.csv"), str(collab / "labels.csv")])
    assert bad.exit_code == 1 and "Traceback" not in bad.output


def test_cli_experiment_from_a_job_file_with_overrides(collab):
    torch.set_num_threads(1)
    job = collab / "job.toml"
    job.write_text(
        "\n".join(
            [
                f'images = "{collab / "img"}"',
                f'labels = "{collab / "labels.csv"}"',
                f'interactions = "{collab / "views.csv"}"',
                f'output = "{collab / "exp"}"',
                'methods = ["image-only", "contrastive"]',
                "seeds = [0]",
                "label_ratios = [1.0]",
                "epochs = 5",
            ]
        )
        + "\n"
    )
    out = CliRunner().invoke(cli, ["experiment", str(job), *_common(collab)])
    assert out.exit_code == 0, out.output
    assert "Contrastive-loss" in out.output and "ran 2, already finished 0" in out.output
    config = json.loads(
        (collab / "exp" / "seed-0" / "ratio-1" / "contrastive" / "result.json").read_text()
    )["config"]
    assert config["epochs"] == 2  # the command line overrides the job file
    none = CliRunner().invoke(cli, ["experiment"])
    assert none.exit_code == 2 and "give a JOB file" in none.output
