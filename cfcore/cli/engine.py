"""``cfcore sample-negatives | factorize | evaluate | recommend | similar``: the engine's CLI.

A thin shell over the library: models are read, scored and folded into by
:mod:`cfcore.model` (the one owner of factor-model files), interactions with raw ids are moved
onto a model by :meth:`cfcore.model.FactorModel.project`; the commands add argument parsing,
messages and file names. Every command reads its inputs completely and checks them before it
writes anything; every output is written atomically (a temporary file renamed into place), so
a failure leaves no half-written file behind. Errors are one line and exit status 1 (usage
errors: 2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from cfcore.cli.common import (
    columns_option,
    data_dir_option,
    format_option,
    input_paths,
    load_input,
    min_rating_option,
    negatives_options,
    seed_option,
    threads_option,
    warnings_as_notes,
)
from cfcore.cli.spark import backend_options
from cfcore.errors import DivergenceError, InputError
from cfcore.ids import MIN_OVERLAP, id_positions
from cfcore.io import check_outputs

LOSSES = ("squared", "bpr", "warp", "logistic")
#: cfcore.factorize.EARLY_STOPPING_METRICS, written out so that ``--help`` need not import Numba
#: (a test keeps the two equal).
EARLY_STOPPING_METRICS = ("ndcg@10", "precision@10", "auc")

#: The command-line names of the Factorizer parameters that divergence advice names.
CLI_NAMES = {"learning_rate": "--lr", "regularization": "--reg"}


# ---------------------------------------------------------------------------- helpers
min_overlap_option = click.option(
    "--min-overlap",
    type=click.FloatRange(min=0, max=1),
    default=MIN_OVERLAP,
    show_default=True,
    metavar="FRACTION",
    help="Refuse interactions of which fewer than this share involve users and items the "
    "model knows (another dataset's: an ml-100k model and ml-latest-small share 34%); 0 "
    "accepts anything.",
)


def _check_k(k: int, n: int, what: str) -> None:
    if k > n:
        raise InputError(f"-k {k} is larger than the {what} ({n})")


def _id_text(value: Any) -> str:
    return str(value.item() if hasattr(value, "item") else value)


def _emit_rows(
    header: list[str], rows: list[list[Any]], as_json: bool, key: str, output: Path | None
) -> None:
    """Print (or write atomically to ``output``) rows as TSV, or as JSON grouped by ``key``."""
    from cfcore.io import atomic_write_text

    if as_json:
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            rec = dict(zip(header, row, strict=True))
            groups.setdefault(str(rec.pop(key)), []).append(rec)
        text = json.dumps(groups, indent=2) + "\n"
    else:
        lines = ["\t".join(header)]
        lines += [
            "\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) for row in rows
        ]
        text = "\n".join(lines) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        click.echo(f"wrote {len(rows)} rows to {output}", err=True)


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def output_option(help: str = "Output file (.npz), written atomically."):  # noqa: A002
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help=help,
    )


# ---------------------------------------------------------------------------- sample-negatives
@click.command("sample-negatives")
@click.argument("source", metavar="INPUT")
@output_option(
    "Output file, written atomically: .npz, or CSV (see --output-format); with --backend "
    "spark also a Parquet dataset."
)
@negatives_options(
    "log-popularity",
    "Item weight w(p_i) from its popularity p_i: log(1+p) (Fang's 'in practice'), "
    "p (eq. 1-2) or 1.",
)
@click.option(
    "--output-format",
    type=click.Choice(["auto", "npz", "csv"]),
    default="auto",
    show_default=True,
    help="npz: the negatives artifact; csv: user_id,item_id rows of raw ids; auto: csv "
    "when OUTPUT ends in .csv, else npz (--backend spark: auto only, see below). "
    "--format is INPUT's format.",
)
@seed_option
@threads_option
@backend_options
@format_option
@min_rating_option
@columns_option
@data_dir_option
def sample_negatives_cmd(
    source: str,
    output: Path,
    neg_ratio: float,
    neg_weighting: str,
    output_format: str,
    seed: int,
    threads: int,
    backend: str,
    master: str | None,
    fmt: str,
    min_rating: float | None,
    read_options: dict[str, Any],
    data_dir: Path | None,
) -> None:
    """Draw negatives for every user (Fang et al. 2015, Algorithm 1) and save them.

    For user j, n_j = NEG_RATIO × |positives_j| distinct items the user has NOT
    interacted with are drawn with probability ∝ w(p_i), p_i = number of users of
    item i. A user with fewer candidates gets all of them (reported). The result is
    the same for a given --seed whatever --threads is.

    \b
    Examples:
      cfcore sample-negatives ml-100k -o negatives.npz
      cfcore sample-negatives u.data -o neg.npz --neg-ratio 1 --neg-weighting uniform --seed 3
      cfcore sample-negatives views.csv -o negatives.csv     # user_id,item_id raw ids
      cfcore sample-negatives views.parquet -o neg.parquet --backend spark --master local[4]

    The .npz output is of kind "negatives": CSR arrays indptr/indices over the rows
    and columns of INPUT as read, with their raw user_ids/item_ids;
    cfcore.sampling.NegativeSample.load reads it back. The CSV output
    (--output-format csv, or an OUTPUT ending in .csv) has one user_id,item_id row
    per negative, in raw ids; any cfcore command reads it as an interaction file.
    With --backend spark the sampler runs per partition of users on Spark and draws
    the same negatives; an OUTPUT not named *.npz is then a Parquet dataset of raw
    (user, item) ids.
    """
    from cfcore.sampling import NegativeShortfallWarning, sample_negatives

    check_outputs([output], input_paths(source, data_dir=data_dir))
    as_csv = output_format == "csv" or (output_format == "auto" and output.suffix.lower() == ".csv")
    if backend == "spark":
        if output_format != "auto":
            raise click.UsageError(
                "--output-format applies to --backend local; with --backend spark the "
                "output is an .npz when named *.npz, else a Parquet dataset"
            )
        from cfcore.cli.spark import sample_negatives_on_spark

        read = dict(fmt=fmt, data_dir=data_dir, min_rating=min_rating, read_options=read_options)
        return sample_negatives_on_spark(
            source, output, neg_ratio, neg_weighting, seed, master, read
        )
    inter = load_input(source, fmt, data_dir, min_rating, **read_options)
    with warnings_as_notes(NegativeShortfallWarning):  # the shortfall is reported below
        neg = sample_negatives(inter, neg_ratio, neg_weighting, seed=seed, threads=threads)
    neg.meta.update(
        {"source": str(source), "min_rating": min_rating, "n_positives": int(inter.nnz)}
    )
    if as_csv:
        neg.to_csv(output)
    else:
        neg.save(output)
    click.echo(
        f"{neg.nnz} negatives for {inter.n_users} users × {inter.n_items} items "
        f"({neg_weighting}, neg-ratio {neg_ratio:g}, seed {seed}) → {output}"
    )
    if neg.n_short:
        click.echo(
            f"note: {neg.n_short} users had fewer candidates than requested and got all "
            f"of them ({neg.requested - neg.nnz} of {neg.requested} negatives missing)"
        )


# ---------------------------------------------------------------------------- factorize
def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row.get('epoch', '?')}"]
    for key in ("loss", "rmse", "sampled_pr", "auc", "ndcg@10"):
        v = row.get(key)
        if isinstance(v, int | float | np.floating):
            parts.append(f"{key} {float(v):.4f}")
    return "  ".join(parts)


@click.command()
@click.argument("source", metavar="INPUT")
@output_option()
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default="squared",
    show_default=True,
    help="squared: Fang eq. 3 on positives (1) and sampled negatives (0); bpr: Rendle "
    "et al.; warp: Weston et al.; logistic.",
)
@click.option(
    "--factors",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Latent dimensions d (Fang et al.: 100).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Passes over the training entries.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Initial SGD learning rate [default: the Factorizer's default for the loss].",
)
@click.option(
    "--reg",
    type=click.FloatRange(min=0),
    default=None,
    help="L2 regularisation λ(‖x‖² + ‖y‖²), paid per visit [default: 0.02 for squared and "
    "logistic, 0.01 (Fang et al.) for bpr and warp].",
)
@negatives_options(
    None,
    "Negative sampling weight w(p_i) of item popularity [default: log-popularity "
    "(Fang et al.); warp draws its candidates uniformly, as LightFM].",
    ratio_default=None,
    ratio_help="[default: 4 for squared and logistic, 2 (Fang et al.) for bpr].",
)
@click.option(
    "--resample/--fixed-negatives",
    "resample",
    default=None,
    help="Draw fresh negatives every epoch, or keep one draw (Fang et al.) [default: fresh; "
    "one draw overfits: the held-out NDCG@10 of the squared loss falls after 10 epochs].",
)
@click.option(
    "--schedule",
    type=click.Choice(["constant", "linear", "inverse-sqrt"]),
    default=None,
    help="Learning-rate schedule over epochs [default: constant; linear decay for warp "
    "with --optimizer sgd].",
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adagrad"]),
    default=None,
    help="sgd: one step size for every row; adagrad: row-wise AdaGrad, rows seen often "
    "take smaller steps [default: adagrad for squared, logistic and warp; sgd for bpr].",
)
@click.option(
    "--max-norm",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Bound every factor row's norm after each epoch [default: none].",
)
@click.option(
    "--biases/--no-biases",
    "biases",
    default=False,
    show_default=True,
    help="Learn user and item biases.",
)
@click.option(
    "--validation",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=None,
    metavar="FRACTION",
    help="Hold out this fraction of each user's interactions (seeded by --seed); print "
    "per-epoch RMSE and sampled_pr (Fang's validation: against sampled negatives), AUC "
    "(against uniform unobserved items) and NDCG@10 on it. The saved model is fit on the "
    "rest.",
)
@click.option(
    "--early-stopping",
    type=click.IntRange(min=1),
    default=None,
    metavar="PATIENCE",
    help="Stop when the validation NDCG@10 (or --early-stopping-metric) has not improved "
    "for PATIENCE epochs and save the best epoch's factors. Needs --validation.",
)
@click.option(
    "--early-stopping-metric",
    type=click.Choice(EARLY_STOPPING_METRICS),
    default="ndcg@10",
    show_default=True,
    help="What --early-stopping watches on the validation interactions.",
)
@threads_option
@seed_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no per-epoch lines.")
@backend_options
@click.option(
    "--blocks",
    type=click.IntRange(min=1),
    default=None,
    help="--backend spark: DSGD cuts the matrix into BLOCKS × BLOCKS blocks and trains "
    "BLOCKS at once [default: Spark's default parallelism].",
)
@format_option
@min_rating_option
@columns_option
@data_dir_option
def factorize(
    source: str,
    output: Path,
    loss: str,
    factors: int,
    epochs: int,
    lr: float | None,
    reg: float | None,
    neg_ratio: float | None,
    neg_weighting: str | None,
    resample: bool | None,
    schedule: str | None,
    optimizer: str | None,
    max_norm: float | None,
    biases: bool,
    validation: float | None,
    early_stopping: int | None,
    early_stopping_metric: str,
    threads: int,
    seed: int,
    quiet: bool,
    backend: str,
    master: str | None,
    blocks: int | None,
    fmt: str,
    min_rating: float | None,
    read_options: dict[str, Any],
    data_dir: Path | None,
) -> None:
    """Learn user and item factors from implicit feedback and save the model.

    Hogwild SGD matrix factorization (Fang et al. 2015 eq. 3 with the default
    squared loss): the positives of INPUT (target 1) and RATIO × as many sampled
    negatives per user (target 0), λ-regularised. INPUT is a file (u.data,
    ratings.dat, ratings.csv, CSV/TSV, Parquet, collabfeat .npz) or a dataset name.

    \b
    Examples:
      cfcore factorize ml-100k -o model.npz --validation 0.2
      cfcore factorize ml-100k -o model.npz --validation 0.1 --early-stopping 3
      cfcore factorize ratings.csv -o model.npz --loss bpr --factors 64 --epochs 30
      cfcore factorize u.data -o likes.npz --min-rating 4 --threads 1 --seed 7
      cfcore factorize views.parquet -o model.npz --backend spark --master local[4]

    \b
    Fang et al. 2015's own setting: --factors 100 --reg 0.01 --neg-ratio 2
    --neg-weighting log-popularity --fixed-negatives --optimizer sgd. The
    defaults differ where measurements say so (4 fresh negatives per positive
    each epoch, AdaGrad steps, --reg 0.02): the paper's single draw overfits,
    and its held-out NDCG@10 falls after about 10 epochs.
    --threads 1 with a --seed is bit-reproducible; more threads differ only by
    Hogwild races. The model (.npz, kind "factor-model") holds user_factors,
    item_factors (float32), the raw user_ids/item_ids and the parameters as JSON;
    `cfcore evaluate`, `recommend`, `similar` and `cluster` read it.

    --backend spark trains the same model by DSGD (Gemulla et al. 2011) on Spark,
    the Numba kernels inside the executors, and writes the same model file; an
    output not named *.npz is then a directory of Parquet factor tables written by
    the executors, for models too large for one machine
    (cfcore.spark.load_tables reads it back).
    """
    from cfcore.factorize import Factorizer
    from cfcore.splits import holdout_split

    check_outputs([output], input_paths(source, data_dir=data_dir))
    if blocks is not None and backend != "spark":
        raise click.UsageError("--blocks applies to --backend spark only")
    if backend == "spark" and validation is not None:
        raise click.UsageError(
            "--validation is not available with --backend spark; hold data out and run "
            "`cfcore evaluate` on the saved model"
        )
    if early_stopping is not None and validation is None:
        raise click.UsageError(
            "--early-stopping watches held-out interactions: add --validation FRACTION"
        )
    params: dict[str, Any] = dict(
        factors=factors,
        loss=loss,
        epochs=epochs,
        regularization=reg,
        neg_ratio=neg_ratio,
        neg_weighting=neg_weighting,
        resample_negatives=resample,
        schedule=schedule,
        optimizer=optimizer,
        max_norm=max_norm,
        use_biases=biases,
        threads=threads,
        seed=seed,
        progress=not quiet,
        early_stopping=early_stopping,
        early_stopping_metric=early_stopping_metric,
    )
    if lr is not None:
        params["learning_rate"] = lr
    if backend == "spark":
        from cfcore.cli.spark import factorize_on_spark

        read = dict(fmt=fmt, data_dir=data_dir, min_rating=min_rating, read_options=read_options)
        return factorize_on_spark(source, output, params, master, blocks, quiet, read)
    inter = load_input(source, fmt, data_dir, min_rating, **read_options)
    train, held_out = inter, None
    if validation is not None:
        train, held_out = holdout_split(inter, validation, seed=seed)
        if held_out.nnz == 0:
            raise InputError(
                f"--validation {validation}: no user has enough interactions to hold "
                "any out; use a larger fraction or no validation"
            )
    model = Factorizer(**params)
    if not quiet:
        click.echo(
            f"{inter!r}; training on {train.nnz} interactions"
            + (f", validating on {held_out.nnz}" if held_out is not None else ""),
            err=True,
        )

    def report(epoch: int, _seconds: float, _loss: float) -> None:
        if not quiet and (held_out is not None or epoch + 1 == epochs):
            from tqdm import tqdm

            tqdm.write(_epoch_line(model.history_[-1]))  # keeps the progress bar intact

    with warnings_as_notes():
        try:
            model.fit(train, validation=held_out, callback=report)
        except DivergenceError as exc:  # the advice in this command's option names
            raise click.ClickException(exc.advice(CLI_NAMES)) from None
    model.save(output)
    if early_stopping is not None and not quiet:
        best = model.history_[model.best_epoch_ - 1]
        click.echo(
            f"early stopping: {len(model.history_)} epochs run, kept epoch {model.best_epoch_} "
            f"({early_stopping_metric} {best[early_stopping_metric]:.4f})",
            err=True,
        )
    click.echo(
        f"saved {train.n_users} users × {train.n_items} items × {factors} factors "
        f"({loss}) → {output}"
    )


# ---------------------------------------------------------------------------- evaluate
@click.command()
@click.argument(
    "model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("test_source", metavar="TEST_INPUT")
@click.option(
    "--train",
    "train_source",
    metavar="INPUT",
    default=None,
    help="The training interactions: excluded from the negatives and from the top k "
    "(without it, known items count against the model).",
)
@click.option(
    "-k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Cut-off of precision@k, recall@k, accuracy@k, MAP@k, NDCG@k.",
)
@click.option(
    "--negatives",
    "n_negatives",
    type=click.IntRange(min=1),
    default=None,
    help="Rank each positive against this many uniformly drawn unobserved items "
    "[default: all of them].",
)
@click.option(
    "--baseline", is_flag=True, help="Also score the popularity baseline (needs --train)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@min_overlap_option
@seed_option
@format_option
@min_rating_option
@columns_option
@data_dir_option
def evaluate(
    model_path: Path,
    test_source: str,
    train_source: str | None,
    k: int,
    n_negatives: int | None,
    baseline: bool,
    as_json: bool,
    min_overlap: float,
    seed: int,
    fmt: str,
    min_rating: float | None,
    read_options: dict[str, Any],
    data_dir: Path | None,
) -> None:
    """Score a model on held-out interactions: AUC, PR and top-k metrics.

    For each user with held-out positives P_u, AUC_u is the fraction of
    (positive, negative) pairs the model orders correctly, where the negatives are
    the items the user has not interacted with (uniform unobserved items; training
    items excluded with --train). PR = 1 − AUC (Fang et al.'s metric against these
    items; 0.5 is random, lower is better). Both are averaged over users. Top-k
    metrics rank all items minus the training items. Users and items the model has
    never seen are dropped (counted in the output); if fewer than --min-overlap of
    TEST_INPUT's interactions remain, the files do not belong together and the
    command fails.

    \b
    Examples:
      cfcore factorize u1.base -o model.npz
      cfcore evaluate model.npz u1.test --train u1.base -k 10 --baseline
      cfcore evaluate model.npz u1.test --train u1.base --json > metrics.json
    """
    from cfcore.metrics import pairwise_ranking, popularity_scorer, top_k_metrics
    from cfcore.model import load_model

    model = load_model(model_path)
    _check_k(k, model.n_items, "number of items in the model")
    if baseline and train_source is None:
        raise InputError("--baseline needs --train (popularity is counted on the training data)")

    def project(source: str) -> Any:
        inter = load_input(source, fmt, data_dir, min_rating, **read_options)
        return model.project(inter, min_overlap, what=source)

    test = project(test_source)
    if test.user_items.nnz == 0:
        raise InputError(
            f"{test_source}: none of its interactions involve users and items of the model"
        )
    train = None
    test_m = test.user_items
    if train_source is not None:
        train = project(train_source).user_items
        test_m = test_m - test_m.multiply(train)  # a test pair seen in train is no test
        test_m.eliminate_zeros()

    def score(scorer: Any) -> dict[str, Any]:
        out = pairwise_ranking(scorer, test_m, exclude=train, n_negatives=n_negatives, seed=seed)
        out.update(top_k_metrics(scorer, test_m, k=k, exclude=train))
        return _json_safe(out)

    results: dict[str, Any] = {"model": score(model.scorer())}
    if baseline:
        assert train is not None
        results["popularity"] = score(popularity_scorer(train))
    results["test"] = {
        "interactions": int(test_m.nnz),
        "dropped": test.dropped,
        "unknown_users": len(test.new_user_ids),
        "unknown_items": len(test.unknown_item_ids),
    }
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    names = [n for n in results["model"] if n != "users"]
    cols = [c for c in ("model", "popularity") if c in results]
    click.echo("metric".ljust(14) + "".join(c.rjust(12) for c in cols))
    for n in names:
        click.echo(n.ljust(14) + "".join(f"{results[c][n]:12.4f}" for c in cols))
    t = results["test"]
    click.echo(
        f"{results['model']['users']} users, {t['interactions']} test interactions"
        + (
            f"; dropped {t['dropped']} with users/items unknown to the model"
            if t["dropped"]
            else ""
        )
    )
    if train is None:
        click.echo("note: no --train given, so training items count as negatives", err=True)


# ---------------------------------------------------------------------------- recommend
@click.command()
@click.argument(
    "model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("source", metavar="INPUT")
@click.argument("user_ids", metavar="USER_ID...", nargs=-1, required=True)
@click.option(
    "-k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Recommendations per user.",
)
@click.option(
    "--filter-seen/--keep-seen",
    default=True,
    show_default=True,
    help="Leave out items the user already has in INPUT (the API's filter_already_liked_items).",
)
@click.option(
    "--fold-in/--no-fold-in",
    default=True,
    show_default=True,
    help="Fit users the model has not seen from their INPUT interactions (the API's "
    "recalculate_user).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON {user_id: [{rank, item_id, score}]}.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (atomically) instead of standard output.",
)
@min_overlap_option
@format_option
@min_rating_option
@columns_option
@data_dir_option
def recommend(
    model_path: Path,
    source: str,
    user_ids: tuple[str, ...],
    k: int,
    filter_seen: bool,
    fold_in: bool,
    as_json: bool,
    output: Path | None,
    min_overlap: float,
    fmt: str,
    min_rating: float | None,
    read_options: dict[str, Any],
    data_dir: Path | None,
) -> None:
    """Top-k items for users, by score x_u · y_i (+ item bias), in raw ids.

    INPUT holds the users' known interactions (normally the training data):
    with --filter-seen (the default) those items are never recommended. A user the
    model has not seen but INPUT has is folded in (--fold-in, the default): its
    factors are fit to its INPUT interactions with the item factors held fixed.
    If fewer than --min-overlap of INPUT's interactions involve items the model
    knows, INPUT belongs to another dataset and the command fails.

    The same as FactorModel.recommend in Python (one row of INPUT per user).

    \b
    Examples:
      cfcore recommend model.npz ml-100k 1 2 3 -k 5
      cfcore recommend model.npz views.csv alice bob --json -o recs.json
      cfcore recommend model.npz new_users.csv carol -k 20

    Output: TSV with columns user_id, rank, item_id, score (or JSON).
    """
    from cfcore.model import load_model

    check_outputs([output], input_paths(model_path, source, data_dir=data_dir))
    model = load_model(model_path)
    _check_k(k, model.n_items, "number of items in the model")
    inter = load_input(source, fmt, data_dir, min_rating, **read_options)
    seen = model.project(inter, min_overlap, new_users=fold_in, what=source)
    rows = id_positions(model.user_ids_, list(user_ids))
    top: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    known = [(u, r) for u, r in zip(user_ids, rows, strict=True) if r >= 0]
    if known:
        at = np.array([r for _, r in known])
        ids, scores = model.recommend(
            at, seen.user_items[at], N=k, filter_already_liked_items=filter_seen
        )
        top.update(zip([u for u, _ in known], zip(ids, scores, strict=True), strict=True))
    new = list(dict.fromkeys(u for u, r in zip(user_ids, rows, strict=True) if r < 0))
    if new:
        if not fold_in:
            raise InputError(
                f"user id {new[0]!r} is not in the model {model_path} "
                f"({len(new)} unknown of {len(user_ids)}; --fold-in would fit them "
                f"from {source})"
            )
        at = id_positions(seen.new_user_ids, new)
        missing = [u for u, r in zip(new, at, strict=True) if r < 0]
        if missing:
            raise InputError(
                f"user id {missing[0]!r} is neither in the model {model_path} nor in {source}"
            )
        items = seen.new_user_items[at]
        empty = [u for u, n in zip(new, np.diff(items.indptr), strict=True) if n == 0]
        if empty:
            raise InputError(
                f"user id {empty[0]!r} is not in the model and none of its items in "
                f"{source} are: nothing to fold in from"
            )
        with warnings_as_notes():
            ids, scores = model.recommend(
                np.zeros(len(new), np.int64),
                items,
                N=k,
                filter_already_liked_items=filter_seen,
                recalculate_user=True,
            )
        top.update(zip(new, zip(ids, scores, strict=True), strict=True))
        click.echo(
            f"note: folded in {len(new)} user(s) the model has not seen, from {source}", err=True
        )
    out_rows = [
        [uid, rank, _id_text(model.item_ids_[item]), float(score)]
        for uid in user_ids
        for rank, (item, score) in enumerate(zip(*top[uid], strict=True), 1)
        if item >= 0
    ]
    _emit_rows(["user_id", "rank", "item_id", "score"], out_rows, as_json, "user_id", output)


# ---------------------------------------------------------------------------- similar
@click.command()
@click.argument(
    "model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("item_ids", metavar="ITEM_ID...", nargs=-1, required=True)
@click.option(
    "-k", type=click.IntRange(min=1), default=10, show_default=True, help="Neighbours per item."
)
@click.option(
    "--include-self/--exclude-self",
    default=True,
    show_default=True,
    help="Whether an item is among its own neighbours (rank 1, cosine 1), as in "
    "FactorModel.similar_items and implicit.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="JSON {item_id: [{rank, similar_id, score}]}."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (atomically) instead of standard output.",
)
def similar(
    model_path: Path,
    item_ids: tuple[str, ...],
    k: int,
    include_self: bool,
    as_json: bool,
    output: Path | None,
) -> None:
    """Items nearest to the given ones by cosine of their factors (Fang et al. §4.2).

    cos(y_i, y_j) = y_i · y_j / (‖y_i‖ ‖y_j‖). As FactorModel.similar_items in
    Python (and implicit), the item itself comes first, with cosine 1;
    --exclude-self leaves it out. (`cfcore neighbors`, whose lists feed
    retrieval-report, leaves it out unless --include-self.)

    \b
    Examples:
      cfcore similar model.npz 1 -k 10
      cfcore similar model.npz 50 181 --exclude-self --json
    """
    from cfcore.model import load_model

    check_outputs([output], [model_path])
    model = load_model(model_path)
    _check_k(k, model.n_items, "number of items in the model")
    rows = id_positions(model.item_ids_, list(item_ids))
    unknown = [i for i, r in zip(item_ids, rows, strict=True) if r < 0]
    if unknown:
        raise InputError(
            f"item id {unknown[0]!r} is not in the model {model_path} "
            f"({len(unknown)} unknown of {len(item_ids)})"
        )
    top, best = model.similar_items(rows, N=k, include_self=include_self)
    out_rows = [
        [iid, rank, _id_text(model.item_ids_[j]), float(score)]
        for iid, row, scores in zip(item_ids, top, best, strict=True)
        for rank, (j, score) in enumerate(zip(row, scores, strict=True), 1)
        if j >= 0
    ]
    _emit_rows(["item_id", "rank", "similar_id", "score"], out_rows, as_json, "item_id", output)


COMMANDS = [sample_negatives_cmd, factorize, evaluate, recommend, similar]
