"""Pipeline jobs: the job file's validator, the run directory, kill -9 and rerun, the report.

The end-to-end tests run ``cfvision pipeline`` as a user does — a subprocess — on a tiny
simulated world (300 users, 400 items, 16 px images; every stage seeded, one thread), so the
outputs of two runs can be compared array for array.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cfcore.pipeline import JobError, RunDir, RunLockedError, parse_job
from cfcore.pipeline.job import MULTITASK_KEYS, STAGE_NAMES, TRAIN_KEYS, stage_params

ROOT = Path(__file__).resolve().parents[1]

TINY_JOB = """\
[job]
seed = 0
threads = 1
device = "cpu"

[data]
simulate = { n_users = 300, n_items = 400, n_views = 9000, n_classes = 4, image_size = 16 }

[split]
test_fraction = 0.2

[factorize]
factors = 16
epochs = 5

[cluster]
k = 4

[train]
arch = "small"
image_size = 16
epochs = 3
batch_size = 32

[evaluate]
R = 20
bootstrap = 200
"""

#: Every output whose content must not depend on how often the job was stopped.
COMPARED = (
    "data/views.npz",
    "split/train_views.npz",
    "split/fit_views.npz",
    "split/valid_views.npz",
    "split/test_items.csv",
    "negatives/negatives.npz",
    "factorize/model.npz",
    "cluster/labels.npz",
    "extract/learned.npz",
    "extract/random.npz",
    "evaluate/result.json",
)


# ----------------------------------------------------------------------------- the job file
def _job(text: str, tmp_path: Path | None = None):
    path = (tmp_path or Path(".")) / "job.toml"
    return parse_job(text, path)


def test_tiny_job_is_valid_and_lists_every_stage():
    job = _job(TINY_JOB)
    optional = ("multitask", "tags")  # absent
    assert job.stages() == [s for s in STAGE_NAMES if s not in optional]
    assert "multitask" in _job(TINY_JOB + "[multitask]\nepochs = 1\n").stages()
    assert "tags" in _job(TINY_JOB + "[tags]\nepochs = 1\n").stages()
    assert job.simulated and job.threads == 1 and job.seed == 0
    assert stage_params(job, "factorize")["factors"] == 16


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[cluster]\nk = 4", "[clusters]\nk = 4"), r"job.toml:16: \[clusters\]: unknown table"),
        (("epochs = 5", "epoch = 5"), r"job.toml:14: \[factorize\] epoch: unknown key"),
        (("epochs = 5", 'epochs = "five"'), r"job.toml:14: \[factorize\] epochs: must be an int"),
        (('arch = "small"', 'arch = "vgg"'), r":20: \[train\] arch: must be one of alexnet"),
        (("threads = 1", "threads = true"), r":3: \[job\] threads: must be an integer"),
        (("n_classes = 4", "n_class = 4"), r":7: \[data\] simulate: unknown simulate option"),
        (("n_classes = 4", "n_classes = 0"), r":7: \[data\] simulate: n_classes must be >= 1"),
        (("factors = 16", 'factors = 16\nloss = "hinge"'), r":14: \[factorize\] loss: "),
        (("test_fraction = 0.2", "test_fraction = 1.5"), r":10: \[split\] test_fraction: must lie"),
        (("[data]\n", '[data]\nsource = "ml-100k"\n'), r":6: \[data\]: give exactly one of"),
        (("seed = 0", "seed = 0\nseed = 1"), r"not valid TOML"),
        (("[evaluate]", '[multitask]\nmethods = ["mlt"]\n[evaluate]'), r":26: \[multitask\] meth"),
        (
            ("[evaluate]", "[tags]\nepoch = 3\n[evaluate]"),
            r":26: \[tags\] epoch: unknown key; "
            r"\[tags\] takes balance_top, dim, distributions, epochs",
        ),
        (
            ("[evaluate]", '[tags]\nmodels = ["bilinear", "4-way"]\n[evaluate]'),
            r":26: \[tags\] models: models are some of frequency, bilinear",
        ),
        (("[evaluate]", "[tags]\nusers = true\n[evaluate]"), r":26: \[tags\] users: a user attrib"),
        (
            ("[evaluate]", '[tags]\nusers = "u.csv"\n[evaluate]'),
            r":26: \[tags\] users: .*u.csv: no ",
        ),
        (("[evaluate]", "[tags]\nlearning_rate = -1\n[evaluate]"), r":26: \[tags\] learning_rate"),
        (
            ("[evaluate]", '[tags]\nsplit = "users"\nusers = false\n[evaluate]'),
            r":26: \[tags\] split: users needs user attributes",
        ),
        (
            ("image_size = 16 }", "image_size = 16, tag_rate = 0 }\n[tags]"),
            r":8: \[tags\]: the world has no tags \(simulate tag_rate = 0\)",
        ),
    ],
)
def test_job_errors_name_the_line_and_key(edit, message):
    old, new = edit
    assert old in TINY_JOB
    with pytest.raises(JobError, match=message):
        _job(TINY_JOB.replace(old, new, 1))


def test_job_without_data_and_missing_files(tmp_path):
    with pytest.raises(JobError, match=r"no \[data\] table"):
        _job("[job]\nseed = 1\n")
    text = '[data]\nsource = "views.csv"\nimages = "img"\n'
    with pytest.raises(JobError, match=r"job.toml:2: \[data\] source: .*views.csv: no such file"):
        _job(text, tmp_path)
    (tmp_path / "views.csv").write_text("user_id,item_id\n1,2\n")
    with pytest.raises(JobError, match=r"job.toml:3: \[data\] images: .*img: no such file"):
        _job(text, tmp_path)


def test_train_keys_are_trainconfig_fields():
    pytest.importorskip("torch")
    from dataclasses import fields

    from cfvision.train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    assert set(TRAIN_KEYS) <= names
    # what the job sets itself is not a key
    assert not {"images", "labels", "output", "seed", "device", "resume"} & set(TRAIN_KEYS)
    from cfvision.multitask import MultitaskConfig

    assert set(MULTITASK_KEYS) - {"methods"} <= {f.name for f in fields(MultitaskConfig)}


def test_negatives_stage_draws_what_the_fixed_negative_factorizer_trains_on():
    """With resample_negatives = false the factorizer's one draw is the stage's file."""
    from cfcore.factorize import Factorizer
    from cfcore.pipeline.job import factorizer_params, negative_params
    from cfcore.sampling import sample_negatives
    from cfcore.simulate import simulate

    job = _job(TINY_JOB.replace("epochs = 5", "epochs = 5\nresample_negatives = false"))
    views = simulate(n_users=100, n_items=1000, n_views=2000, seed=0).views
    p = negative_params(job)
    stage = sample_negatives(views, p["neg_ratio"], p["neg_weighting"], seed=job.seed)
    model = Factorizer(**factorizer_params(job))
    indptr, indices = model._negative_arrays(views.user_items, model._resolve())
    assert np.array_equal(stage.indptr, indptr) and np.array_equal(stage.indices, indices)


# ----------------------------------------------------------------------------- run directory
def test_lock_refuses_a_second_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunLockedError, match=r"in use by another job \(pid \d+"), run.lock():
            pass
    with run.lock():  # released
        pass


def test_commit_replaces_a_stage_folder_whole(tmp_path):
    run = RunDir(tmp_path)
    run.begin("split", "k1")
    (run.partial("split") / "a.txt").write_text("one")
    run.commit("split", {"key": "k1"})
    run.begin("split", "k2")
    (run.partial("split") / "b.txt").write_text("two")
    assert not run.recover("split", "other-key")
    run.commit("split", {"key": "k2"})
    assert sorted(p.name for p in run.stage("split").iterdir()) == [".key", "b.txt", "stage.json"]
    assert run.record("split")["key"] == "k2" and not run.partial("split").exists()


def test_a_stopped_partial_folder_is_kept_only_for_a_resumable_stage_with_the_same_key(tmp_path):
    run = RunDir(tmp_path)
    assert not run.begin("train", "k1", resumable=True)
    (run.partial("train") / "checkpoint.pt").write_text("epoch 1")
    assert run.begin("train", "k1", resumable=True)  # kept: continue from the checkpoint
    assert (run.partial("train") / "checkpoint.pt").exists()
    assert not run.begin("train", "k2", resumable=True)  # other parameters: start over
    assert not (run.partial("train") / "checkpoint.pt").exists()
    (run.partial("train") / "x").write_text("")
    assert not run.begin("train", "k2")  # not resumable: always start over
    assert not (run.partial("train") / "x").exists()


# ----------------------------------------------------------------------------- end to end
def tiny_stages() -> list[str]:
    return _job(TINY_JOB).stages()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _pipeline(job: Path, run: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cfvision", "pipeline", str(job), "--run-dir", str(run), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


def _same_outputs(a: Path, b: Path) -> None:
    for rel in COMPARED:
        if rel.endswith(".npz"):
            with np.load(a / rel) as x, np.load(b / rel) as y:
                assert x.files == y.files, rel
                for key in x.files:
                    if key != "__collabfeat__":  # headers hold timings and paths
                        assert np.array_equal(x[key], y[key]), f"{rel}:{key}"
        elif rel.endswith(".json"):
            assert json.loads((a / rel).read_text()) == json.loads((b / rel).read_text()), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("job") / "tiny.toml"
    path.write_text(TINY_JOB)
    return path


@pytest.fixture(scope="module")
def finished_run(tiny_job, tmp_path_factory) -> Path:
    """One uninterrupted run of the tiny job."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = _pipeline(tiny_job, run)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (
        "ran: data, split, negatives, factorize, cluster, train, extract, evaluate" in proc.stdout
    )
    return run


