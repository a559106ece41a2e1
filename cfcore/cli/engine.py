"""``cfcore sample-negatives | factorize | evaluate | recommend | similar``: the engine's CLI.

Every command reads its inputs completely and checks them before it writes anything; every
output is written atomically (a temporary file renamed into place), so a failure leaves no
half-written file behind. Errors are one line and exit status 1 (usage errors: 2).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import scipy.sparse as sp

from cfcore.cli.common import (
    columns_option,
    data_dir_option,
    format_option,
    load_input,
    min_rating_option,
    negatives_options,
    seed_option,
    threads_option,
    warnings_as_notes,
)
from cfcore.errors import DivergenceError, InputError, ModelFormatError
from cfcore.ids import id_positions
from cfcore.metrics import top_n

MODEL_KIND = "factor-model"
LOSSES = ("squared", "bpr", "warp", "logistic")

#: The command-line names of the Factorizer parameters that divergence advice names.
CLI_NAMES = {"learning_rate": "--lr", "regularization": "--reg"}


# ---------------------------------------------------------------------------- helpers
def _check_output(path: Path) -> Path:
    """Refuse an output path that cannot become a file (before any work is done)."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory; -o/--output needs a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{path.parent}: is not a directory")
    return path


@dataclass(frozen=True)
class FactorModel:
    """The arrays of a factor-model file, checked (see CONTRACTS.md / ``Factorizer.save``)."""

    path: Path
    user_factors: np.ndarray
    item_factors: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_bias: np.ndarray | None
    header: dict[str, Any]

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])


def load_factor_model(path: str | Path) -> FactorModel:
    """Read and validate a ``factor-model`` ``.npz``.

    Raises
    ------
    ModelFormatError
        Not a collabfeat factor model (e.g. a plain ``np.savez`` file from another tool), or
        its arrays are inconsistent or not finite.
    """
    from cfcore.io import load_artifact, require_keys

    path = Path(path)
    arrays, header = load_artifact(path, MODEL_KIND)
    require_keys(path, arrays, ["user_factors", "item_factors", "user_ids", "item_ids"])
    users, items = arrays["user_factors"], arrays["item_factors"]
    if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
        raise ModelFormatError(
            f"{path}: factor shapes do not match (users {users.shape}, items {items.shape})"
        )
    for name, ids, n in (
        ("user_ids", arrays["user_ids"], len(users)),
        ("item_ids", arrays["item_ids"], len(items)),
    ):
        if ids.shape != (n,):
            raise ModelFormatError(f"{path}: {name} has shape {ids.shape}, expected ({n},)")
    bias = arrays.get("item_bias")
    if bias is not None and bias.shape != (len(items),):
        raise ModelFormatError(
            f"{path}: item_bias has shape {bias.shape}, expected ({len(items)},)"
        )
    for name in ("user_factors", "item_factors", "item_bias"):
        if name in arrays and not np.all(np.isfinite(arrays[name])):
            raise ModelFormatError(f"{path}: {name} contains NaN or inf (a diverged fit?)")
    return FactorModel(
        path,
        np.ascontiguousarray(users, dtype=np.float32),
        np.ascontiguousarray(items, dtype=np.float32),
        arrays["user_ids"],
        arrays["item_ids"],
        None if bias is None else bias.astype(np.float32),
        header,
    )


@dataclass(frozen=True)
class Projected:
    """Interactions re-indexed into a model's rows and columns."""

    matrix: sp.csr_matrix
    dropped: int  # interactions whose user or item the model does not know
    unknown_users: int
    unknown_items: int


def project(inter: Any, model: FactorModel) -> Projected:
    """Map an :class:`Interactions` onto the model's user rows and item columns."""
    rows = id_positions(model.user_ids, inter.user_ids)
    cols = id_positions(model.item_ids, inter.item_ids)
    coo = inter.user_items.tocoo()
    r, c = rows[coo.row], cols[coo.col]
    keep = (r >= 0) & (c >= 0)
    shape = (len(model.user_ids), len(model.item_ids))
    m = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (r[keep], c[keep])), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return Projected(m, int((~keep).sum()), int((rows < 0).sum()), int((cols < 0).sum()))


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


