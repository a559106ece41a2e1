"""Named benchmark suites: which jobs a run consists of.

- ``quick`` (``make bench``; < 10 minutes on 2 cores): the ceiling; the issue's targets —
  collabfeat vs libmf (squared loss, the same sampled negatives) and vs implicit BPR on
  MovieLens-1M-sized synthetic data and on 16 M synthetic interactions, collabfeat WARP vs
  LightFM WARP, each at 1 and 2 threads; the remaining peers once; quality vs epochs on the
  ML-1M shape and on ml-100k; size scaling 1 M → 4 M → 16 M; sampler and k-means lines; the
  interaction-file reader on 4 M rows in each format against a pyarrow baseline; the peak
  memory of ``cfcore factorize`` on a CSV (1 M and 4 M, synth-16m's shape).
- ``full`` (``make bench-full``): every method everywhere it is affordable, threads
  1, 2, 4, … up to all cores, sizes 1 M → 100 M (as far as memory allows), ml-latest-small.
- ``quality`` (``make bench-quality``; ~10 minutes on 2 cores): time to quality, the headline —
  every method's held-out NDCG@10, P@10 and AUC after every epoch, with the wall time to get
  there, on ml-100k, ml-latest-small and planted low-rank data of MovieLens-1M's shape and of
  16 M interactions, at the largest thread count; implicit ALS and popularity in every one.
- ``vision``: ``cfvision train`` images/s next to the model's ceiling (the same model,
  optimizer and batch size on random tensors already in memory) per backbone — the small CNN
  at 64 px, resnet18 at 112 and 224 px — on the CPU (at max threads, plus the small CNN's
  DataLoader workers × threads grid) and, when a CUDA device is present, on the GPU.
- ``spark`` (``python -m bench run spark``; ~7 minutes on 2 cores): the Spark backend — DSGD
  (:class:`cfcore.spark.SparkFactorizer`, squared and BPR) against Spark MLlib ALS with
  implicit preferences, on ``local[1]`` and ``local[2]``, with the single-machine factorizer
  as the reference, on ml-100k and MovieLens-1M-sized synthetic data (10 epochs); published
  as its own block of ``bench/RESULTS.md``.
- ``tiny`` (the tests): seconds, to check the harness end to end.
- ``tags``: tag prediction (Denton et al. 2015) — collabfeat's tag models against LightFM on
  synthetic and MovieLens tags, quality and examples/s (:mod:`bench.tags`).

``threads`` may be overridden (``--threads 1,2,4``); the largest value is the "max threads"
used for the single-thread-count jobs.
"""

from __future__ import annotations

from typing import Any

from bench.data import FILE_FORMATS
from bench.system import cpu_count

SUITES = ("quick", "full", "quality", "vision", "spark", "tags", "tiny")

#: The ``spark`` suite's methods: DSGD on Spark, MLlib ALS, and the single-machine reference.
SPARK_METHODS = ("collabfeat-squared", "spark-dsgd-squared", "spark-dsgd-bpr", "spark-als")

CF_TARGETS = (
    "collabfeat-squared-fang",
    "libmf-squared",
    "collabfeat-bpr",
    "implicit-bpr",
    "collabfeat-warp-10",
    "lightfm-warp",
)
OTHERS = (
    "collabfeat-squared",
    "collabfeat-warp",
    "collabfeat-squared-random",
    "collabfeat-logistic",
    "libmf-bpr-row",
    "implicit-als",
    "cornac-bpr",
    "lightfm-bpr",
)
LARGE = ("collabfeat-squared-fang", "libmf-squared", "collabfeat-bpr", "implicit-bpr")