def test_sigkill_mid_stage_then_rerun_equals_an_uninterrupted_run(tiny_job, finished_run, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cfvision", "pipeline", str(tiny_job), "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env())
    deadline = time.monotonic() + 240
    # kill -9 the job while the CNN trains: its first epoch's checkpoint is on disk
    while not (run / "train.partial" / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the train stage never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert (run / "cluster" / "stage.json").exists() and not (run / "train").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert not manifest["complete"] and "cluster" in manifest["stages"]

    # a second job waits for nobody: the killed job's stage process died with it
    rerun = _pipeline(tiny_job, run)
    assert rerun.returncode == 0, rerun.stderr + rerun.stdout
    for stage in ("data", "split", "negatives", "factorize", "cluster"):
        assert f"{stage:<10} skip (up to date)" in rerun.stdout
    assert "ran: train, extract, evaluate, report" in rerun.stdout
    assert "continuing the stopped run from its checkpoint" in rerun.stdout
    assert "resumed from" in rerun.stdout
    assert not list(run.glob("*.partial")) and not list(run.glob(".*.old"))
    _same_outputs(finished_run, run)
    for stage in tiny_stages():  # every record lists what the issue asks for
        record = json.loads((run / stage / "stage.json").read_text())
        assert {"key", "params", "upstream", "external", "versions", "seconds", "outputs"} <= set(
            record
        )
    assert json.loads((run / "manifest.json").read_text())["complete"]


def test_rerun_skips_and_a_changed_option_reruns_only_downstream(tiny_job, finished_run):
    again = _pipeline(tiny_job, finished_run)
    assert again.returncode == 0 and "ran: nothing (every stage up to date)" in again.stdout
    changed = tiny_job.with_name("changed.toml")
    changed.write_text(TINY_JOB.replace("epochs = 3", "epochs = 4"))
    plan = _pipeline(changed, finished_run, "--dry-run")
    assert plan.returncode == 0
    lines = dict(line.split(None, 1) for line in plan.stdout.splitlines())
    assert all(lines[s].startswith("skip") for s in ("data", "factorize", "cluster"))
    assert lines["train"].startswith("run  parameters changed")
    forced = _pipeline(tiny_job, finished_run, "--dry-run", "--from", "cluster")
    assert "cluster    run  forced (--from)" in forced.stdout
    assert "factorize  skip" in forced.stdout


def test_second_job_on_a_locked_run_directory_fails_clearly(tiny_job, tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        proc = _pipeline(tiny_job, run.root)
    assert proc.returncode == 1
    assert "in use by another job (pid" in proc.stderr and "Traceback" not in proc.stderr


def test_report_is_one_self_contained_page(finished_run):
    report = finished_run / "report"
    html = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    for section in ("Data", "Collaborative filtering", "Pseudo-classes", "CNN training",
                    "Retrieval and linear probe", "Timings"):  # fmt: skip
        assert f"<h2>{section}" in html and f"## {section}" in md
    srcs = [s.split('"', 1)[0] for s in html.split('src="')[1:]]
    assert len(srcs) >= 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for png in ("cf_validation.png", "cluster_sizes.png", "cnn_training.png", "retrieval.png"):
        assert f"]({png})" in md and (report / png).stat().st_size > 1000
    assert "random init" in md and "95% CI" in md and "owner viewed" in md


def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    from cfvision.report import find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip("no chromium on the PATH (apt-get install chromium) to render the report")
    png = screenshot(finished_run / "report" / "report.html", tmp_path / "shot.png", 1000, 1400)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1000, 1400)
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    # a rendered page, not a blank one: text and figures make many dark pixels
    assert (pixels < 128).mean() > 0.01 and pixels.std() > 20


def test_adding_the_multitask_stage_runs_only_it_and_the_report(tiny_job, finished_run):
    job = tiny_job.with_name("multitask.toml")
    job.write_text(
        TINY_JOB + '[multitask]\nmethods = ["image-only", "mtl"]\narch = "small"\nimage_size = 16\n'
        "epochs = 1\ncf_epochs = 3\nfactors = 8\nn_boot = 50\n"
    )
    proc = _pipeline(job, finished_run)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "ran: multitask, report" in proc.stdout
    result = json.loads((finished_run / "multitask" / "result.json").read_text())["methods"]
    assert set(result) == {"image-only", "mtl-uniform"}
    assert all(0 < r["test_map"] <= 1 and r["n_test"] > 0 for r in result.values())
    md = (finished_run / "report" / "report.md").read_text()
    assert "## Multitask" in md and "| mtl-uniform |" in md


def test_adding_the_tags_stage_runs_it_on_both_feature_sets_and_reports(tiny_job, finished_run):
    job = tiny_job.with_name("tags.toml")
    job.write_text(TINY_JOB + '[tags]\nmodels = ["frequency", "bilinear", "3-way"]\nepochs = 5\n')
    proc = _pipeline(job, finished_run)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "ran: tags, report" in proc.stdout  # the world's tags.csv came with the data stage
    result = json.loads((finished_run / "tags" / "result.json").read_text())
    assert result["users"] == "attributes" and result["read"]["applications"] > 1000
    sets = {s["features"]: {m["model"]: m for m in s["models"]} for s in result["sets"]}
    assert set(sets) == {"learned (pseudo-classes)", "random init"}
    for models in sets.values():
        assert list(models) == ["frequency", "bilinear", "3-way"]
        assert all(0 <= m[k] <= 1 for m in models.values() for k in ("P@1", "R@10", "A@10"))
        # the user's focus (shapes or colours) is what the item alone cannot tell
        assert models["3-way"]["P@1"] > models["bilinear"]["P@1"] > models["frequency"]["P@1"]
    md = (finished_run / "report" / "report.md").read_text()
    assert "## Tags: user-conditional tag prediction" in md
    assert "| learned (pseudo-classes) | natural | 3-way |" in md and "| random init |" in md
    again = _pipeline(job, finished_run)
    assert again.returncode == 0 and "ran: nothing (every stage up to date)" in again.stdout


def test_data_stage_reads_a_dataset_name_or_a_file_and_filters(tmp_path, ml100k_path):
    from cfcore.interactions import Interactions
    from cfcore.pipeline.stages import StageContext, stage_data

    (tmp_path / "img").mkdir()
    (tmp_path / "views.csv").write_text(
        "user_id,item_id\n" + "".join(f"{u},{i}\n" for u in range(6) for i in range(u + 1))
    )
    jobs = {
        'source = "ml-100k"\nmin_rating = 4': (943, 1682, None),
        'source = "views.csv"\nmin_interactions = 3': (4, 4, 3 + 4 + 4 + 4),
    }
    for options, (users, items, nnz) in jobs.items():
        job = parse_job(f'[data]\n{options}\nimages = "img"\n', tmp_path / "job.toml")
        run = RunDir(tmp_path / "run")
        run.begin("data", "k")
        result = stage_data(StageContext(job, run, "data", run.partial("data"), lambda _m: None))
        views = Interactions.load(run.partial("data") / "views.npz")
        assert result["stats"]["interactions"] == views.nnz
        if nnz is None:  # ratings >= 4 of ml-100k
            assert views.nnz == 55375 and result["read"]["interactions"] == 55375
        else:  # items and users with >= 3: items 0..3, users 2..5 (then item 3 has 3 viewers)
            assert (views.n_users, views.n_items, views.nnz) == (users, items, nnz)
            assert result["read"]["items"] == 6