output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output file (.npz), written atomically.",
)


# ---------------------------------------------------------------------------- sample-negatives
@click.command("sample-negatives")
@click.argument("source", metavar="INPUT")
@output_option
@negatives_options(
    "log-popularity",
    "Item weight w(p_i) from its popularity p_i: log(1+p) (Fang's 'in practice'), "
    "p (eq. 1-2) or 1.",
)
@seed_option
@threads_option
@format_option
@min_rating_option
@columns_option
@data_dir_option
def sample_negatives_cmd(
    source: str,
    output: Path,
    neg_ratio: float,
    neg_weighting: str,
    seed: int,
    threads: int,
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

    The output is an .npz of kind "negatives" (CSR arrays indptr/indices over the
    rows and columns of INPUT as read, ids in sorted order);
    cfcore.sampling.NegativeSample.load reads it back.
    """
    from cfcore.sampling import NegativeShortfallWarning, sample_negatives

    _check_output(output)
    inter = load_input(source, fmt, data_dir, min_rating, **read_options)
    with warnings_as_notes(NegativeShortfallWarning):  # the shortfall is reported below
        neg = sample_negatives(
            inter.user_items, neg_ratio, neg_weighting, seed=seed, threads=threads
        )
    neg.meta.update(
        {"source": str(source), "min_rating": min_rating, "n_positives": int(inter.nnz)}
    )
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
    for key in ("loss", "rmse", "sampled_pr", "auc"):
        v = row.get(key)
        if isinstance(v, int | float | np.floating):
            parts.append(f"{key} {float(v):.4f}")
    return "  ".join(parts)


@click.command()
@click.argument("source", metavar="INPUT")
@output_option
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
    default=0.01,
    show_default=True,
    help="L2 regularisation λ(‖x‖² + ‖y‖²) (Fang et al.: 0.01).",
)
@negatives_options(
    None,
    "Negative sampling weight w(p_i) of item popularity [default: log-popularity "
    "(Fang et al.); warp draws its candidates uniformly, as LightFM].",
)
@click.option(
    "--resample/--fixed-negatives",
    "resample",
    default=None,
    help="Draw fresh negatives every epoch, or keep one draw [default: fixed for "
    "squared (the paper), fresh for the other losses].",
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
    "take smaller steps [default: adagrad for warp (as LightFM), else sgd].",
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
    "per-epoch RMSE and sampled_pr (Fang's validation: against sampled negatives) and AUC "
    "(against uniform unobserved items) on it. The saved model is fit on the rest.",
)
@threads_option
@seed_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no per-epoch lines.")
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
    reg: float,
    neg_ratio: float,
    neg_weighting: str | None,
    resample: bool | None,
    schedule: str | None,
    optimizer: str | None,
    max_norm: float | None,
    biases: bool,
    validation: float | None,
    threads: int,
    seed: int,
    quiet: bool,
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
      cfcore factorize ratings.csv -o model.npz --loss bpr --factors 64 --epochs 30
      cfcore factorize u.data -o likes.npz --min-rating 4 --threads 1 --seed 7

    \b
    Paper defaults (Fang et al. 2015): --factors 100 --reg 0.01 --neg-ratio 2
    --neg-weighting log-popularity --fixed-negatives, squared loss.
    --threads 1 with a --seed is bit-reproducible; more threads differ only by
    Hogwild races. The model (.npz, kind "factor-model") holds user_factors,
    item_factors (float32), the raw user_ids/item_ids and the parameters as JSON;
    `cfcore evaluate`, `recommend`, `similar` and `cluster` read it.
    """
    from cfcore.factorize import Factorizer
    from cfcore.splits import holdout_split

    _check_output(output)
    inter = load_input(source, fmt, data_dir, min_rating, **read_options)
    train, held_out = inter, None
    if validation is not None:
        train, held_out = holdout_split(inter, validation, seed=seed)
        if held_out.nnz == 0:
            raise InputError(
                f"--validation {validation}: no user has enough interactions to hold "
                "any out; use a larger fraction or no validation"
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
    )
    if lr is not None:
        params["learning_rate"] = lr
    model = Factorizer(**params)
    if not quiet:
        click.echo(
            f"{inter!r}; training on {train.nnz} interactions"
            + (f", validating on {held_out.nnz}" if held_out is not None else ""),
            err=True,
        )

    def report(epoch: int, _model: Any, record: dict[str, Any]) -> None:
        if not quiet and (held_out is not None or epoch + 1 == epochs):
            from tqdm import tqdm

            tqdm.write(_epoch_line(record))  # keeps the progress bar intact

    with warnings_as_notes():
        try:
            model.fit(train, validation=held_out, callback=report)
        except DivergenceError as exc:  # the advice in this command's option names
            raise click.ClickException(exc.advice(CLI_NAMES)) from None
    model.save(output)
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
    items excluded with --train). PR = 1 − AUC (Fang et al.'s metric; 0.5 is
    random, lower is better). Both are averaged over users. Top-k metrics rank all
    items minus the training items. Users and items the model has never seen are
    dropped (counted in the output).

    \b
    Examples:
      cfcore factorize u1.base -o model.npz
      cfcore evaluate model.npz u1.test --train u1.base -k 10 --baseline
      cfcore evaluate model.npz u1.test --train u1.base --json > metrics.json
    """
    from cfcore.metrics import factor_scorer, pairwise_ranking, popularity_scorer, top_k_metrics

    model = load_factor_model(model_path)
    _check_k(k, model.n_items, "number of items in the model")
    if baseline and train_source is None:
        raise InputError("--baseline needs --train (popularity is counted on the training data)")
    test = project(load_input(test_source, fmt, data_dir, min_rating, **read_options), model)
    if test.matrix.nnz == 0:
        raise InputError(
            f"{test_source}: none of its interactions involve users and items of the model"
        )
    train = None
    if train_source is not None:
        train = project(
            load_input(train_source, fmt, data_dir, min_rating, **read_options), model
        ).matrix
        test_m = test.matrix - test.matrix.multiply(train)  # a test pair seen in train is no test
        test_m.eliminate_zeros()
    else:
        test_m = test.matrix

    def score(scorer: Any) -> dict[str, Any]:
        out = pairwise_ranking(scorer, test_m, exclude=train, n_negatives=n_negatives, seed=seed)
        out.update(top_k_metrics(scorer, test_m, k=k, exclude=train))
        return _json_safe(out)

    results: dict[str, Any] = {
        "model": score(factor_scorer(model.user_factors, model.item_factors, model.item_bias))
    }
    if baseline:
        assert train is not None
        results["popularity"] = score(popularity_scorer(train))
    results["test"] = {
        "interactions": int(test_m.nnz),
        "dropped": test.dropped,
        "unknown_users": test.unknown_users,
        "unknown_items": test.unknown_items,
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
    help="Leave out items the user already has in INPUT.",
)
@click.option(
    "--fold-in/--no-fold-in",
    default=True,
    show_default=True,
    help="Fit users the model has not seen from their INPUT interactions.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON {user_id: [{rank, item_id, score}]}.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (atomically) instead of standard output.",
)
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

    \b
    Examples:
      cfcore recommend model.npz ml-100k 1 2 3 -k 5
      cfcore recommend model.npz views.csv alice bob --json -o recs.json
      cfcore recommend model.npz new_users.csv carol -k 20

    Output: TSV with columns user_id, rank, item_id, score (or JSON).
    """
    from cfcore.metrics import factor_scorer

    if output is not None:
        _check_output(output)
    model = load_factor_model(model_path)
    _check_k(k, model.n_items, "number of items in the model")
    inter = load_input(source, fmt, data_dir, min_rating, **read_options)
    rows = id_positions(model.user_ids, list(user_ids))
    known = project(inter, model).matrix
    user_factors = model.user_factors
    new = [u for u, r in zip(user_ids, rows, strict=True) if r < 0]
    if new:
        if not fold_in:
            raise InputError(
                f"user id {new[0]!r} is not in the model {model_path} "
                f"({len(new)} unknown of {len(user_ids)}; --fold-in would fit them "
                f"from {source})"
            )
        new = list(dict.fromkeys(new))
        factors, seen_new = _fold_in(model, inter, new, source)
        user_factors = np.vstack([user_factors, factors])
        known = sp.vstack([known, seen_new]).tocsr()
        extra = {u: len(model.user_ids) + n for n, u in enumerate(new)}
        rows = np.array(
            [extra.get(u, r) if r < 0 else r for u, r in zip(user_ids, rows, strict=True)]
        )
        click.echo(
            f"note: folded in {len(new)} user(s) the model has not seen, from {source}", err=True
        )
    scores = factor_scorer(user_factors, model.item_factors, model.item_bias)(rows)
    if filter_seen:
        seen = known[rows]
        r = np.repeat(np.arange(len(rows)), np.diff(seen.indptr))
        scores[r, seen.indices] = -np.inf
    top, best = top_n(scores, k)
    out_rows: list[list[Any]] = []
    for n, uid in enumerate(user_ids):
        rank = 0
        for item, s in zip(top[n], best[n], strict=True):
            if np.isfinite(s):
                rank += 1
                out_rows.append([uid, rank, _id_text(model.item_ids[item]), float(s)])
    _emit_rows(["user_id", "rank", "item_id", "score"], out_rows, as_json, "user_id", output)