#: The quality suite's methods: every collabfeat loss at its library defaults, Fang et al.'s own
#: setting of the squared loss, the peers users pick for top-k, and the popularity floor.
QUALITY = (
    "popularity",
    "implicit-als",
    "collabfeat-squared",
    "collabfeat-logistic",
    "collabfeat-bpr",
    "collabfeat-warp",
    "collabfeat-squared-fang",
    "lightfm-warp",
    "libmf-squared",
    "implicit-bpr",
)
QUALITY_DATASETS = ("ml-100k", "ml-latest-small", "lowrank-ml1m", "lowrank-16m")


def quality_epochs(method: str, dataset: str) -> tuple[int, tuple[int, ...]]:
    """``(epochs, checkpoint epochs)`` of ``method`` in the quality suite: ALS its library's 15
    iterations, every SGD method collabfeat's and libmf's default 20 epochs (10 on the 16 M
    data, and 3 for LightFM there, at 15 s an epoch); curves at every epoch, except for the
    peers without a per-epoch hook, which are refit for each checkpoint."""
    big = dataset.endswith("16m")
    if method == "popularity":
        return 1, (1,)
    if method == "implicit-als":
        epochs = 15
    elif method == "lightfm-warp" and big:
        epochs = 3
    else:
        epochs = 10 if big else 20
    if method.startswith(("libmf", "cornac")):
        refits = (2, 5) if big else (1, 2, 4, 8)
        curve = tuple(e for e in refits if e < epochs) + (epochs,)
    else:
        curve = tuple(range(1, epochs + 1))
    return epochs, curve


def default_threads(suite: str) -> list[int]:
    cores = cpu_count()
    if suite == "tiny":
        return [1]
    if suite == "quality":
        return [min(2, cores)]  # the comparison: two threads
    if suite == "vision":
        return sorted({1, cores})
    if suite in ("quick", "tags", "spark"):
        return sorted({1, min(2, cores)})
    out, t = [], 1
    while t < cores:
        out.append(t)
        t *= 2
    return sorted({*out, cores})


def _fit(
    dataset: str,
    method: str,
    threads: int,
    epochs: int,
    purpose: str,
    *,
    curve: tuple[int, ...] = (),
    eval_users: int = 1000,
    factors: int = 64,
    timeout: int = 900,
) -> dict[str, Any]:
    return {
        "kind": "fit",
        "dataset": dataset,
        "method": method,
        "threads": threads,
        "epochs": epochs,
        "factors": factors,
        "curve_epochs": list(curve),
        "eval_users": eval_users,
        "purpose": purpose,
        "timeout": timeout,
    }


