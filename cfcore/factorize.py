"""Matrix factorization of implicit feedback by lock-free (Hogwild) SGD.

:class:`Factorizer` learns user factors ``x_u`` and item factors ``y_i`` (float32) from a
users × items matrix of positives, with negatives drawn by :func:`cfcore.sampling.sample_negatives`
(Fang et al. 2015, Algorithm 1) — in the default ``order="grouped"`` by the SGD kernel itself,
each user's when it visits the user, so they are never stored (the same negatives). Losses (maths in :mod:`cfcore._kernels.sgd`):

- ``"squared"`` — Fang et al. eq. 3: ``Σ (v_ui − x_u·y_i)² + λ(‖x_u‖² + ‖y_i‖²)`` over positives
  (``v = 1``) and sampled negatives (``v = 0``); paper defaults ``factors=100``, ``λ=0.01``;
- ``"logistic"`` — the same entries with the log loss of ``σ(x_u·y_i)``;
- ``"bpr"`` — Rendle et al. 2009, ``−log σ(s_ui − s_uj)``, each positive paired with one of the
  user's sampled negatives;
- ``"warp"`` — Weston et al. 2011 as in LightFM: draw catalogue items (the user's positives
  rejected) until one violates the margin, step weighted by ``log ⌊(N − 1)/draws⌋``, with
  row-wise AdaGrad steps (``optimizer="adagrad"``, as LightFM's AdaGrad).

Work order: users are visited in a fresh random order every epoch and each user's entries
together, shuffled ("user-grouped"), so the user row stays in L1 and only item rows are
gathered (and prefetched); on ml-100k this order gives the same or better held-out AUC than
uniformly random entries (``order="random"``), and 4× the speed once the tables leave the cache.

>>> from cfcore import load_movielens, holdout_split, Factorizer
>>> train, test = holdout_split(load_movielens("ml-100k"), 0.2, seed=0)
>>> model = Factorizer(factors=64, loss="bpr", epochs=30).fit(train, validation=test)
>>> model.history_[-1]["auc"]     # held-out AUC vs uniform unobserved items
>>> model.effective_params_      # every default resolved: what the fit ran with
>>> ids, scores = model.recommend([0, 1], train.user_items[[0, 1]], N=10)
>>> model.save("model.npz")

Parameters are resolved once per fit: :meth:`Factorizer.fit` validates the constructor's
parameters and replaces every ``None`` by the loss's default into one
:class:`EffectiveParams` (``effective_params_``, saved in the model file beside the
constructor's own), from which the kernels' hyper-parameter bundle is built.

Parallelism: ``threads`` workers update the shared tables without locks (Hogwild, Niu et al.
2011). Work is cut into a fixed number of blocks of users that does not depend on ``threads``;
with ``threads=1`` one worker runs them in order and a seed reproduces the model bit for bit;
with more threads only the interleaving of item-row updates differs. The kernels have one
(``parallel=True``) build, also used on one thread: Numba compiles the serial form of the
same loop about 1.5–2× slower for the pairwise losses (ML-1M-sized data, one thread: BPR 6.5
vs 9.2, WARP 2.3 vs 5.2 M updates/s).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore._kernels import sgd
from cfcore.errors import DivergenceError, InputError
from cfcore.estimator import check_integer as _integer
from cfcore.estimator import check_number as _positive_number
from cfcore.interactions import Interactions, binarize, column_counts
from cfcore.model import FactorModel
from cfcore.sampling import (
    SamplingPlan,
    check_neg_ratio,
    check_neg_weighting,
    renamed_arguments,
)
from cfcore.threads import numba_threads, resolve_threads

LOSSES = tuple(sgd.LOSS_CODES)
SCHEDULES = ("constant", "linear", "inverse-sqrt")
ORDERS = sgd.ORDERS
OPTIMIZERS = ("sgd", "adagrad")

#: Each loss's defaults for the parameters the constructor leaves at ``None``. The pointwise
#: losses take row-wise AdaGrad steps over 4 negatives per positive, drawn afresh every epoch,
#: at λ 0.02: Fang et al.'s one fixed draw of 2 negatives with plain steps (:data:`FANG_2015`)
#: overfits that draw — its held-out NDCG@10 peaks and then falls with every epoch (ml-100k,
#: 64 factors: 0.381 at epoch 10, 0.267 at 40) — and starts slowly (ML-1M-sized planted
#: low-rank data: NDCG@10 0.14, the popularity level, for 5 epochs). These settings reach
#: 0.448 on ml-100k and 0.364 on the low-rank data, above implicit's ALS (0.360, 0.339), and
#: stay there (bench quality suite; docs/measurements in the README). BPR resamples (a fixed
#: draw overfits: ml-100k AUC 0.935 vs 0.927); WARP draws its own candidates, up to 50 per
#: positive (see ``max_sampled``).
LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    "squared": {
        "optimizer": "adagrad",
        "regularization": 0.02,
        "neg_ratio": 4.0,
        "resample_negatives": True,
        "max_sampled": 50,  # unused: WARP only
    },
    "logistic": {
        "optimizer": "adagrad",
        "regularization": 0.02,
        "neg_ratio": 4.0,
        "resample_negatives": True,
        "max_sampled": 50,  # unused: WARP only
    },
    "bpr": {
        "optimizer": "sgd",
        "regularization": 0.01,
        "neg_ratio": 2.0,
        "resample_negatives": True,
        "max_sampled": 50,  # unused: WARP only
    },
    "warp": {
        "optimizer": "adagrad",
        "regularization": 0.01,
        "neg_ratio": 2.0,  # unused: WARP draws its candidates from the catalogue
        "resample_negatives": False,
        "max_sampled": 50,
    },
}

#: Initial learning rates by (loss, optimizer) that work on MovieLens-sized data at the default
#: initialisation (``learning_rate=None``): AdaGrad divides them by √G, so they are larger.
DEFAULT_LEARNING_RATES = {
    ("squared", "adagrad"): 0.1,
    ("squared", "sgd"): 0.02,
    ("logistic", "adagrad"): 0.1,
    ("logistic", "sgd"): 0.05,
    ("bpr", "adagrad"): 0.1,
    ("bpr", "sgd"): 0.05,
    ("warp", "adagrad"): 0.03,  # with 50 draws per positive (0.05 overfits after ~8 epochs)
    ("warp", "sgd"): 0.02,
}

#: WARP's defaults with ``optimizer="sgd"``: rank-weighted plain-SGD steps need a smaller η
#: (:data:`DEFAULT_LEARNING_RATES`), annealing and a norm bound (ml-100k: η 0.05 constant
#: diverges in epoch 2).
PLAIN_SGD_WARP = {"schedule": "linear", "max_norm": 1.0}

#: Fang et al. 2015's own configuration (§3.1, Algorithm 1: squared loss, 100 factors,
#: λ 0.01, 2 negatives per positive drawn once ∝ log-popularity, plain SGD steps):
#: ``Factorizer(**FANG_2015)`` reproduces the paper's method.
FANG_2015: dict[str, Any] = {
    "loss": "squared",
    "factors": 100,
    "regularization": 0.01,
    "neg_ratio": 2.0,
    "neg_weighting": "log-popularity",
    "resample_negatives": False,
    "optimizer": "sgd",
}

#: What early stopping can watch: the validation record's top-k and AUC keys (higher is better).
EARLY_STOPPING_METRICS = ("ndcg@10", "precision@10", "auc")

#: Work blocks per epoch; fixed so that the partition never depends on the thread count.
N_BLOCKS = 1024

#: A factor entry beyond this magnitude means the fit is diverging.
MAX_ABS_FACTOR = 1e4

#: Validation metrics are computed for at most this many validation users (seeded choice)...
VALIDATION_USERS = 5000
#: ... and at most this many user × item scores per epoch (a large catalogue gets fewer users:
#: 500 at 100,000 items), so that validating costs a fraction of an epoch.
VALIDATION_SCORES = 50_000_000

#: implicit's per-epoch callback: ``callback(iteration, elapsed, loss)`` (0-based epoch, its
#: seconds, its mean loss per update); returning ``False`` stops the fit (a collabfeat addition).
Callback = Callable[[int, float, float], Any]


def _as_matrix(data: Any, name: str) -> tuple[sp.csr_matrix, np.ndarray | None, np.ndarray | None]:
    """``(csr float32 ones, user_ids, item_ids)`` from a sparse matrix or an Interactions."""
    if isinstance(data, Interactions):
        return data.user_items, data.user_ids, data.item_ids
    if not sp.issparse(data):
        raise InputError(
            f"{name}: expected a scipy.sparse users × items matrix or an Interactions, "
            f"got {type(data).__name__}"
        )
    if data.ndim != 2:
        raise InputError(f"{name}: expected a 2-D matrix, got shape {data.shape}")
    if data.nnz and not np.all(np.isfinite(data.data)):
        raise InputError(f"{name}: contains NaN or inf")
    return binarize(data), None, None


@dataclasses.dataclass(frozen=True)
class EffectiveParams:
    """The parameters a fit runs with: the constructor's, validated, each ``None`` resolved to
    the loss's default (see :class:`Factorizer` for each one's meaning).

    Built once by :meth:`Factorizer.fit` (and :meth:`Factorizer.fold_in`); the kernels'
    hyper-parameter bundle (:class:`cfcore._kernels.sgd.Hyper`) is built from it, and it is
    saved in the model file as ``effective_params`` beside the constructor's ``params``.
    ``max_norm`` is ``None`` when rows are unconstrained; ``threads`` is the number of
    threads used (``threads=0`` resolved to the cores, a larger request clamped).
    """

    factors: int
    loss: str
    epochs: int
    learning_rate: float
    regularization: float
    bias_regularization: float
    neg_ratio: float
    neg_weighting: str
    resample_negatives: bool
    use_biases: bool
    schedule: str
    order: str
    optimizer: str
    max_sampled: int
    margin: float
    max_norm: float | None
    init_scale: float
    threads: int
    seed: int
    early_stopping: int | None = None
    early_stopping_metric: str = "ndcg@10"

    @property
    def loss_code(self) -> int:
        """The kernels' code of :attr:`loss`."""
        return sgd.LOSS_CODES[self.loss]

    @property
    def adagrad(self) -> bool:
        return self.optimizer == "adagrad"

    def lr_at(self, epoch: int, epochs: int) -> float:
        """The step ``η_e`` of epoch ``epoch`` (0-based) of ``epochs`` under :attr:`schedule`."""
        lr = self.learning_rate
        if self.schedule == "linear":
            return lr * max(1.0 - epoch / max(epochs, 1), 1.0 / max(epochs, 1))
        if self.schedule == "inverse-sqrt":
            return lr / math.sqrt(1.0 + epoch)
        return lr

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EffectiveParams | None:
        """From :meth:`as_dict` (a model file's header); ``None`` when fields are missing
        (fields with a default may be: files written before they existed)."""
        fields = dataclasses.fields(cls)
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        if not isinstance(values, dict) or not all(n in values for n in required):
            return None
        return cls(**{f.name: values[f.name] for f in fields if f.name in values})


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