def _fold_in(
    model: FactorModel, inter: Any, users: list[str], source: str
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Factors (and seen items, in model columns) of users unknown to the model, from INPUT."""
    from cfcore.factorize import Factorizer

    at = id_positions(inter.user_ids, users)
    missing = [u for u, r in zip(users, at, strict=True) if r < 0]
    if missing:
        raise InputError(
            f"user id {missing[0]!r} is neither in the model {model.path} nor in {source}"
        )
    cols = id_positions(model.item_ids, inter.item_ids)
    sub = inter.user_items[at].tocoo()
    keep = cols[sub.col] >= 0
    rows = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (sub.row[keep], cols[sub.col[keep]])),
        shape=(len(users), model.n_items),
    )
    empty = [u for u, n in zip(users, np.diff(rows.indptr), strict=True) if n == 0]
    if empty:
        raise InputError(
            f"user id {empty[0]!r} is not in the model and none of its items in "
            f"{source} are: nothing to fold in from"
        )
    fitted = Factorizer.load(model.path)
    fitted.progress = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fitted.fold_in(rows), rows


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
    model_path: Path, item_ids: tuple[str, ...], k: int, as_json: bool, output: Path | None
) -> None:
    """Items nearest to the given ones by cosine of their factors (Fang et al. §4.2).

    cos(y_i, y_j) = y_i · y_j / (‖y_i‖ ‖y_j‖); the item itself is left out.

    \b
    Examples:
      cfcore similar model.npz 1 -k 10
      cfcore similar model.npz 50 181 --json
    """
    if output is not None:
        _check_output(output)
    model = load_factor_model(model_path)
    _check_k(k, model.n_items - 1, "number of other items in the model")
    rows = id_positions(model.item_ids, list(item_ids))
    unknown = [i for i, r in zip(item_ids, rows, strict=True) if r < 0]
    if unknown:
        raise InputError(
            f"item id {unknown[0]!r} is not in the model {model_path} "
            f"({len(unknown)} unknown of {len(item_ids)})"
        )
    y = model.item_factors
    norms = np.linalg.norm(y, axis=1)
    unit = y / np.where(norms > 0, norms, 1.0)[:, None]
    sims = unit[rows] @ unit.T
    sims[np.arange(len(rows)), rows] = -np.inf
    top, best = top_n(sims, k)
    out_rows = [
        [iid, rank + 1, _id_text(model.item_ids[j]), float(s)]
        for n, iid in enumerate(item_ids)
        for rank, (j, s) in enumerate(zip(top[n], best[n], strict=True))
    ]
    _emit_rows(["item_id", "rank", "similar_id", "score"], out_rows, as_json, "item_id", output)


COMMANDS = [sample_negatives_cmd, factorize, evaluate, recommend, similar]