def jobs(
    suite: str, threads: list[int] | None = None, datasets: list[str] | None = None
) -> list[dict[str, Any]]:
    """The job list of ``suite`` (without ids; the runner numbers them).

    With ``datasets``, the suite runs its per-dataset block — every target method at every
    thread count (quality curve at the largest), the other peers once, the sampler — on those
    datasets (e.g. ``file:ratings.csv``) instead of its standard list; the ceiling and
    k-means lines stay.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    T = sorted(set(threads or default_threads(suite)))
    top = T[-1]
    out: list[dict[str, Any]] = []
    if suite == "quality":
        for d in datasets or QUALITY_DATASETS:
            out.append({"kind": "prepare", "dataset": d, "timeout": 1800})
            big = d.endswith("16m")
            for m in QUALITY:
                epochs, curve = quality_epochs(m, d)
                out.append(
                    _fit(d, m, top, epochs, "quality", curve=curve, eval_users=500 if big else 1500)
                )
        return out
    if suite == "vision":
        return vision_jobs(T)
    if suite == "tags":
        from bench.tags import jobs as tag_jobs

        return [j for j in tag_jobs(T) if not datasets or j["dataset"] in datasets]
    if suite == "tiny":
        out.append(
            {
                "kind": "ceiling",
                "threads_list": T,
                "samples": 200_000,
                "triad_n": 1 << 20,
                "dram_shape": [20_000, 10_000],
            }
        )
        for d in datasets or ["synth-40k"]:
            out.append({"kind": "prepare", "dataset": d})
            for m in ("collabfeat-squared-fang", "libmf-squared"):
                out.append(_fit(d, m, top, 3, "throughput", curve=(1, 3), eval_users=300))
            out.append({"kind": "sampler", "dataset": d, "threads": top})
        out.append({"kind": "prepare", "dataset": "lowrank-40k"})
        for m in ("popularity", "collabfeat-warp", "implicit-als"):
            epochs = 1 if m == "popularity" else 3
            curve = tuple(range(1, epochs + 1))
            out.append(_fit("lowrank-40k", m, top, epochs, "quality", curve=curve, eval_users=300))
        out.append({"kind": "kmeans", "threads": top, "n": 4000, "d": 16, "k": 40, "niter": 5})
        out += _reader_jobs(["synth-40k"], ("csv",), ["synth-40k"], top)
        return out

    if suite == "spark":
        for d in datasets or ["ml-100k", "synth-ml1m"]:
            out.append({"kind": "prepare", "dataset": d, "timeout": 1800})
            for t in T:
                for m in SPARK_METHODS:
                    out.append(_fit(d, m, t, 10, "spark", eval_users=1500, timeout=1800))
        return out

    full = suite == "full"
    ml1m_epochs = 20 if full else 10
    ml1m_users = 6040 if full else 1500  # evaluation dominates the quick suite's time otherwise
    ml1m_curve = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20) if full else (1, 2, 3, 4, 5, 6, 8, 10)
    sizes = (
        ["synth-1m", "synth-4m", "synth-16m", "synth-32m", "synth-64m", "synth-100m"]
        if full
        else ["synth-1m", "synth-4m", "synth-16m"]
    )
    out.append({"kind": "ceiling", "threads_list": T, "samples": 20_000_000 if full else 4_000_000})
    if datasets:
        for d in datasets:
            out.append({"kind": "prepare", "dataset": d, "timeout": 1800})
            for t in T:
                for m in CF_TARGETS + (OTHERS if full else ()):
                    curve = ml1m_curve if t == top else ()
                    out.append(_fit(d, m, t, ml1m_epochs, "custom", curve=curve, eval_users=1500))
            if not full:
                for m in OTHERS:
                    out.append(
                        _fit(d, m, top, ml1m_epochs, "custom", curve=ml1m_curve, eval_users=1500)
                    )
            for t in T:
                out.append({"kind": "sampler", "dataset": d, "threads": t})
        out.append({"kind": "kmeans", "threads": top})
        return out
    datasets = ["synth-ml1m", "ml-100k", *sizes] + (["ml-latest-small"] if full else [])
    for d in datasets:
        out.append({"kind": "prepare", "dataset": d, "timeout": 1800})

    # MovieLens-1M shape: the targets at every thread count, the other peers once.
    for t in T:
        for m in CF_TARGETS + (OTHERS if full else ()):
            curve = ml1m_curve if t == top else ()
            out.append(
                _fit("synth-ml1m", m, t, ml1m_epochs, "targets", curve=curve, eval_users=ml1m_users)
            )
    if not full:
        for m in OTHERS:
            if m == "lightfm-bpr":
                continue  # ~4 s/epoch here; in the full suite
            out.append(
                _fit(
                    "synth-ml1m",
                    m,
                    top,
                    ml1m_epochs,
                    "peers",
                    curve=ml1m_curve,
                    eval_users=ml1m_users,
                )
            )
    # 16 M synthetic: tables in DRAM.
    big_epochs = 3
    big_users = 2000 if full else 500  # scoring 100k items per user is the slow part
    for t in T:
        for m in LARGE + (("lightfm-warp", "collabfeat-warp-10", "cornac-bpr") if full else ()):
            if m == "implicit-bpr" and not full and t != top:
                continue  # not a target; ~1 min per run here
            out.append(_fit("synth-16m", m, t, big_epochs, "targets", eval_users=big_users))
    # the cache-friendly order vs the classical random order, where it matters most
    out.append(
        _fit(
            "synth-16m", "collabfeat-squared-random", top, big_epochs, "order", eval_users=big_users
        )
    )
    # Size scaling at max threads (16 M is covered above).
    for d in sizes:
        if d == "synth-16m":
            continue
        for m in LARGE if full else ("collabfeat-squared-fang", "libmf-squared"):
            out.append(
                _fit(d, m, top, 3 if d not in ("synth-1m", "synth-4m") else 5, "size", timeout=1800)
            )
    # Real data quality at max threads.
    real = ["ml-100k"] + (["ml-latest-small"] if full else [])
    for d in real:
        for m in CF_TARGETS + (OTHERS if full else ()):
            out.append(_fit(d, m, top, 20, "quality", curve=(1, 2, 5, 10, 20), eval_users=0))
    for d in ("synth-ml1m", "synth-16m"):
        for t in T:
            out.append({"kind": "sampler", "dataset": d, "threads": t})
    for t in T if full else [top]:
        out.append({"kind": "kmeans", "threads": t})
    # The reader on 4 M interactions in every format, and the peak memory of
    # `cfcore factorize` on a CSV at 1 M, 4 M (and 16 M), all with synth-16m's shape.
    big = ["synth-1m@200kx100k", "synth-4m@200kx100k"] + (["synth-16m"] if full else [])
    readers = ["synth-4m@200kx100k"] + (["synth-16m"] if full else [])
    out += _reader_jobs(readers, tuple(FILE_FORMATS), big, top)
    out.append(dict(out[0]))  # the ceiling again at the end; the report keeps the better one
    return out


def _reader_jobs(
    datasets: list[str], formats: tuple[str, ...], memory: list[str], threads: int
) -> list[dict[str, Any]]:
    """``reader`` jobs for ``datasets`` × ``formats``, ``factorize-file`` jobs (64 factors, one
    epoch, a CSV) for the ``memory`` datasets."""
    jobs = [{"kind": "reader", "dataset": d, "format": f} for d in datasets for f in formats]
    jobs += [
        {
            "kind": "factorize-file",
            "dataset": d,
            "format": "csv",
            "factors": 64,
            "epochs": 1,
            "threads": threads,
            "timeout": 1800,
        }
        for d in memory
    ]
    return jobs


#: (arch, crop, CPU batch, CPU items, CPU epochs): CPU sizes keep each job within ~1 minute
#: on 2 cores; the GPU runs every config on all 1,661 posters, batch 256.
VISION_CONFIGS = (
    ("small", 64, 64, 1661, 3),
    ("resnet18", 112, 64, 512, 3),
    ("resnet18", 224, 32, 128, 3),
)


def _vision(arch, size, device, threads, batch, items, epochs, workers=None, purpose="table"):
    return {
        "kind": "vision",
        "arch": arch,
        "image_size": size,
        "device": device,
        "threads": threads,
        "batch_size": batch,
        "items": items,
        "epochs": epochs,
        "workers": workers,
        "purpose": purpose,
        "timeout": 1200,
    }


def vision_jobs(threads: list[int]) -> list[dict[str, Any]]:
    """The ``vision`` suite: every config on the CPU at the largest thread count and on CUDA
    (skipped without a GPU); the small CNN's workers × threads grid on the CPU."""
    top = threads[-1]
    out = [_vision(a, s, "cpu", top, b, n, e) for a, s, b, n, e in VISION_CONFIGS]
    for t in threads:
        for w in (0, 1, 2):
            if (t, w) != (top, 0):  # (top, 0) is the table's own row
                out.append(_vision("small", 64, "cpu", t, 64, 1661, 3, w, "workers"))
    out += [_vision(a, s, "cuda", top, 256, 1661, 5) for a, s, _, _, _ in VISION_CONFIGS]
    return out