class Factorizer(FactorModel):
    """Implicit-feedback matrix factorization by Hogwild SGD with sampled negatives.

    Parameters
    ----------
    factors : int, default 100
        Latent dimension d (Fang et al.: 100).
    loss : {"squared", "logistic", "bpr", "warp"}, default "squared"
        See the module docstring; ``"squared"`` is Fang et al. eq. 3.
    epochs : int, default 20
        Passes over the training entries.
    learning_rate : float, optional
        Initial SGD step η; ``None`` picks :data:`DEFAULT_LEARNING_RATES` for the loss and
        optimizer.
    regularization : float, optional
        λ on the factors of every row a step touches. Default (``None``): 0.02 for
        ``squared`` and ``logistic``, 0.01 (Fang) for ``bpr`` and ``warp``
        (:data:`LOSS_DEFAULTS`). The penalty is paid per visit (Fang eq. 3), so active users
        and popular items are held back most. With the pointwise defaults (64 factors, 20
        epochs), 0.01 overfits — held-out NDCG@10 peaks early and falls (ml-100k 0.422 at
        epoch 8, 0.394 at 20) — while 0.02 keeps rising (0.446) and 0.05 smothers users with
        hundreds of entries (ML-1M-sized low-rank data: 0.14, the popularity level).
    bias_regularization : float, optional
        λ_b on the biases (default: ``regularization``).
    neg_ratio : float, optional
        Sampled negatives per positive, per user. Default (``None``): 4 for ``squared`` and
        ``logistic`` (ml-100k NDCG@10 0.448 vs 0.423 with Fang's 2, ML-1M-sized low-rank
        data 0.364 vs 0.323; 8 is no better), 2 (Fang) for ``bpr``. A user with fewer
        unobserved items than that gets all of them; a ratio given here then warns
        (:class:`cfcore.sampling.NegativeShortfallWarning`), the default does not.
    neg_weighting : {"log-popularity", "popularity", "uniform"}, optional
        Negative sampling weight ``w(p_i)`` of item popularity (Fang eq. 1–2, "in practice"
        the logarithm; :func:`cfcore.sampling.check_neg_weighting` — also
        ``"log_popularity"``). Default (``None``): ``"log-popularity"`` (Fang), except for ``warp``,
        whose candidates are drawn ``"uniform"``-ly from the catalogue as in LightFM, the
        draw its rank estimate ``⌊(N−1)/n⌋`` assumes (ml-100k, 64 factors, 20 epochs: AUC
        0.938 uniform, 0.930 log-popularity, 0.855 popularity).
    resample_negatives : bool, optional
        Draw fresh negatives every epoch (``(seed, epoch)`` streams) instead of once. Default
        (``None``): fresh for ``squared``, ``logistic`` and ``bpr``, which otherwise keep
        pushing the same few negatives down and overfit them — the squared loss on Fang et
        al.'s single draw (``False``, :data:`FANG_2015`) loses held-out NDCG@10 with every
        epoch after the tenth (ml-100k, 64 factors: 0.381 at epoch 10, 0.341 at 20, 0.267 at
        40; resampled: 0.412 at 15, still 0.378 at 40) and BPR held-out AUC (0.935 vs 0.927).
        ``warp`` draws its candidates from the whole catalogue at every step and ignores it.
    use_biases : bool, default False
        Learn a user and an item bias (``s_ui = x_u·y_i + b_u + b_i``; pairwise losses only
        learn ``b_i``, a user bias cancels in ``s_ui − s_uj``).
    schedule : {"constant", "linear", "inverse-sqrt"}, optional
        Per-epoch step ``η_e``: ``η``, ``η (1 − e/E)`` (floored at ``η/E``) or ``η/√(1+e)``.
        Default (``None``): ``"constant"``, except ``"linear"`` for ``warp`` with
        ``optimizer="sgd"`` (:data:`PLAIN_SGD_WARP`) — rank-weighted plain-SGD steps want a
        large start and annealing (ml-100k, 64 factors: AUC 0.9355 after 5 epochs vs 0.928 at
        a constant rate); AdaGrad anneals each row by itself.
    order : {"grouped", "random"}, default "grouped"
        ``"grouped"``: users in shuffled order, each user's entries together in shuffled
        order (its row stays in cache), each user's negatives drawn as the user is visited
        (never stored); ``"random"``: uniformly random entries with replacement (the
        classical order; slower on large data and stores every epoch's negatives — 16 bytes
        per interaction at ratio 4 — kept for comparison).
    optimizer : {"sgd", "adagrad"}, optional
        ``"sgd"``: every row steps with the epoch's ``η``; ``"adagrad"``: row-wise AdaGrad,
        row r steps with ``η/√G_r``, ``G_r`` = 1 + its accumulated mean squared gradient
        (:mod:`cfcore._kernels.sgd`), so popular items and active users slow down while rare
        ones keep learning. Default (``None``): ``"adagrad"`` for ``warp`` (as LightFM), whose
        rank-weighted steps otherwise need η tuned to the catalogue (16M power-law data, 3
        epochs: AUC 0.948 / P@10 0.167 vs 0.938 / 0.013 with annealed SGD), and for
        ``squared`` and ``logistic``: it costs them about half their updates/s (two more row
        passes per step, and accumulators both threads write) but reaches a given NDCG@10 in
        a third of the epochs — plain steps from the small initialisation sit at the
        popularity level for the first 5 epochs on ML-1M-sized low-rank data — so it gets
        there sooner in wall time (bench quality suite). ``"sgd"`` for ``bpr``: AdaGrad lifts
        it after few epochs on large data (η 0.1; synth-4m, 3 epochs: AUC 0.938 vs 0.896)
        but halves its throughput (ML-1M-sized data, 2 threads, 15.6 → 7.6 M updates/s).
    max_sampled : int, optional
        WARP: catalogue items drawn per positive before giving up. Default (``None``): 50,
        with η 0.03. LightFM's 10 gives up on a third of the positives once the model is
        decent (ML-1M-sized low-rank data: 5 draws per positive on average, 32% without a
        violator after 10), and their rank weights stay coarse; 50 costs about 1.4× the time
        per epoch (14 draws per positive) and reaches a higher NDCG@10 (64 factors, η 0.05:
        0.354 vs 0.333 on that data, ml-latest-small 0.298 vs 0.278, 16M low-rank data 0.140
        vs 0.130; 100 adds little: 0.359, 0.301). At η 0.05 the sharper steps overfit small
        data after about 8 epochs (100 factors, ml-100k NDCG@10 0.418 at epoch 8, 0.334 at
        20); η 0.03 keeps rising for 15 epochs and holds (0.429, 0.425 at 20; LightFM's
        setting: 0.420, 0.385 at 20).
    margin : float, default 1.0
        WARP margin m.
    max_norm : float, optional
        Constrain every factor row to ``‖·‖ ≤ max_norm``: after each epoch, longer rows are
        scaled back onto the ball (Weston et al. 2011 and Denton et al. 2015 bound embedding
        norms instead of, or besides, an L2 penalty). Default (``None``): no constraint (1.0
        for ``warp`` with ``optimizer="sgd"``, :data:`PLAIN_SGD_WARP`). A tight bound flattens
        popularity, which the models express through item norms: WARP on power-law data
        (synth-4m, 3 epochs) reaches P@10 0.185 unconstrained and 0.095 with every row held at
        norm 1. Plain-SGD WARP needs it: without it its rank-weighted steps inflate popular
        items' norms and held-out AUC slides after a few epochs (ml-100k: 0.929 at epoch 10
        falling to 0.88 at 30).
    init_scale : float, default 0.1
        Factors start as ``N(0, init_scale² / √factors)`` — i.e. std ``init_scale / factors**0.25``
        — so that initial scores have std ``init_scale`` whatever ``factors``; biases start at 0.
    threads : int, default 0
        Worker threads (0 = all cores Numba sees; more than that are clamped, with a
        :class:`cfcore.threads.ThreadsWarning`).
    seed : int, default 0
        Seeds the initialisation, the user order, the per-block streams and the negatives.
    progress : bool, default True
        Show a tqdm bar with the running loss.
    early_stopping : int, optional
        Patience: stop when the validation set's ``early_stopping_metric`` has not improved
        for this many epochs, and keep the factors of the best epoch (``best_epoch_``).
        Needs ``fit(..., validation=...)``. Default (``None``): run every epoch.
    early_stopping_metric : {"ndcg@10", "precision@10", "auc"}, default "ndcg@10"
        What early stopping watches (see :meth:`fit`); higher is better.
    **deprecated
        ``neg_weight``: the old name of ``neg_weighting`` (``DeprecationWarning``).

    Attributes
    ----------
    user_factors_, item_factors_ : ndarray of float32, (n_users, factors), (n_items, factors)
    user_bias_, item_bias_ : ndarray of float32 or None
    user_ids_, item_ids_ : ndarray — raw ids when fit on an Interactions, else ``arange``
    item_popularity_ : ndarray of int64 — training viewers per item (used by :meth:`fold_in`)
    effective_params_ : EffectiveParams — the parameters the fit ran with (every default
        resolved; saved in the model file as ``effective_params``)
    history_ : list of dict — per epoch run: ``epoch``, ``loss`` (mean per update), ``lr``,
        ``updates``, ``seconds``, and with validation ``rmse``, ``sampled_pr``, ``auc``,
        ``precision@10``, ``ndcg@10`` (see :meth:`fit`).
    best_epoch_ : int — the epoch whose factors the model holds: the last one run, or with
        ``early_stopping`` the best one.
    """

    #: Constructor parameters under an older name (read from older model files too).
    _renamed_params = {"neg_weight": "neg_weighting"}

    def __init__(
        self,
        factors: int = 100,
        loss: str = "squared",
        epochs: int = 20,
        learning_rate: float | None = None,
        regularization: float | None = None,
        bias_regularization: float | None = None,
        neg_ratio: float | None = None,
        neg_weighting: str | None = None,
        resample_negatives: bool | None = None,
        use_biases: bool = False,
        schedule: str | None = None,
        order: str = "grouped",
        optimizer: str | None = None,
        max_sampled: int | None = None,
        margin: float = 1.0,
        max_norm: float | None = None,
        init_scale: float = 0.1,
        threads: int = 0,
        seed: int = 0,
        progress: bool = True,
        early_stopping: int | None = None,
        early_stopping_metric: str = "ndcg@10",
        **deprecated: Any,
    ) -> None:
        self.factors = factors
        self.loss = loss
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.bias_regularization = bias_regularization
        self.neg_ratio = neg_ratio
        self.neg_weighting = neg_weighting
        self.resample_negatives = resample_negatives
        self.use_biases = use_biases
        self.schedule = schedule
        self.order = order
        self.optimizer = optimizer
        self.max_sampled = max_sampled
        self.margin = margin
        self.max_norm = max_norm
        self.init_scale = init_scale
        self.threads = threads
        self.seed = seed
        self.progress = progress
        self.early_stopping = early_stopping
        self.early_stopping_metric = early_stopping_metric
        for name, value in renamed_arguments(
            deprecated, "Factorizer", self._renamed_params
        ).items():
            setattr(self, name, value)

    # ------------------------------------------------------------------ parameters
    def _resolve(self) -> EffectiveParams:
        """Validate the constructor parameters (at fit time, as scikit-learn does) and resolve
        every default; the one place that knows the loss-specific defaults."""
        loss = _choice(self.loss, "loss", LOSSES)
        defaults = LOSS_DEFAULTS[loss]

        def given(name: str) -> Any:
            value = getattr(self, name)
            return defaults[name] if value is None else value

        optimizer = _choice(given("optimizer"), "optimizer", OPTIMIZERS)
        # WARP with plain SGD steps needs its own learning rate, annealing and norm bound.
        plain_warp = PLAIN_SGD_WARP if loss == "warp" and optimizer == "sgd" else {}
        if self.learning_rate is None:
            lr = DEFAULT_LEARNING_RATES[loss, optimizer]
        else:
            lr = _positive_number(self.learning_rate, "learning_rate")
        schedule = self.schedule
        if schedule is None:
            schedule = plain_warp.get("schedule", "constant")
        max_norm = self.max_norm
        if max_norm is None:
            max_norm = plain_warp.get("max_norm")
        elif (
            isinstance(max_norm, bool)
            or not isinstance(max_norm, numbers.Real)
            or not (0 < max_norm < math.inf)
        ):
            raise InputError(f"max_norm: expected a number > 0 (or None), got {max_norm!r}")
        if self.neg_weighting is None:
            # WARP's rank estimate assumes uniform catalogue draws, as LightFM makes them.
            weighting = "uniform" if loss == "warp" else "log-popularity"
        else:
            weighting = check_neg_weighting(self.neg_weighting)
        reg = _positive_number(given("regularization"), "regularization", allow_zero=True)
        breg = self.bias_regularization
        breg = reg if breg is None else _positive_number(breg, "bias_regularization", True)
        return EffectiveParams(
            factors=_integer(self.factors, "factors", 1),
            loss=loss,
            epochs=_integer(self.epochs, "epochs", 0),
            learning_rate=lr,
            regularization=reg,
            bias_regularization=breg,
            neg_ratio=check_neg_ratio(given("neg_ratio")),
            neg_weighting=weighting,
            resample_negatives=_flag(given("resample_negatives"), "resample_negatives"),
            use_biases=_flag(self.use_biases, "use_biases"),
            schedule=_choice(schedule, "schedule", SCHEDULES),
            order=_choice(self.order, "order", ORDERS),
            optimizer=optimizer,
            max_sampled=_integer(given("max_sampled"), "max_sampled", 1),
            margin=_positive_number(self.margin, "margin", allow_zero=True),
            max_norm=None if max_norm is None else float(max_norm),
            init_scale=_positive_number(self.init_scale, "init_scale"),
            threads=resolve_threads(self.threads, stacklevel=4),
            seed=_integer(self.seed, "seed", 0),
            early_stopping=(
                None
                if self.early_stopping is None
                else _integer(self.early_stopping, "early_stopping", 1)
            ),
            early_stopping_metric=_choice(
                self.early_stopping_metric, "early_stopping_metric", EARLY_STOPPING_METRICS
            ),
        )

    def _hyper(
        self, p: EffectiveParams, n_items: int, popularity: np.ndarray | None = None
    ) -> sgd.Hyper:
        """The kernels' hyper-parameters (``lr`` is set per epoch): λ, λ_b, WARP's margin,
        rank weights and candidate table — an alias table over the sampler's weights
        ``w(p_i)`` of ``popularity`` (default: the items'; a one-slot table — uniform over the
        catalogue — for ``uniform`` weights and for the other losses)."""
        from cfcore._kernels.sampling import build_alias
        from cfcore.sampling import item_weights

        table: dict[str, np.ndarray] = {}
        if p.loss == "warp" and p.neg_weighting != "uniform":
            if popularity is None:
                popularity = getattr(self, "item_popularity_", None)
            if popularity is None:
                popularity = np.ones(n_items, dtype=np.int64)
            w = item_weights(popularity, p.neg_weighting)
            prob, alias = np.empty(n_items, np.float64), np.empty(n_items, np.int32)
            if build_alias(w, prob, alias) <= 0:
                raise InputError(f"neg_weighting={p.neg_weighting!r}: every item has weight 0")
            table = {"alias_prob": prob, "alias_idx": alias}
        return sgd.Hyper.of(
            lr=p.learning_rate,
            reg=p.regularization,
            reg_bias=p.bias_regularization,
            margin=p.margin,
            warp_weights=sgd.warp_weights(n_items, p.max_sampled),
            **table,
        )

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        user_items: sp.spmatrix | Interactions,
        show_progress: bool = True,
        callback: Callback | None = None,
        *,
        validation: sp.spmatrix | Interactions | None = None,
    ) -> Factorizer:
        """Learn the factors (implicit's ``fit(user_items, show_progress, callback)``).

        Parameters
        ----------
        user_items : scipy.sparse matrix (n_users, n_items) or Interactions
            Training positives (any stored non-zero is a positive).
        show_progress : bool, default True
            Show a tqdm bar (with the running loss) — when the constructor's ``progress`` is
            also true.
        callback : callable, optional
            implicit's ``callback(iteration, elapsed, loss)`` after every epoch: the epoch
            (0-based), its seconds and its mean loss per update; the epoch's full record
            (with the validation metrics) is ``model.history_[-1]`` by then. Returning
            ``False`` stops the fit (implicit ignores the return value).
        validation : scipy.sparse matrix or Interactions, same shape, optional
            Held-out positives. After every epoch ``history_`` records, on Fang et al.'s
            validation set — these positives (target 1) and ``neg_ratio`` × as many negatives
            sampled once like the training ones (target 0), training items excluded —
            ``rmse`` and ``sampled_pr`` (Fang's PR: the fraction of mis-ordered
            (positive, sampled negative) pairs per user, averaged); and, ranking every item
            the user has not trained on, ``auc`` (per-user AUC against *uniform unobserved*
            items; ``1 − auc`` is the ``pr`` that ``cfcore evaluate`` reports),
            ``precision@10`` and ``ndcg@10`` (:func:`cfcore.metrics.top_k_metrics`) — for at
            most :data:`VALIDATION_USERS` users and :data:`VALIDATION_SCORES` scores (a
            seeded choice, the same every epoch). ``early_stopping`` watches one of these.

        Returns
        -------
        self

        Raises
        ------
        InputError
            A bad parameter or input (the message names it), or ``early_stopping`` without
            ``validation``.
        DivergenceError
            The loss or a factor became NaN/inf or exploded.
        """
        p = self._resolve()
        if p.early_stopping is not None and validation is None:
            raise InputError(
                f"early_stopping={p.early_stopping}: needs held-out interactions to watch — "
                "fit(user_items, validation=...)"
            )
        train, user_ids, item_ids = _as_matrix(user_items, "user_items")
        n_users, n_items = train.shape
        if train.nnz == 0:
            raise InputError("user_items: has no interactions")
        val = val_neg = None
        if validation is not None:
            val, v_uids, v_iids = _as_matrix(validation, "validation")
            if val.shape != train.shape:
                raise InputError(
                    f"validation: shape {val.shape} does not match user_items {train.shape}"
                )
            for name, a, b in (("user", user_ids, v_uids), ("item", item_ids, v_iids)):
                if a is not None and b is not None and not np.array_equal(a, b):
                    raise InputError(f"validation: its {name} ids differ from user_items'")
            if val.nnz == 0:
                raise InputError("validation: has no interactions")
        k, seed = p.factors, p.seed
        popularity = column_counts(train)

        # Seeded initialisation (std init_scale / k**0.25 → initial scores have std init_scale).
        rng = np.random.default_rng(seed)
        std = np.float32(p.init_scale / k**0.25)
        X = rng.standard_normal((n_users, k), dtype=np.float32)
        Y = rng.standard_normal((n_items, k), dtype=np.float32)
        X *= std  # in place: no second copy of the tables
        Y *= std
        tables = sgd.Tables.of(X, Y, adagrad=p.adagrad)
        self.user_factors_, self.item_factors_ = X, Y
        self.user_bias_ = tables.user_bias if p.use_biases else None
        self.item_bias_ = tables.item_bias if p.use_biases else None
        self.user_ids_ = np.arange(n_users) if user_ids is None else user_ids
        self.item_ids_ = np.arange(n_items) if item_ids is None else item_ids
        self.item_popularity_ = popularity
        self.effective_params_ = p
        self.history_ = []
        self.best_epoch_ = 0
        best = _BestEpoch(tables, p.early_stopping, p.early_stopping_metric)

        with numba_threads(p.threads):
            if val is not None:
                val_neg = self._validation_negatives(train, val, p)
                val_users = _validation_users(val, seed)

            # A ratio the caller asked for warns when heavy users cannot get it; the default
            # ratio does not (4 × 400 positives exceed a 1,682-item catalogue).
            warn = self.neg_ratio is not None
            drawn = self._kernel_draws_negatives(p)

            def entries(epoch: int) -> sgd.Entries:
                if drawn:
                    return self._drawn_entries(train, p, popularity, warn_short=warn)
                negatives = self._negative_arrays(
                    train, p, epoch=epoch, warn_short=warn and epoch == 0
                )
                return sgd.Entries.of(
                    train.indptr, train.indices, *negatives, p.order, p.loss_code in sgd.PAIRWISE
                )

            data = entries(0)
            hyper = self._hyper(p, n_items)
            run = sgd.epoch_kernel(
                loss=p.loss_code, order=p.order, use_bias=p.use_biases, adagrad=p.adagrad
            )
            bar = self._progress(p.epochs) if show_progress else None
            try:
                for epoch in range(p.epochs):
                    t0 = time.perf_counter()
                    if p.resample_negatives and epoch > 0 and not drawn:
                        del data  # free the last draw before the next: one set at a time
                        data = entries(epoch)
                    hyper = hyper._replace(lr=np.float32(p.lr_at(epoch, p.epochs)))
                    users = None
                    if p.order == "grouped":  # this epoch's user order; the blocks are slices of it
                        users = np.random.default_rng([seed, epoch]).permutation(n_users)
                        users = users.astype(np.int32)
                    counters = sgd.Epoch.of(
                        seed=seed,
                        epoch=epoch,
                        n_blocks=N_BLOCKS,
                        users=users,
                        n_draws=len(data.entry_user),
                        neg_epoch=epoch if p.resample_negatives else 0,
                    )
                    run(tables, data, hyper, counters)
                    updates = int(counters.count_out.sum())
                    mean_loss = float(counters.loss_out.sum() / max(updates, 1))
                    # Before the projection, which would hide rows that blew up in the epoch.
                    self._check_divergence(epoch, mean_loss, p, float(hyper.lr))
                    _project_rows(X, p.max_norm)
                    _project_rows(Y, p.max_norm)
                    seconds = time.perf_counter() - t0
                    record: dict[str, Any] = {
                        "epoch": epoch + 1,
                        "loss": mean_loss,
                        "lr": float(hyper.lr),
                        "updates": updates,
                        "seconds": seconds,
                    }
                    if val is not None:
                        record.update(self._validate(train, val, val_neg, val_users))
                    self.history_.append(record)
                    self.best_epoch_ = epoch + 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            {
                                k_: round(v, 4)
                                for k_, v in record.items()
                                if k_ in ("loss", "auc", "ndcg@10", "rmse")
                            }
                        )
                    if report_epoch(callback, record) or best.stop_after(record):
                        break
            finally:  # also when the fit fails: the error is not printed onto the bar
                if bar is not None:
                    bar.close()
        self.best_epoch_ = best.restore() or self.best_epoch_
        return self

    @staticmethod
    def _kernel_draws_negatives(p: EffectiveParams) -> bool:
        """Whether the epoch kernel draws the negatives itself: in the grouped order, each
        user's when it visits the user — the negatives :func:`cfcore.sampling.sample_negatives`
        would give, never stored (``neg_ratio × nnz`` int32 less memory: 16 bytes per
        interaction at the default ratio 4 of the squared and logistic losses). The random
        order visits entries of any user, so it stores them; WARP has none."""
        return p.order == "grouped" and p.loss != "warp"

    @staticmethod
    def _drawn_entries(
        train: sp.csr_matrix, p: EffectiveParams, popularity: np.ndarray, warn_short: bool
    ) -> sgd.Entries:
        """Entries whose negatives the grouped kernel draws itself: the positives, each
        user's number of negatives and the sampler's tables, built once per fit
        (:class:`cfcore.sampling.SamplingPlan`, with the model's ratio and weighting and the
        items' ``popularity`` in ``train``; the kernel uses the model's seed and the epoch,
        as :meth:`_negative_arrays` would)."""
        plan = SamplingPlan.of(train, p.neg_ratio, p.neg_weighting, popularity)
        if warn_short:
            plan.warn_shortfall(stacklevel=4)
        return sgd.Entries.of(
            plan.indptr,
            plan.indices,
            plan.out_indptr,
            np.zeros(0, np.int32),
            neg_weights=plan.weights,
            neg_alias=plan.alias_table,
        )

    def _negative_arrays(
        self, rows: sp.csr_matrix, p: EffectiveParams, **sampling: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sampled negatives of ``rows`` (indptr, indices), drawn with the model's ratio,
        weighting, seed and threads (``sampling``: the rest of
        :func:`cfcore.sampling.sample_negatives`'s options). WARP draws its candidates from the
        catalogue and gets none."""
        from cfcore.sampling import sample_negatives

        if p.loss == "warp":
            return np.zeros(rows.shape[0] + 1, np.int64), np.zeros(0, np.int32)
        ns = sample_negatives(
            rows, p.neg_ratio, p.neg_weighting, seed=p.seed, threads=p.threads, **sampling
        )
        return ns.indptr, ns.indices

    def _progress(self, total: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"factorize ({self.loss})", unit="epoch", leave=False)

    def _check_divergence(self, epoch: int, mean_loss: float, p: EffectiveParams, lr: float):
        X, Y = self.user_factors_, self.item_factors_
        extremes = [float(X.max()), float(X.min()), float(Y.max()), float(Y.min())]
        if p.use_biases:
            extremes += [float(np.abs(self.item_bias_).max()), float(np.abs(self.user_bias_).max())]
        check_divergence(epoch, mean_loss, max(abs(v) for v in extremes), p, lr)

    # ------------------------------------------------------------------ validation
    def _validation_negatives(
        self, train: sp.csr_matrix, val: sp.csr_matrix, p: EffectiveParams
    ) -> sp.csr_matrix:
        """``neg_ratio`` negatives per held-out positive, drawn like the training negatives
        (same weighting, training popularity), never a training or held-out positive."""
        from cfcore.sampling import sample_negatives

        ns = sample_negatives(
            val,
            p.neg_ratio,
            p.neg_weighting,
            seed=p.seed,
            threads=p.threads,
            popularity=self.item_popularity_,
            epoch=2**31 - 1,
            warn_short=False,
        )
        neg = ns.to_csr()
        neg = neg - neg.multiply(train)
        neg.eliminate_zeros()
        return neg.tocsr()

    def _validate(
        self,
        train: sp.csr_matrix,
        val: sp.csr_matrix,
        val_neg: sp.csr_matrix,
        ranked: np.ndarray,
    ) -> dict[str, float]:
        """``rmse`` and ``sampled_pr`` on the held-out positives and sampled negatives (Fang's
        validation); ``auc``, ``precision@10`` and ``ndcg@10`` of the ``ranked`` users' full
        rankings (see :meth:`fit`)."""
        from cfcore.metrics import evaluate, pairwise_ranking, rmse

        pos, neg = val.tocoo(), val_neg.tocoo()
        users = np.concatenate([pos.row, neg.row])
        items = np.concatenate([pos.col, neg.col])
        truth = np.concatenate([np.ones(pos.nnz), np.zeros(neg.nnz)])
        out = {"rmse": rmse(truth, self.predict(users, items))}
        score = self.scorer()
        out["sampled_pr"] = pairwise_ranking(score, val, negatives=val_neg)["pr"]
        ranking = evaluate(score, train, val, k=10, users=ranked)
        out.update({key: ranking[key] for key in ("auc", "precision@10", "ndcg@10")})
        return out

    # ------------------------------------------------------------------ new users
    def fold_in(self, user_items_rows: sp.spmatrix, epochs: int | None = None) -> np.ndarray:
        """Factors for new users from their interactions, item factors held fixed.

        Runs ``epochs`` (default: the model's ``epochs``) SGD epochs of the model's own loss
        over each new user's positives and freshly sampled negatives (same ``neg_ratio`` and
        weighting, training popularity), updating only the new user rows (and user biases) —
        the same kernel as :meth:`fit` with item learning switched off. Deterministic for a
        given ``seed``, whatever the number of threads (each new user's row is written by its
        own block only, item rows are read-only). ``recommend(..., recalculate_user=True)``
        scores with it.

        Parameters
        ----------
        user_items_rows : scipy.sparse matrix, shape (n_new_users, n_items)

        Returns
        -------
        ndarray of float32, shape (n_new_users, factors)
        """
        self._check_fitted()
        popularity = getattr(self, "item_popularity_", None)
        return self._fold_in(
            user_items_rows,
            "user_items_rows",
            self.item_factors_,
            self.item_bias_,
            popularity,
            epochs,
        )

    def fold_in_items(self, item_users_rows: sp.spmatrix, epochs: int | None = None) -> np.ndarray:
        """Factors for new items from their users, user factors held fixed (the mirror of
        :meth:`fold_in`).

        The same epochs of the model's own loss with the roles of users and items exchanged:
        each new item is pulled towards the users who have it and away from other users
        (drawn uniformly; the model keeps no user popularity) — for BPR and WARP, the item's
        side of the pairwise loss, ranking its users above others. Only the factors matter
        for ``similar_items(..., recalculate_item=True)``, which calls it; a new item's bias
        is not estimated.

        Parameters
        ----------
        item_users_rows : scipy.sparse matrix, shape (n_new_items, n_users)

        Returns
        -------
        ndarray of float32, shape (n_new_items, factors)
        """
        self._check_fitted()
        return self._fold_in(
            item_users_rows, "item_users_rows", self.user_factors_, self.user_bias_, None, epochs
        )

    def _fold_in(
        self,
        rows: sp.spmatrix,
        name: str,
        fixed: np.ndarray,
        fixed_bias: np.ndarray | None,
        popularity: np.ndarray | None,
        epochs: int | None,
    ) -> np.ndarray:
        """New rows' factors from their entries (columns: the rows of ``fixed``, held fixed;
        negatives drawn by ``popularity``, uniform when None)."""
        p = self._resolve()
        rows, _, _ = _as_matrix(rows, name)
        n_fixed = len(fixed)
        if rows.shape[1] != n_fixed:
            raise InputError(f"{name}: has {rows.shape[1]} columns, the model has {n_fixed}")
        epochs = p.epochs if epochs is None else _integer(epochs, "epochs", 0)
        n_new, k = rows.shape[0], fixed.shape[1]
        rng = np.random.default_rng([p.seed, 1])
        X = rng.standard_normal((n_new, k), dtype=np.float32) * np.float32(p.init_scale / k**0.25)
        if rows.nnz == 0 or n_new == 0:
            return X
        if popularity is None or p.neg_weighting == "uniform":
            popularity = np.ones(n_fixed, dtype=np.int64)
        tables = sgd.Tables.of(X, fixed, item_bias=fixed_bias, adagrad=p.adagrad)
        run = sgd.epoch_kernel(
            loss=p.loss_code, use_bias=p.use_biases, learn_items=False, adagrad=p.adagrad
        )
        hyper = self._hyper(p, n_fixed, popularity)
        with numba_threads(p.threads):
            negatives = self._negative_arrays(rows, p, popularity=popularity, warn_short=False)
            data = sgd.Entries.of(rows.indptr, rows.indices, *negatives)
            for epoch in range(epochs):
                users = np.random.default_rng([p.seed, epoch, 1]).permutation(n_new)
                counters = sgd.Epoch.of(
                    seed=p.seed,
                    epoch=epoch,
                    n_blocks=min(N_BLOCKS, n_new),
                    users=users.astype(np.int32),
                )
                run(tables, data, hyper._replace(lr=np.float32(p.lr_at(epoch, epochs))), counters)
                _project_rows(X, p.max_norm)
        if not np.all(np.isfinite(X)):
            raise DivergenceError(
                "fold_in diverged", learning_rate=p.learning_rate, regularization=p.regularization
            )
        return X

    # ------------------------------------------------------------------ persistence
    def _artifact_arrays(self) -> dict[str, np.ndarray]:
        arrays = super()._artifact_arrays()
        if getattr(self, "item_popularity_", None) is not None:
            arrays["item_popularity"] = self.item_popularity_
        return arrays

    def _artifact_meta(self) -> dict[str, Any]:
        effective = getattr(self, "effective_params_", None)
        return {} if effective is None else {"effective_params": effective.as_dict()}

    def _load_extra(self, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        self.item_popularity_ = arrays.get("item_popularity")
        self.effective_params_ = EffectiveParams.from_dict(header.get("effective_params"))


def report_epoch(callback: Callback | None, record: dict[str, Any]) -> bool:
    """Call implicit's ``callback(iteration, elapsed, loss)`` with an epoch's record (1-based
    ``epoch``, ``seconds``, ``loss``); True when it asks to stop (returns ``False``). The one
    caller of fit callbacks, shared by :class:`Factorizer` and the Spark backend."""
    if callback is None:
        return False
    return callback(record["epoch"] - 1, record["seconds"], record["loss"]) is False


def check_divergence(
    epoch: int, mean_loss: float, biggest: float, p: EffectiveParams, lr: float
) -> None:
    """:class:`DivergenceError` when an epoch's mean loss is not finite or its largest
    ``|factor|`` (or bias) is not finite or beyond :data:`MAX_ABS_FACTOR` — the one test,
    shared by :class:`Factorizer` and the Spark backend (which only has the extremes)."""
    if not math.isfinite(mean_loss) or not math.isfinite(biggest) or biggest > MAX_ABS_FACTOR:
        raise DivergenceError(
            f"training diverged in epoch {epoch + 1} (mean loss {mean_loss:.4g}, largest "
            f"|factor| {biggest:.4g})",
            learning_rate=lr,
            regularization=p.regularization,
        )


def _validation_users(val: sp.csr_matrix, seed: int) -> np.ndarray:
    """The validation users whose rankings are scored every epoch: those with a held-out
    positive, at most :data:`VALIDATION_USERS` of them and :data:`VALIDATION_SCORES` scores
    (a seeded choice, sorted)."""
    candidates = np.flatnonzero(np.diff(val.indptr) > 0)
    n = max(1, min(VALIDATION_USERS, VALIDATION_SCORES // max(val.shape[1], 1)))
    if len(candidates) <= n:
        return candidates
    return np.sort(np.random.default_rng(seed).choice(candidates, n, replace=False))


class _BestEpoch:
    """Early stopping: remembers the best epoch's tables (one copy, kept in buffers made once)
    and says when ``patience`` epochs have gone by without improving ``metric``."""

    def __init__(self, tables: sgd.Tables, patience: int | None, metric: str) -> None:
        self.tables, self.patience, self.metric = tables, patience, metric
        self.best_score, self.best_epoch = -math.inf, 0
        self.saved: list[np.ndarray] | None = None

    def _live(self) -> list[np.ndarray]:
        t = self.tables
        return [t.user_factors, t.item_factors, t.user_bias, t.item_bias]

    def stop_after(self, record: dict[str, Any]) -> bool:
        """Note epoch ``record["epoch"]``; True when the patience has run out."""
        if self.patience is None:
            return False
        score = record[self.metric]
        if score > self.best_score:
            self.best_score, self.best_epoch = score, record["epoch"]
            if self.saved is None:
                self.saved = [a.copy() for a in self._live()]
            else:
                for saved, live in zip(self.saved, self._live(), strict=True):
                    np.copyto(saved, live)
            return False
        return record["epoch"] - self.best_epoch >= self.patience

    def restore(self) -> int | None:
        """Put the best epoch's tables back in place; its number (None without early
        stopping)."""
        if self.saved is None:
            return None
        for saved, live in zip(self.saved, self._live(), strict=True):
            np.copyto(live, saved)
        return self.best_epoch


def _project_rows(table: np.ndarray, max_norm: float | None) -> None:
    """Scale the rows of ``table`` longer than ``max_norm`` back to that norm (in place)."""
    if max_norm is None:
        return
    norms = np.sqrt(np.einsum("ij,ij->i", table, table))
    long = np.flatnonzero(norms > max_norm)
    if len(long):
        table[long] *= (max_norm / norms[long]).astype(np.float32)[:, None]
