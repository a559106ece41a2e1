"""Matrix factorization of implicit feedback by lock-free (Hogwild) SGD.

:class:`Factorizer` learns user factors ``x_u`` and item factors ``y_i`` (float32) from a
users × items matrix of positives, with negatives drawn by :func:`cfcore.sampling.sample_negatives`
(Fang et al. 2015, Algorithm 1). Losses (maths in :mod:`cfcore._kernels.sgd`):

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
>>> ids, scores = model.recommend([0, 1], train.user_items[[0, 1]], N=10)
>>> model.save("model.npz")

Parallelism: ``threads`` workers update the shared tables without locks (Hogwild, Niu et al.
2011). Work is cut into a fixed number of blocks of users that does not depend on ``threads``;
with ``threads=1`` one worker runs them in order and a seed reproduces the model bit for bit;
with more threads only the interleaving of item-row updates differs. Fits always use the
``parallel=True`` build of the kernels, also for one thread: Numba compiles the serial build
of the same loop about 1.5–2× slower for the pairwise losses (ML-1M-sized data, one thread:
BPR 6.5 vs 9.2, WARP 2.3 vs 5.2 M updates/s).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from cfcore._kernels import sgd
from cfcore.errors import DivergenceError, InputError
from cfcore.estimator import check_integer as _integer
from cfcore.estimator import check_number as _positive_number
from cfcore.interactions import Interactions, binarize
from cfcore.model import FactorModel

LOSSES = tuple(sgd.LOSS_CODES)
SCHEDULES = ("constant", "linear", "inverse-sqrt")
ORDERS = ("grouped", "random")
OPTIMIZERS = ("sgd", "adagrad")
WEIGHTINGS = ("popularity", "log-popularity", "uniform")

#: Learning rates that work on MovieLens-sized data at the default initialisation (``lr=None``)
#: with the loss's default optimizer (AdaGrad for ``warp``, plain SGD for the others).
DEFAULT_LEARNING_RATES = {"squared": 0.02, "logistic": 0.05, "bpr": 0.05, "warp": 0.05}

#: WARP's defaults with ``optimizer="sgd"``: rank-weighted plain-SGD steps need a smaller η,
#: annealing and a norm bound (ml-100k: η 0.05 constant diverges in epoch 2).
PLAIN_SGD_WARP = {"learning_rate": 0.02, "schedule": "linear", "max_norm": 1.0}

#: Work blocks per epoch; fixed so that the partition never depends on the thread count.
N_BLOCKS = 1024

#: A factor entry beyond this magnitude means the fit is diverging.
MAX_ABS_FACTOR = 1e4

#: Held-out AUC is computed for at most this many validation users (seeded choice).
VALIDATION_USERS = 5000

Callback = Callable[[int, "Factorizer", dict[str, float]], Any]


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
        Initial SGD step η; ``None`` picks :data:`DEFAULT_LEARNING_RATES` for the loss.
    regularization : float, default 0.01
        λ on the factors of every row a step touches (Fang: 0.01).
    bias_regularization : float, optional
        λ_b on the biases (default: ``regularization``).
    neg_ratio : float, default 2.0
        Sampled negatives per positive, per user (Fang: 2).
    neg_weight : {"log-popularity", "popularity", "uniform"}, optional
        Negative sampling weight ``w(p_i)`` of item popularity (Fang eq. 1–2, "in practice"
        the logarithm). Default (``None``): ``"log-popularity"`` (Fang), except for ``warp``,
        whose candidates are drawn ``"uniform"``-ly from the catalogue as in LightFM, the
        draw its rank estimate ``⌊(N−1)/n⌋`` assumes (ml-100k, 64 factors, 20 epochs: AUC
        0.938 uniform, 0.930 log-popularity, 0.855 popularity).
    resample_negatives : bool, optional
        Draw fresh negatives every epoch (``(seed, epoch)`` streams) instead of once. Default
        (``None``): fixed negatives for ``squared`` (Fang et al. sample them once), fresh ones
        for ``logistic`` and ``bpr``, which otherwise keep pushing the same few negatives down
        and overfit them (ml-100k, 64 factors, 20 epochs: BPR AUC 0.935 vs 0.927). ``warp``
        draws its candidates from the whole catalogue at every step and ignores it.
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
        order (its row stays in cache); ``"random"``: uniformly random entries with
        replacement (the classical order; slower on large data, kept for comparison).
    optimizer : {"sgd", "adagrad"}, optional
        ``"sgd"``: every row steps with the epoch's ``η``; ``"adagrad"``: row-wise AdaGrad,
        row r steps with ``η/√G_r``, ``G_r`` = 1 + its accumulated mean squared gradient
        (:mod:`cfcore._kernels.sgd`), so popular items and active users slow down while rare
        ones keep learning. Default (``None``): ``"adagrad"`` for ``warp`` (as LightFM), whose
        rank-weighted steps otherwise need η tuned to the catalogue (16M power-law data, 3
        epochs: AUC 0.948 / P@10 0.167 vs 0.938 / 0.013 with annealed SGD), ``"sgd"`` for the
        others. AdaGrad also lifts BPR after few epochs on large data (η 0.1; synth-4m, 3
        epochs: AUC 0.938 vs 0.896) but costs ``squared``/``bpr`` about half their throughput
        (two more row passes per step, and accumulators both threads write: ML-1M-sized data,
        2 threads, BPR 15.6 → 7.6 M updates/s), so it is opt-in there.
    max_sampled : int, default 10
        WARP: negatives drawn per positive before giving up (LightFM's default).
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
        Worker threads (0 = all cores Numba sees).
    seed : int, default 0
        Seeds the initialisation, the user order, the per-block streams and the negatives.
    progress : bool, default True
        Show a tqdm bar with the running loss.

    Attributes
    ----------
    user_factors_, item_factors_ : ndarray of float32, (n_users, factors), (n_items, factors)
    user_bias_, item_bias_ : ndarray of float32 or None
    user_ids_, item_ids_ : ndarray — raw ids when fit on an Interactions, else ``arange``
    item_popularity_ : ndarray of int64 — training viewers per item (used by :meth:`fold_in`)
    history_ : list of dict — per epoch: ``epoch``, ``loss`` (mean per update), ``lr``,
        ``updates``, ``seconds``, and with validation ``rmse``, ``pr``, ``auc``.
    """

    def __init__(
        self,
        factors: int = 100,
        loss: str = "squared",
        epochs: int = 20,
        learning_rate: float | None = None,
        regularization: float = 0.01,
        bias_regularization: float | None = None,
        neg_ratio: float = 2.0,
        neg_weight: str | None = None,
        resample_negatives: bool | None = None,
        use_biases: bool = False,
        schedule: str | None = None,
        order: str = "grouped",
        optimizer: str | None = None,
        max_sampled: int = 10,
        margin: float = 1.0,
        max_norm: float | None = None,
        init_scale: float = 0.1,
        threads: int = 0,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.factors = factors
        self.loss = loss
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.bias_regularization = bias_regularization
        self.neg_ratio = neg_ratio
        self.neg_weight = neg_weight
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

    # ------------------------------------------------------------------ parameters
    def _checked_params(self) -> dict[str, Any]:
        """Validate the constructor parameters (at fit time, as scikit-learn does)."""
        if self.loss not in LOSSES:
            raise InputError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise InputError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if self.order not in ORDERS:
            raise InputError(f"order: expected one of {ORDERS}, got {self.order!r}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.neg_weight is not None and self.neg_weight not in WEIGHTINGS:
            raise InputError(f"neg_weight: expected one of {WEIGHTINGS}, got {self.neg_weight!r}")
        lr = self.learning_rate
        if lr is None:
            lr = self._plain_sgd_warp("learning_rate", DEFAULT_LEARNING_RATES[self.loss])
        else:
            lr = _positive_number(lr, "learning_rate")
        reg = _positive_number(self.regularization, "regularization", allow_zero=True)
        breg = (
            reg
            if self.bias_regularization is None
            else _positive_number(self.bias_regularization, "bias_regularization", allow_zero=True)
        )
        return {
            "factors": _integer(self.factors, "factors", 1),
            "epochs": _integer(self.epochs, "epochs", 0),
            "lr": lr,
            "reg": reg,
            "reg_bias": breg,
            "neg_ratio": _positive_number(self.neg_ratio, "neg_ratio"),
            "max_sampled": _integer(self.max_sampled, "max_sampled", 1),
            "margin": _positive_number(self.margin, "margin", allow_zero=True),
            "max_norm": self._max_norm(),
            "init_scale": _positive_number(self.init_scale, "init_scale"),
            "threads": _integer(self.threads, "threads", 0),
            "seed": _integer(self.seed, "seed", 0),
        }

    def _adagrad(self) -> bool:
        """Whether row-wise AdaGrad is in force (``optimizer`` or the loss's default)."""
        return (self.optimizer or ("adagrad" if self.loss == "warp" else "sgd")) == "adagrad"

    def _plain_sgd_warp(self, name: str, default: Any) -> Any:
        """``PLAIN_SGD_WARP[name]`` for WARP with ``optimizer="sgd"``, else ``default``."""
        return PLAIN_SGD_WARP[name] if self.loss == "warp" and not self._adagrad() else default

    def _accumulators(self, n_rows: int) -> np.ndarray:
        """AdaGrad's per-row ``G`` (starting at 1), or a dummy when it is off."""
        return np.ones(n_rows if self._adagrad() else 1, dtype=np.float32)

    def _weighting(self) -> str:
        """The negative weighting in force (``neg_weight`` or the loss's default)."""
        if self.neg_weight is None:
            return "uniform" if self.loss == "warp" else "log-popularity"
        return self.neg_weight

    def _max_norm(self) -> float:
        """The row-norm bound (``inf`` = unconstrained)."""
        if self.max_norm is None:
            return self._plain_sgd_warp("max_norm", math.inf)
        if (
            isinstance(self.max_norm, bool)
            or not isinstance(self.max_norm, numbers.Real)
            or not (self.max_norm > 0)
        ):
            raise InputError(f"max_norm: expected a number > 0 (or None), got {self.max_norm!r}")
        return float(self.max_norm)

    def _lr_at(self, lr: float, epoch: int, epochs: int) -> float:
        schedule = self.schedule or self._plain_sgd_warp("schedule", "constant")
        if schedule == "linear":
            return lr * max(1.0 - epoch / max(epochs, 1), 1.0 / max(epochs, 1))
        if schedule == "inverse-sqrt":
            return lr / math.sqrt(1.0 + epoch)
        return lr

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        user_items: sp.spmatrix | Interactions,
        validation: sp.spmatrix | Interactions | None = None,
        callback: Callback | None = None,
    ) -> Factorizer:
        """Learn the factors.

        Parameters
        ----------
        user_items : scipy.sparse matrix (n_users, n_items) or Interactions
            Training positives (any stored non-zero is a positive).
        validation : scipy.sparse matrix or Interactions, same shape, optional
            Held-out positives. After every epoch ``history_`` records ``rmse`` (targets 1 on
            these positives and 0 on ``neg_ratio`` × as many negatives sampled once like the
            training ones, training items excluded), ``pr`` (Fang's PR on the same pairs) and
            ``auc`` (per-user AUC against uniform unobserved items, training items excluded;
            at most :data:`VALIDATION_USERS` users).
        callback : callable, optional
            ``callback(epoch, model, metrics)`` after every epoch; returning ``False`` stops.

        Returns
        -------
        self

        Raises
        ------
        InputError
            A bad parameter or input (the message names it).
        DivergenceError
            The loss or a factor became NaN/inf or exploded.
        """
        p = self._checked_params()
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
        threads = p["threads"] or numba.config.NUMBA_NUM_THREADS
        threads = min(threads, numba.config.NUMBA_NUM_THREADS)
        k, seed = p["factors"], p["seed"]
        code = sgd.LOSS_CODES[self.loss]

        # Seeded initialisation (std init_scale / k**0.25 → initial scores have std init_scale).
        rng = np.random.default_rng(seed)
        std = np.float32(p["init_scale"] / k**0.25)
        X = rng.standard_normal((n_users, k), dtype=np.float32) * std
        Y = rng.standard_normal((n_items, k), dtype=np.float32) * std
        ub = np.zeros(n_users, dtype=np.float32)
        ib = np.zeros(n_items, dtype=np.float32)
        self.user_factors_, self.item_factors_ = X, Y
        self.user_bias_ = ub if self.use_biases else None
        self.item_bias_ = ib if self.use_biases else None
        self.user_ids_ = np.arange(n_users) if user_ids is None else user_ids
        self.item_ids_ = np.arange(n_items) if item_ids is None else item_ids
        self.item_popularity_ = np.diff(train.tocsc().indptr).astype(np.int64)
        self.history_ = []

        pos_indptr = train.indptr.astype(np.int64)
        pos_indices = train.indices.astype(np.int32)
        old_threads = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            if val is not None:
                val_neg = self._validation_negatives(train, val, p)

            def negatives(epoch: int):
                return self._negative_arrays(
                    train, p, threads=threads, epoch=epoch, warn_short=epoch == 0
                )

            neg_indptr, neg_indices = negatives(0)
            resample = self.resample_negatives
            if resample is None:
                resample = code not in (sgd.SQUARED, sgd.WARP)
            loss_out = np.zeros(N_BLOCKS, dtype=np.float64)
            count_out = np.zeros(N_BLOCKS, dtype=np.int64)
            f32 = np.float32
            consts = self._kernel_constants(p, n_items)
            run = sgd.epoch_kernel(
                code, bool(self.use_biases), True, True, self.order, self._adagrad()
            )
            user_acc, item_acc = self._accumulators(n_users), self._accumulators(n_items)
            bar = self._progress(p["epochs"])
            entries = None
            for epoch in range(p["epochs"]):
                t0 = time.perf_counter()
                if resample and epoch > 0:
                    neg_indptr, neg_indices = negatives(epoch)
                    entries = None
                lr = f32(self._lr_at(p["lr"], epoch, p["epochs"]))
                if self.order == "grouped":
                    # User order of this epoch (the blocks are slices of it).
                    users = np.random.default_rng([seed, epoch]).permutation(n_users)
                    work: tuple[Any, ...] = (users.astype(np.int32),)
                else:
                    if entries is None:
                        entries = _entry_arrays(
                            pos_indptr, pos_indices, neg_indptr, neg_indices, code in sgd.PAIRWISE
                        )
                    work = (len(entries[0]), *entries)
                run(
                    *work,
                    pos_indptr,
                    pos_indices,
                    neg_indptr,
                    neg_indices,
                    X,
                    Y,
                    ub,
                    ib,
                    user_acc,
                    item_acc,
                    lr,
                    *consts,
                    seed,
                    epoch,
                    loss_out,
                    count_out,
                )
                updates = int(count_out.sum())
                mean_loss = float(loss_out.sum() / max(updates, 1))
                # Before the projection, which would hide rows that blew up in the epoch.
                self._check_divergence(epoch, mean_loss, float(lr), p["reg"])
                _project_rows(X, p["max_norm"])
                _project_rows(Y, p["max_norm"])
                seconds = time.perf_counter() - t0
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "loss": mean_loss,
                    "lr": float(lr),
                    "updates": updates,
                    "seconds": seconds,
                }
                if val is not None:
                    record.update(self._validate(train, val, val_neg, seed))
                self.history_.append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        {
                            k_: round(v, 4)
                            for k_, v in record.items()
                            if k_ in ("loss", "auc", "rmse")
                        }
                    )
                if callback is not None and callback(epoch, self, record) is False:
                    break
            if bar is not None:
                bar.close()
        finally:
            numba.set_num_threads(old_threads)
        return self

    def _negative_arrays(
        self, rows: sp.csr_matrix, p: dict[str, Any], **sampling: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sampled negatives of ``rows`` as the kernels take them (int64 indptr, int32
        indices), drawn with the model's ratio, weighting and seed (``sampling``: the rest of
        :func:`cfcore.sampling.sample_negatives`'s options). WARP draws its candidates from the
        catalogue and gets none."""
        from cfcore.sampling import sample_negatives

        if self.loss == "warp":
            return np.zeros(rows.shape[0] + 1, np.int64), np.zeros(0, np.int32)
        ns = sample_negatives(rows, p["neg_ratio"], self._weighting(), seed=p["seed"], **sampling)
        return ns.indptr.astype(np.int64), ns.indices.astype(np.int32)

    def _kernel_constants(self, p: dict[str, Any], n_items: int) -> tuple:
        """The epoch kernels' arguments after ``lr``: float32 ``reg``, ``reg_bias``,
        ``margin`` and WARP's rank weights and candidate table."""
        f32 = np.float32
        tables = self._warp_tables(n_items, p["max_sampled"])
        return (f32(p["reg"]), f32(p["reg_bias"]), f32(p["margin"]), *tables)

    def _warp_tables(self, n_items: int, max_sampled: int):
        """``(weights, alias_prob, alias_idx)``: WARP's rank weights and its candidate table,
        an alias table over the sampler's item weights ``w(p_i)`` (a one-slot table — uniform
        over the catalogue — for ``uniform`` weights and for the other losses)."""
        from cfcore._kernels.sampling import build_alias
        from cfcore.sampling import item_weights

        weights = sgd.warp_weights(n_items, max_sampled)
        if self.loss != "warp" or self._weighting() == "uniform":
            return weights, np.ones(1, np.float64), np.zeros(1, np.int32)
        popularity = getattr(self, "item_popularity_", None)
        if popularity is None:
            popularity = np.ones(n_items, dtype=np.int64)
        w = item_weights(popularity, self._weighting())
        prob, alias = np.empty(n_items, np.float64), np.empty(n_items, np.int32)
        if build_alias(w, prob, alias) <= 0:
            raise InputError(f"neg_weight={self._weighting()!r}: every item has weight 0")
        return weights, prob, alias

    def _progress(self, total: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"factorize ({self.loss})", unit="epoch", leave=False)

    def _check_divergence(self, epoch: int, mean_loss: float, lr: float, reg: float) -> None:
        X, Y = self.user_factors_, self.item_factors_
        extremes = [float(X.max()), float(X.min()), float(Y.max()), float(Y.min())]
        if self.use_biases:
            extremes += [float(np.abs(self.item_bias_).max()), float(np.abs(self.user_bias_).max())]
        biggest = max(abs(v) for v in extremes)
        if not math.isfinite(mean_loss) or not math.isfinite(biggest) or biggest > MAX_ABS_FACTOR:
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1} (mean loss {mean_loss:.4g}, largest "
                f"|factor| {biggest:.4g}): lower learning_rate (now {lr:g}) or raise "
                f"regularization (now {reg:g})"
            )

    # ------------------------------------------------------------------ validation
    def _validation_negatives(
        self, train: sp.csr_matrix, val: sp.csr_matrix, p: dict[str, Any]
    ) -> sp.csr_matrix:
        """``neg_ratio`` negatives per held-out positive, drawn like the training negatives
        (same weighting, training popularity), never a training or held-out positive."""
        from cfcore.sampling import sample_negatives

        ns = sample_negatives(
            val,
            p["neg_ratio"],
            self._weighting(),
            seed=p["seed"],
            threads=0,
            popularity=self.item_popularity_,
            epoch=2**31 - 1,
            warn_short=False,
        )
        neg = ns.to_csr()
        neg = neg - neg.multiply(train)
        neg.eliminate_zeros()
        return neg.tocsr()

    def _validate(
        self, train: sp.csr_matrix, val: sp.csr_matrix, val_neg: sp.csr_matrix, seed: int
    ) -> dict[str, float]:
        from cfcore.metrics import pairwise_ranking, rmse

        pos, neg = val.tocoo(), val_neg.tocoo()
        users = np.concatenate([pos.row, neg.row])
        items = np.concatenate([pos.col, neg.col])
        truth = np.concatenate([np.ones(pos.nnz), np.zeros(neg.nnz)])
        out = {"rmse": rmse(truth, self.predict(users, items))}
        score = self.scorer()
        out["pr"] = pairwise_ranking(score, val, negatives=val_neg)["pr"]
        candidates = np.flatnonzero(np.diff(val.indptr) > 0)
        if len(candidates) > VALIDATION_USERS:
            candidates = np.sort(
                np.random.default_rng(seed).choice(candidates, VALIDATION_USERS, replace=False)
            )
        out["auc"] = pairwise_ranking(score, val, exclude=train, users=candidates)["auc"]
        return out

    # ------------------------------------------------------------------ new users
    def fold_in(self, user_items_rows: sp.spmatrix, epochs: int | None = None) -> np.ndarray:
        """Factors for new users from their interactions, item factors held fixed.

        Runs ``epochs`` (default: the model's ``epochs``) SGD epochs of the model's own loss
        over each new user's positives and freshly sampled negatives (same ``neg_ratio`` and
        weighting, training popularity), updating only the new user rows (and user biases) —
        the same kernel as :meth:`fit` with item learning switched off. Deterministic for a
        given ``seed``.

        Parameters
        ----------
        user_items_rows : scipy.sparse matrix, shape (n_new_users, n_items)

        Returns
        -------
        ndarray of float32, shape (n_new_users, factors)
        """

        self._check_fitted()
        p = self._checked_params()
        rows, _, _ = _as_matrix(user_items_rows, "user_items_rows")
        if rows.shape[1] != self.n_items:
            raise InputError(
                f"user_items_rows: has {rows.shape[1]} columns, the model has {self.n_items} items"
            )
        epochs = p["epochs"] if epochs is None else _integer(epochs, "epochs", 0)
        n_new, k = rows.shape[0], self.item_factors_.shape[1]
        rng = np.random.default_rng([p["seed"], 1])
        X = rng.standard_normal((n_new, k), dtype=np.float32) * np.float32(
            p["init_scale"] / k**0.25
        )
        if rows.nnz == 0 or n_new == 0:
            return X
        popularity = getattr(self, "item_popularity_", None)
        if popularity is None or self._weighting() == "uniform":
            popularity = np.ones(self.n_items, dtype=np.int64)
        code = sgd.LOSS_CODES[self.loss]
        neg_indptr, neg_indices = self._negative_arrays(
            rows, p, threads=1, popularity=popularity, warn_short=False
        )
        Y = self.item_factors_
        ub = np.zeros(n_new, dtype=np.float32)
        ib = self.item_bias_ if self.item_bias_ is not None else np.zeros(self.n_items, np.float32)
        loss_out = np.zeros(min(N_BLOCKS, n_new), dtype=np.float64)
        count_out = np.zeros_like(loss_out, dtype=np.int64)
        f32 = np.float32
        # Parallel build (see the module docstring); each new user's row is written by its own
        # block only and item rows are read-only, so the result does not depend on the threads.
        run = sgd.epoch_kernel(code, bool(self.use_biases), False, True, "grouped", self._adagrad())
        user_acc, item_acc = self._accumulators(n_new), self._accumulators(1)
        consts = self._kernel_constants(p, self.n_items)
        pos_indptr, pos_indices = rows.indptr.astype(np.int64), rows.indices.astype(np.int32)
        for epoch in range(epochs):
            users = np.random.default_rng([p["seed"], epoch, 1]).permutation(n_new).astype(np.int32)
            run(
                users,
                pos_indptr,
                pos_indices,
                neg_indptr,
                neg_indices,
                X,
                Y,
                ub,
                ib,
                user_acc,
                item_acc,
                f32(self._lr_at(p["lr"], epoch, epochs)),
                *consts,
                p["seed"],
                epoch,
                loss_out,
                count_out,
            )
            _project_rows(X, p["max_norm"])
        if not np.all(np.isfinite(X)):
            raise DivergenceError(
                f"fold_in diverged: lower learning_rate (now {p['lr']:g}) or raise regularization"
            )
        return X

    # ------------------------------------------------------------------ persistence
    def _artifact_arrays(self) -> dict[str, np.ndarray]:
        arrays = super()._artifact_arrays()
        if getattr(self, "item_popularity_", None) is not None:
            arrays["item_popularity"] = self.item_popularity_
        return arrays

    def _load_extra(self, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        self.item_popularity_ = arrays.get("item_popularity")


def _project_rows(table: np.ndarray, max_norm: float) -> None:
    """Scale the rows of ``table`` longer than ``max_norm`` back to that norm (in place)."""
    if not math.isfinite(max_norm):
        return
    norms = np.sqrt(np.einsum("ij,ij->i", table, table))
    long = np.flatnonzero(norms > max_norm)
    if len(long):
        table[long] *= (max_norm / norms[long]).astype(np.float32)[:, None]


def _entry_arrays(pos_indptr, pos_indices, neg_indptr, neg_indices, pairwise: bool):
    """Flat (user, item, target) arrays for the random-order drivers."""
    n_users = len(pos_indptr) - 1
    users = np.arange(n_users, dtype=np.int32)
    pu = np.repeat(users, np.diff(pos_indptr))
    if pairwise:
        return pu, pos_indices, np.ones(len(pu), dtype=np.float32)
    nu = np.repeat(users, np.diff(neg_indptr))
    return (
        np.concatenate([pu, nu]).astype(np.int32),
        np.concatenate([pos_indices, neg_indices]).astype(np.int32),
        np.concatenate([np.ones(len(pu), np.float32), np.zeros(len(nu), np.float32)]),
    )
