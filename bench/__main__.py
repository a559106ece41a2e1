"""Command line of the benchmark: ``python -m bench {run,list,report,worker}``.

Examples
--------
``python -m bench run quality`` (``make bench-quality``, the time-to-quality headline) ·
``python -m bench run quick`` (``make bench``) · ``python -m bench run full --threads 1,2,4``
· ``python -m bench run quick --methods collabfeat-squared-fang,libmf-squared --datasets file:u.data``
· ``python -m bench list`` · ``python -m bench report bench/results/quick-20260101-120000``
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from bench.suites import SUITES


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _threads(text: str) -> list[int]:
    try:
        out = [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads: expected e.g. 1,2,4, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--threads: thread counts must be >= 1, got {text!r}")
    return out


def cmd_list(_: argparse.Namespace) -> int:
    from bench import suites
    from bench.methods import METHODS, missing_reason

    print("suites:")
    for s in suites.SUITES:
        jobs = suites.jobs(s)
        print(f"  {s:6s} {len(jobs):3d} jobs, threads {suites.default_threads(s)}")
    print(
        "datasets: ml-100k, ml-latest-small, ml-1m (data directory), synth-ml1m "
        "(6,040 × 3,706, 1 M), synth-<N> (e.g. synth-16m: 200k × 100k), lowrank-ml1m and "
        "lowrank-<N> (the same shapes, planted low-rank structure), file:<path>"
    )
    print("methods:")
    for name, m in METHODS.items():
        why = missing_reason(m)
        print(
            f"  {name:20s} {m.family:9s} {'available' if why is None else 'MISSING'}"
            f"  updates = {m.counting}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.runner import run_suite

    if args.resume and args.out is None:
        print("--resume: name the interrupted run's directory with --out", file=sys.stderr)
        return 2
    command = "python -m bench " + " ".join(shlex.quote(a) for a in args.argv)
    run_suite(
        args.suite,
        out_dir=args.out,
        threads=args.threads,
        methods=_csv(args.methods) if args.methods else None,
        datasets=_csv(args.datasets) if args.datasets else None,
        publish=args.publish,
        timeout=args.timeout,
        command=command,
        resume=args.resume,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    run = Path(args.run_dir)
    if (run / "results.json").exists():
        records = json.loads((run / "results.json").read_text())
    else:  # an interrupted run: the per-job records
        records = [json.loads(p.read_text()) for p in sorted((run / "records").glob("*.json"))]
    write_report(
        records,
        run,
        suite=records[0].get("suite", "") if records else "",
        command="python -m bench report " + str(run),
    )
    print(run / "RESULTS.md")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from bench.worker import main

    return main(args.job, args.record)


def main(argv: list[str] | None = None) -> int:

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "run",
        help="run a suite: quality (make bench-quality), quick (make bench), full, vision, "
        "spark, tags, tiny",
    )
    p.add_argument("suite", choices=SUITES)
    p.add_argument("--out", type=Path, default=None, help="run directory")
    p.add_argument("--threads", type=_threads, default=None, help="e.g. 1,2,4")
    p.add_argument("--methods", default=None, help="comma-separated method names")
    p.add_argument(
        "--datasets",
        default=None,
        help="run the per-dataset block on these instead (e.g. ml-1m,file:ratings.csv)",
    )
    p.add_argument("--timeout", type=int, default=None, help="seconds per job")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out: keep its finished jobs, run the rest",
    )
    p.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the Markdown report into the suite's block of bench/RESULTS.md "
        "(quality first, then throughput from quick/full, then vision)",
    )
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("list", help="suites, datasets and methods (and which are installed)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("report", help="rebuild RESULTS.md and plots from a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("worker", help=argparse.SUPPRESS)
    p.add_argument("job")
    p.add_argument("record")
    p.set_defaults(func=cmd_worker)
    args = parser.parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
