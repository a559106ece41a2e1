"""User-conditional tag prediction (Denton et al. 2015, *User Conditional Hashtag Prediction
for Images*).

Given an item's descriptor ``x`` (image features from ``cfvision extract``, or any item
vectors such as a factor model's item factors; L2-normalised as the paper does) and a user
``u``, :class:`TagModel` ranks the tags this user would put on this item by
``f(x, u, y) = Φ(x, u) · V_y``:

- ``"frequency"`` — the baseline: every tag ranked by its training frequency;
- ``"bilinear"`` (§3.1) — ``Φ = Pᵀx``, no user information;
- ``"user-biased"`` (§3.2) — ``Φ = Pᵀx + Qᵀu``;
- ``"3-way"`` (§3.3) — ``Φ = β diag(αᵀh(u)) γᵀx``, the user gating the image embedding,
  with ``h`` a 24-unit ReLU layer learned jointly.

The user ``u`` is a vector of encoded attributes (:mod:`cfcore.attributes`: age, gender,
occupation, location...) or, without an attribute file, a *learned embedding per user id* (a
one-hot ``u``, so ``Qᵀu`` is the user's own row of ``Q`` and ``h(u)`` its own 24 units) —
which needs the test users to appear in training (``TagData.split("items")``).

Training is WARP (Weston et al. 2011) by Hogwild SGD with momentum in Numba kernels
(:mod:`cfcore._kernels.tags`, where the maths is): per positive (example, tag), tags are drawn
until one violates the margin 0.1 (up to ``max_sampled`` = 1000), and the rank-weighted hinge
takes one step; ``‖V_y‖ ≤ 1`` and the rows of ``P`` and ``Q`` are held to norm ≤ 1 after
every step. The learning rate is divided by 10 when the validation score (the mean of P@1,
R@10 and A@10) stops improving (§3.4), and the best epoch's parameters are kept.

>>> from cfcore.readers import read_tags
>>> from cfcore.tags import TagModel, evaluate_tags
>>> data = read_tags("tags.csv").top_tags(10_000)
>>> train, test = data.split("items", 0.2, seed=0)
>>> model = TagModel("user-biased").fit(train, "item_vectors.npz")
>>> tags, scores = model.predict([60756], [2], item_vectors="item_vectors.npz", k=5)
>>> evaluate_tags(model, test, "item_vectors.npz")     # P@1, R@10, A@10
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore._kernels import tags as kt
from cfcore.attributes import AttributeEncoder, UserAttributes, read_user_attributes
from cfcore.errors import DivergenceError, InputError, ModelFormatError
from cfcore.estimator import Estimator, check_integer, check_number
from cfcore.ids import id_positions
from cfcore.io import json_safe, load_artifact, require_keys, save_artifact
from cfcore.metrics import Scorer, top_k_metrics, top_k_per_label, top_n
from cfcore.tagdata import TagData
from cfcore.threads import numba_threads, resolve_threads
from cfcore.vectors import ItemVectors, as_item_vectors, l2_normalize

MODELS = ("frequency", "bilinear", "user-biased", "3-way")
ARTIFACT_KIND = "tag-model"

#: Work blocks per epoch; fixed, so the partition never depends on the thread count.
N_BLOCKS = 256

#: A parameter beyond this magnitude means the fit is diverging.
MAX_ABS_PARAMETER = 1e4

#: The schedule's defaults (``None`` parameters): Denton et al.'s learning rate 0.01, and cuts
#: after 2 epochs without a better validation score, at most 30 epochs ...
DEFAULTS = {"learning_rate": 0.01, "patience": 2, "epochs": 30}
#: ... except for the 3-way model (see :class:`TagModel`): 0.001 (at 0.01 its ReLU layer dies),
#: and more time, since it spends its first epochs near the bilinear model's score before the
#: user gating takes hold (synthetic data, learned user embeddings: P@1 0.35 with the
#: defaults above, 0.84 with these — as the user-biased model).
THREE_WAY_DEFAULTS = {"learning_rate": 0.001, "patience": 4, "epochs": 60}

#: The paper's three measures; their mean on the validation set drives the schedule.
MEASURES = ("P@1", "R@10", "A@10")

Callback = Callable[[int, "TagModel", dict[str, Any]], Any]
ItemsLike = ItemVectors | str | os.PathLike[str]
UsersLike = UserAttributes | str | os.PathLike[str] | None


class TagModel(Estimator):
    """Rank the tags a user would put on an item (Denton et al. 2015).

    Parameters
    ----------
    model : {"frequency", "bilinear", "user-biased", "3-way"}, default "3-way"
        See the module docstring.
    dim : int, default 64
        Embedding dimension d (the paper's best: 64).
    rank : int, default 100
        3-way: rank K of the factored tensor (the paper's best: 100).
    hidden : int, default 24
        3-way: units of the ReLU layer ``h(u)`` (paper: 24).
    epochs : int, optional
        Maximum passes over the training tag applications (default: 30; 60 for the 3-way
        model, :data:`THREE_WAY_DEFAULTS`).
    learning_rate : float, optional
        Initial SGD step η, divided by 10 on a validation plateau. Default (``None``): the
        paper's 0.01, except 0.001 for the 3-way model — at 0.01 its ReLU layer dies within
        the first epoch (every unit negative for every user, after which nothing learns; the
        fit stops with a :class:`~cfcore.errors.DivergenceError` saying so), while 0.001
        learns.
    momentum : float, default 0.9
        Momentum μ (paper: 0.9).
    margin : float, default 0.1
        WARP margin m (paper: 0.1, after Weston et al. 2014).
    max_sampled : int, default 1000
        Tags drawn per positive before giving up (paper: "up to 1000").
    max_norm : float, default 1.0
        Bound on the norms of the rows of V, P and Q (paper: 1).
    init_std : float, optional
        Weights start as ``N(0, init_std²)``, biases at 0. Default (``None``): 0.001 (the
        paper) for the bilinear and user-biased models, and for the 3-way model the scale at
        which its four-factor product starts with unit-size signals (see :meth:`_init_stds`),
        since from 0.001 its gradients are ~1e-12 and it never leaves the start.
    validation_fraction : float, default 0.1
        Without an explicit ``validation`` set, this fraction of each user's training
        examples is held out to drive the schedule (0: no validation, constant η, every
        epoch runs).
    patience : int, optional
        Epochs without a better validation score — the mean of P@1, R@10 and A@10 — before
        η is divided by 10 (default: 2; 4 for the 3-way model, :data:`THREE_WAY_DEFAULTS`).
    lr_decays : int, default 2
        Divisions of η after which the next plateau ends training.
    threads : int, default 0
        Worker threads (0 = all cores; more than the cores are clamped with a warning,
        :mod:`cfcore.threads`). One thread reproduces a fit bit for bit.
    seed : int, default 0
        Seeds the initialisation, the validation split, the visiting order and the draws.
    progress : bool, default True
        Show a tqdm bar.

    Attributes
    ----------
    tag_names_ : ndarray of str
        The vocabulary, in column order.
    tag_counts_ : ndarray of int64
        Training examples carrying each tag (the frequency baseline's scores).
    tables_ : cfcore._kernels.tags.Tables
        The learned parameters (None for ``"frequency"``).
    user_ids_ : ndarray or None
        Users with a learned embedding (None when trained on user attributes).
    user_encoder_ : AttributeEncoder or None
        How user attributes are encoded (None with learned embeddings).
    n_features_ : int
        Item descriptor dimension.
    history_ : list of dict
        Per epoch: ``epoch``, ``loss`` (mean weighted hinge per positive), ``steps`` (updates
        taken), ``draws`` (mean tags drawn per positive), ``lr``, ``seconds``,
        ``examples_per_s`` (positives per second), and with validation its ``P@1``, ``R@10``
        and ``A@10`` (their mean drives the schedule).
    best_epoch_ : int
        The epoch whose parameters were kept.
    examples_per_s_ : float
        Training positives per second over the whole fit (validation excluded).
    """

    def __init__(
        self,
        model: str = "3-way",
        dim: int = 64,
        rank: int = 100,
        hidden: int = 24,
        epochs: int | None = None,
        learning_rate: float | None = None,
        momentum: float = 0.9,
        margin: float = 0.1,
        max_sampled: int = 1000,
        max_norm: float = 1.0,
        init_std: float | None = None,
        validation_fraction: float = 0.1,
        patience: int | None = None,
        lr_decays: int = 2,
        threads: int = 0,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.dim = dim
        self.rank = rank
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.margin = margin
        self.max_sampled = max_sampled
        self.max_norm = max_norm
        self.init_std = init_std
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.lr_decays = lr_decays
        self.threads = threads
        self.seed = seed
        self.progress = progress

    # ------------------------------------------------------------------ parameters
    def _checked_params(self) -> dict[str, Any]:
        if self.model not in MODELS:
            raise InputError(f"model: expected one of {MODELS}, got {self.model!r}")
        vf = check_number(self.validation_fraction, "validation_fraction", allow_zero=True)
        if vf >= 1:
            raise InputError(f"validation_fraction: must be < 1, got {vf}")
        return {
            "dim": check_integer(self.dim, "dim", 1),
            "rank": check_integer(self.rank, "rank", 1),
            "hidden": check_integer(self.hidden, "hidden", 1),
            "epochs": check_integer(self._default("epochs"), "epochs", 0),
            "lr": check_number(self._default("learning_rate"), "learning_rate"),
            "momentum": check_number(self.momentum, "momentum", allow_zero=True),
            "margin": check_number(self.margin, "margin", allow_zero=True),
            "max_sampled": check_integer(self.max_sampled, "max_sampled", 1),
            "max_norm": check_number(self.max_norm, "max_norm"),
            "init_std": None if self.init_std is None else check_number(self.init_std, "init_std"),
            "validation_fraction": vf,
            "patience": check_integer(self._default("patience"), "patience", 1),
            "lr_decays": check_integer(self.lr_decays, "lr_decays", 0),
            "threads": resolve_threads(self.threads),
            "seed": check_integer(self.seed, "seed", 0),
        }

    def _default(self, name: str) -> Any:
        """The parameter ``name``, or its default for this model when it is None."""
        value = getattr(self, name)
        if value is not None:
            return value
        return (THREE_WAY_DEFAULTS if self.model == "3-way" else DEFAULTS)[name]

    def _init_stds(self, p: dict[str, Any], user_norm2: float) -> dict[str, float]:
        """Initial standard deviation of each table.

        ``init_std`` when given; else the paper's 0.001 for V, P and Q, and for the 3-way
        model each factor's ``1/√(expected squared norm of its input)`` — α: the H hidden
        units; γ: 1 since ``‖x‖ = 1``; β: the rank K; V: d — so that ``αᵀh``, ``γᵀx``, ``Φ``
        and the scores start with unit-order spread, except the user layer W at a tenth of
        that (``0.1/√mean‖u‖²``; ``‖u‖ = 1`` for a learned embedding): users then start near
        the shared ``h = ReLU(b)`` and move apart as they learn (synthetic data with learned
        embeddings: P@1 0.48 against 0.25 at the full scale; with attributes 0.88 either way).
        """
        s = p["init_std"]
        if s is not None:
            return dict.fromkeys(("V", "P", "Q", "W", "alpha", "beta", "gamma"), s)
        d, K, H = p["dim"], p["rank"], p["hidden"]
        return {
            "V": 0.001 if self.model != "3-way" else 1 / math.sqrt(d),
            "P": 0.001,
            "Q": 0.001,
            "W": 0.1 / math.sqrt(max(user_norm2, 1e-6)),
            "alpha": 1 / math.sqrt(H),
            "beta": 1 / math.sqrt(K),
            "gamma": 1.0,
        }

    # ------------------------------------------------------------------ fitted state
    @property
    def is_fitted(self) -> bool:
        return getattr(self, "tag_names_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    @property
    def n_tags(self) -> int:
        self._check_fitted()
        return len(self.tag_names_)

    # ------------------------------------------------------------------ inputs
    def _user_side(
        self, users: np.ndarray, user_attributes: UsersLike, fitting: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(example_user rows, user CSR indptr, indices, values)`` for raw user ids."""
        if self.model == "bilinear":  # no user information
            z = np.zeros(len(users), np.int32)
            return z, np.zeros(2, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        if fitting:
            if user_attributes is None:
                self.user_encoder_ = None
                self.user_ids_ = np.unique(users)
            else:
                ua = _as_user_attributes(user_attributes, None)
                self.user_encoder_ = ua.encoder
                self.user_ids_ = None
                user_attributes = ua
        if self.user_encoder_ is None:
            if user_attributes is not None and not fitting:
                raise InputError(
                    "this model learned one embedding per user id; it takes no user attributes"
                )
            rows = id_positions(self.user_ids_, users)
            if (rows < 0).any():
                raise InputError(
                    f"user {users[rows < 0][0].item()!r} has no learned embedding ({int((rows < 0).sum())} "
                    "example(s) of users absent from training); a model for new users needs "
                    "user attributes (split='items' keeps every test user in training)"
                )
            n = len(self.user_ids_)
            eye = sp.identity(n, dtype=np.float32, format="csr")
            return rows.astype(np.int32), *_csr_arrays(eye)
        if user_attributes is None:
            raise InputError(
                "this model was trained on user attributes: pass user_attributes (the user "
                f"file; it needs the columns {self.user_encoder_.to_json()['columns']})"
            )
        ua = _as_user_attributes(user_attributes, self.user_encoder_)
        if ua.encoder.feature_names != self.user_encoder_.feature_names:
            raise InputError(
                "user_attributes: encoded differently from training (read them with "
                "read_user_attributes(path, encoder=model.user_encoder_))"
            )
        rows = id_positions(ua.ids, users)
        if (rows < 0).any():
            raise InputError(
                f"user {users[rows < 0][0].item()!r} is not in the user attribute file "
                f"({int((rows < 0).sum())} example(s) of users without attributes)"
            )
        used, inverse = np.unique(rows, return_inverse=True)
        return inverse.astype(np.int32), *_csr_arrays(sp.csr_matrix(ua.values[used]))

    def _item_side(
        self, items: np.ndarray, item_vectors: ItemsLike
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(example_item rows, L2-normalised descriptors of the items used)``."""
        if item_vectors is None:
            raise InputError(f"item_vectors: the {self.model} model needs item descriptors")
        iv = as_item_vectors(item_vectors)
        if getattr(self, "n_features_", None) is not None and iv.dim != self.n_features_:
            raise InputError(
                f"item_vectors: {iv.dim}-d descriptors, the model was trained on "
                f"{self.n_features_}-d ones ({self.item_source_})"
            )
        rows = id_positions(iv.ids, items)
        if (rows < 0).any():
            missing = np.unique(items[rows < 0])
            raise InputError(
                f"{len(missing)} item(s) have no descriptor in "
                f"{iv.meta.get('source', 'item_vectors')} (first: item {missing[0].item()!r}; "
                f"{int((rows < 0).sum())} example(s)); drop them first (TagData.only(items=...))"
            )
        used, inverse = np.unique(rows, return_inverse=True)
        X = l2_normalize(iv.vectors[used], iv.ids[used], "item_vectors")
        return inverse.astype(np.int32), X

    def _examples(
        self,
        users: np.ndarray,
        items: np.ndarray,
        tags: sp.csr_matrix | None,
        item_vectors: ItemsLike,
        user_attributes: UsersLike,
        fitting: bool = False,
    ) -> kt.Examples:
        """The kernels' view of (user, item) pairs and their tags."""
        example_item, X = self._item_side(np.asarray(items), item_vectors)
        example_user, indptr, indices, values = self._user_side(
            np.asarray(users), user_attributes, fitting
        )
        if tags is None:
            tags = sp.csr_matrix((len(example_item), 1), dtype=np.float32)
        t_indptr, t_indices, _ = _csr_arrays(tags)
        return kt.Examples(
            X,
            indptr,
            indices,
            values,
            example_item,
            example_user,
            t_indptr,
            t_indices,
            np.repeat(np.arange(tags.shape[0], dtype=np.int32), np.diff(t_indptr)),
            t_indices,
        )

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        data: TagData,
        item_vectors: ItemsLike | None = None,
        user_attributes: UsersLike = None,
        validation: TagData | None = None,
        callback: Callback | None = None,
    ) -> TagModel:
        """Learn the model from tagged examples.

        Parameters
        ----------
        data : TagData
            Training examples; its tags are the vocabulary (see :meth:`TagData.top_tags`).
        item_vectors : ItemVectors or path
            One descriptor per item (``cfvision extract`` output, or a factor model's item
            factors); every example's item needs one. Not needed for ``"frequency"``.
        user_attributes : UserAttributes or path, optional
            Encoded user attributes (:func:`cfcore.attributes.read_user_attributes`);
            without them, the user-conditioned models learn one embedding per user id.
        validation : TagData, optional
            Held-out examples that drive the learning-rate schedule (default: a
            ``validation_fraction`` of each user's training examples, held out).
        callback : callable, optional
            ``callback(epoch, model, record)`` after every epoch; returning ``False`` stops.

        Returns
        -------
        self

        Raises
        ------
        InputError
            A bad parameter, an empty vocabulary, an item without a descriptor, a user
            without attributes.
        DivergenceError
            The loss or a parameter became NaN/inf or exploded.
        """
        p = self._checked_params()
        if not isinstance(data, TagData):
            raise InputError(f"data: expected a TagData, got {type(data).__name__}")
        if data.n_tags == 0 or data.n_applications == 0:
            raise InputError("data: empty vocabulary (no tag applications to learn from)")
        self.tag_names_ = data.tag_names.copy()
        self.history_: list[dict[str, Any]] = []
        self.tables_: kt.Tables | None = None
        self.user_ids_ = None
        self.user_encoder_ = None
        self.n_features_ = None
        self.item_source_ = None
        self.best_epoch_ = 0
        self.examples_per_s_ = float("nan")
        if self.model == "frequency":
            self.tag_counts_ = data.tag_counts()
            return self
        if validation is None and p["validation_fraction"] > 0:
            try:
                data, validation = data.split("items", p["validation_fraction"], p["seed"])
            except InputError:
                validation = None  # no user has two examples: train without a schedule
        elif validation is not None:
            validation = validation.with_vocabulary(self.tag_names_)
        self.tag_counts_ = data.tag_counts()
        iv = as_item_vectors(item_vectors) if item_vectors is not None else None
        ex = self._examples(data.users, data.items, data.tags, iv, user_attributes, fitting=True)
        self.n_features_ = int(ex.X.shape[1])
        self.item_source_ = str(iv.meta.get("source", "in memory")) if iv is not None else None
        val_ex = None
        if validation is not None:
            val_ex = self._examples(
                validation.users, validation.items, validation.tags, iv, user_attributes
            )
        n_user_features = len(ex.user_indptr) - 1 if self.user_ids_ is not None else 0
        if self.user_encoder_ is not None:
            n_user_features = self.user_encoder_.n_features
        user_norm2 = float(np.square(ex.user_values).sum() / max(len(ex.user_indptr) - 1, 1))
        self.tables_ = self._init_tables(p, n_user_features, user_norm2)
        self._train(p, ex, val_ex, validation, callback)
        return self

    def _init_tables(self, p: dict[str, Any], n_user_features: int, user_norm2: float) -> kt.Tables:
        rng = np.random.default_rng(p["seed"])
        d, K, H = p["dim"], p["rank"], p["hidden"]
        n, m = self.n_features_, n_user_features
        three = self.model == "3-way"
        std = self._init_stds(p, user_norm2)

        def normal(shape: tuple[int, int], name: str) -> np.ndarray:
            return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std[name])).copy()

        return kt.Tables(
            V=normal((len(self.tag_names_), d), "V"),
            P=normal((0 if three else n, d), "P"),
            Q=normal((m if self.model == "user-biased" else 0, d), "Q"),
            W=normal((m if three else 0, H), "W"),
            b=np.zeros((1, H), np.float32),
            alpha=normal((H if three else 0, K), "alpha"),
            beta=normal((d if three else 0, K), "beta"),
            gamma=normal((n if three else 0, K), "gamma"),
        )

    def _train(
        self,
        p: dict[str, Any],
        ex: kt.Examples,
        val_ex: kt.Examples | None,
        validation: TagData | None,
        callback: Callback | None,
    ) -> None:
        t = self.tables_
        assert t is not None
        momentum = kt.Tables(*(np.zeros_like(a) for a in t))
        code = kt.MODEL_CODES[self.model]
        n_pos = len(ex.positive_tag)
        # Beyond Y − 1 draws the rank estimate ⌊(Y − 1)/n⌋ is 0 and no step can follow.
        max_sampled = max(1, min(p["max_sampled"], len(self.tag_names_) - 1))
        weights = kt.warp_weights(len(self.tag_names_), max_sampled)
        n_blocks = max(1, min(N_BLOCKS, n_pos))
        loss_out = np.zeros(n_blocks, np.float64)
        count_out = np.zeros(n_blocks, np.int64)
        trials_out = np.zeros(n_blocks, np.int64)
        f32 = np.float32
        lr = p["lr"]
        best, best_tables, since_best, decays = -math.inf, None, 0, 0
        bar = self._progress(p["epochs"])
        train_seconds = 0.0
        with numba_threads(p["threads"]):
            # Load (or compile) the kernel outside the timed epochs.
            steps = kt.Steps(
                code, f32(lr), f32(p["momentum"]), f32(p["margin"]), f32(p["max_norm"]), weights
            )
            kt.warp_epoch(
                np.zeros(0, np.int64), ex, t, momentum, steps, 0, 0, loss_out, count_out, trials_out
            )
            for epoch in range(p["epochs"]):
                steps = steps._replace(lr=f32(lr))
                order = np.random.default_rng([p["seed"], epoch]).permutation(n_pos)
                t0 = time.perf_counter()
                kt.warp_epoch(
                    order, ex, t, momentum, steps, p["seed"], epoch, loss_out, count_out, trials_out
                )
                seconds = time.perf_counter() - t0
                train_seconds += seconds
                mean_loss = float(loss_out.sum() / max(n_pos, 1))
                self._check_divergence(epoch, mean_loss, lr)
                self._check_alive(epoch, ex, lr)
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "loss": mean_loss,
                    "steps": int(count_out.sum()),
                    "draws": float(trials_out.sum() / max(n_pos, 1)),
                    "lr": lr,
                    "seconds": seconds,
                    "examples_per_s": n_pos / seconds if seconds > 0 else float("nan"),
                }
                stop = False
                if val_ex is not None and validation is not None:
                    record.update(tag_measures(self._scorer(val_ex), validation.tags))
                    score = float(np.mean([record[m] for m in MEASURES]))
                    if score > best:
                        best, since_best = score, 0
                        best_tables = kt.Tables(*(a.copy() for a in t))
                        self.best_epoch_ = epoch + 1
                    else:
                        since_best += 1
                        if since_best >= p["patience"]:
                            if decays >= p["lr_decays"]:
                                stop = True
                            else:
                                lr, decays, since_best = lr / 10, decays + 1, 0
                else:
                    self.best_epoch_ = epoch + 1
                self.history_.append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        {
                            k_: round(v, 4)
                            for k_, v in record.items()
                            if k_ in ("loss", "P@1", "R@10")
                        }
                    )
                if callback is not None and callback(epoch, self, record) is False:
                    stop = True
                if stop:
                    break
        if bar is not None:
            bar.close()
        if best_tables is not None:
            for dst, src in zip(t, best_tables, strict=True):
                dst[...] = src
        self.examples_per_s_ = (
            n_pos * len(self.history_) / train_seconds if train_seconds > 0 else float("nan")
        )

    def _progress(self, total: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"tags ({self.model})", unit="epoch", leave=False)

    def _check_divergence(self, epoch: int, mean_loss: float, lr: float) -> None:
        assert self.tables_ is not None
        biggest = max((float(np.abs(a).max()) for a in self.tables_ if a.size), default=0.0)
        if (
            not math.isfinite(mean_loss)
            or not math.isfinite(biggest)
            or biggest > MAX_ABS_PARAMETER
        ):
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1} (mean loss {mean_loss:.4g}, largest "
                f"|parameter| {biggest:.4g}): lower learning_rate (now {lr:g}) or momentum"
            )

    def _check_alive(self, epoch: int, ex: kt.Examples, lr: float) -> None:
        """The 3-way model learns nothing once every unit of ``h(u)`` is 0 for every user."""
        t = self.tables_
        if self.model != "3-way" or t is None:
            return
        n_users = len(ex.user_indptr) - 1
        U = sp.csr_matrix((ex.user_values, ex.user_indices, ex.user_indptr), (n_users, len(t.W)))
        if not ((U @ t.W + t.b) > 0).any():
            raise DivergenceError(
                f"the 3-way model's ReLU layer died in epoch {epoch + 1} (every unit is 0 for "
                f"every user, so no gradient reaches it again): lower learning_rate (now {lr:g})"
            )

    # ------------------------------------------------------------------ scoring
    def _scorer(self, ex: kt.Examples) -> Scorer:
        """Scores of the examples of ``ex`` by row (a :mod:`cfcore.metrics` scorer)."""
        if self.model == "frequency":
            counts = self.tag_counts_.astype(np.float32)
            return lambda rows: np.repeat(counts[None, :], len(rows), axis=0)
        t = self.tables_
        assert t is not None
        code = kt.MODEL_CODES[self.model]

        def score(rows: np.ndarray) -> np.ndarray:
            out = np.empty((len(rows), t.V.shape[0]), np.float32)
            kt.score_all(code, ex, t, np.asarray(rows, np.int64), out)
            return out

        return score

    def scorer(
        self,
        data: TagData,
        item_vectors: ItemsLike | None = None,
        user_attributes: UsersLike = None,
    ) -> Scorer:
        """A scorer over the example rows of ``data`` (for :mod:`cfcore.metrics`)."""
        self._check_fitted()
        if self.model == "frequency":
            return self._scorer(None)  # type: ignore[arg-type]
        return self._scorer(
            self._examples(data.users, data.items, None, item_vectors, user_attributes)
        )

    def score(
        self,
        items: Any,
        users: Any = None,
        *,
        item_vectors: ItemsLike | None = None,
        user_attributes: UsersLike = None,
    ) -> np.ndarray:
        """Scores ``f(x, u, y)`` of every tag for (item, user) pairs.

        Parameters
        ----------
        items, users : array-like of raw ids
            One item and one user per pair (``users`` may be None for ``"bilinear"`` and
            ``"frequency"``).
        item_vectors : ItemVectors or path
            Descriptors of the items (the kind the model was trained on).
        user_attributes : UserAttributes or path, optional
            For a model trained on user attributes: the users' attribute file (encoded with
            the model's encoder).

        Returns
        -------
        ndarray of float32, shape (n_pairs, n_tags)
        """
        self._check_fitted()
        items = np.atleast_1d(np.asarray(items))
        if users is None:
            if self.model in ("user-biased", "3-way"):
                raise InputError(f"users: the {self.model} model needs a user per item")
            users = np.zeros(len(items), np.int64)
        users = np.atleast_1d(np.asarray(users))
        if users.shape != items.shape:
            raise InputError(f"items and users: {len(items)} items but {len(users)} users")
        rows = np.arange(len(items))
        if self.model == "frequency":
            return self._scorer(None)(rows)  # type: ignore[arg-type]
        ex = self._examples(users, items, None, item_vectors, user_attributes)
        return self._scorer(ex)(rows)

    def predict(
        self,
        items: Any,
        users: Any = None,
        *,
        item_vectors: ItemsLike | None = None,
        user_attributes: UsersLike = None,
        k: int = 10,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best tags for each (item, user) pair, raw ids in and tags out.

        Returns
        -------
        tags : ndarray of str, shape (n_pairs, k)
        scores : ndarray of float32, shape (n_pairs, k)
            Best first (ties by vocabulary order).
        """
        scores = self.score(
            items, users, item_vectors=item_vectors, user_attributes=user_attributes
        )
        if not 1 <= k <= scores.shape[1]:
            raise InputError(f"k must lie in [1, {scores.shape[1]}] (the vocabulary size), got {k}")
        top, values = top_n(scores, k)
        return self.tag_names_[top], values

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a ``"tag-model"`` artifact (``.npz`` + JSON header, atomically, no pickle)."""
        self._check_fitted()
        arrays: dict[str, np.ndarray] = {
            "tag_names": self.tag_names_,
            "tag_counts": self.tag_counts_,
        }
        if self.tables_ is not None:
            arrays.update({f"table_{k}": v for k, v in self.tables_._asdict().items()})
        if self.user_ids_ is not None:
            arrays["user_ids"] = self.user_ids_
        meta = {
            "params": self.get_params(),
            "n_features": self.n_features_,
            "item_source": self.item_source_,
            "user_encoder": None if self.user_encoder_ is None else self.user_encoder_.to_json(),
            "best_epoch": self.best_epoch_,
            "examples_per_s": self.examples_per_s_,
            "history": self.history_,
        }
        return save_artifact(path, ARTIFACT_KIND, arrays, json_safe(meta))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TagModel:
        """Read a model written by :meth:`save`."""
        arrays, header = load_artifact(path, ARTIFACT_KIND)
        require_keys(path, arrays, ["tag_names", "tag_counts"])
        model = cls(**header["params"])
        if model.model not in MODELS:
            raise ModelFormatError(f"{path}: unknown model {model.model!r}")
        model.tag_names_ = arrays["tag_names"].astype(str)
        model.tag_counts_ = arrays["tag_counts"].astype(np.int64)
        model.tables_ = None
        if model.model != "frequency":
            names = [f"table_{k}" for k in kt.Tables._fields]
            require_keys(path, arrays, names)
            model.tables_ = kt.Tables(
                *(np.ascontiguousarray(arrays[n], dtype=np.float32) for n in names)
            )
            if any(not np.all(np.isfinite(a)) for a in model.tables_):
                raise ModelFormatError(f"{path}: parameters contain NaN or inf")
        model.user_ids_ = arrays.get("user_ids")
        enc = header.get("user_encoder")
        model.user_encoder_ = None if enc is None else AttributeEncoder.from_json(enc)
        model.n_features_ = header.get("n_features")
        model.item_source_ = header.get("item_source")
        model.best_epoch_ = int(header.get("best_epoch") or 0)
        model.examples_per_s_ = header.get("examples_per_s") or float("nan")
        model.history_ = list(header.get("history", []))
        return model


# ---------------------------------------------------------------------------- evaluation
def evaluate_tags(
    model: TagModel,
    data: TagData,
    item_vectors: ItemsLike | None = None,
    user_attributes: UsersLike = None,
) -> dict[str, float]:
    """Denton et al.'s measures on held-out examples (§4.2), averaged over examples.

    ``P@1`` — the top tag is one of the example's tags; ``R@10`` — the fraction of the
    example's tags in the top 10; ``A@10`` — at least one of them in the top 10
    (:func:`cfcore.metrics.top_k_metrics`'s precision, recall and accuracy). Test tags outside
    the model's vocabulary are dropped first (and examples left without one).

    Returns
    -------
    dict
        ``P@1``, ``R@10``, ``A@10`` and ``examples`` (how many were evaluated).
    """
    data = data.with_vocabulary(model.tag_names_)
    return tag_measures(model.scorer(data, item_vectors, user_attributes), data.tags)


def tag_measures(score: Scorer, tags: sp.csr_matrix) -> dict[str, float]:
    """P@1, R@10, A@10 (k capped at the vocabulary size) and the number of examples, for any
    scorer of the rows of the examples × tags matrix ``tags`` (also a peer's)."""
    k = min(10, tags.shape[1])
    top1 = top_k_metrics(score, tags, k=1)
    top10 = top_k_metrics(score, tags, k=k)
    return {
        "P@1": top1["precision@1"],
        "R@10": top10[f"recall@{k}"],
        "A@10": top10[f"accuracy@{k}"],
        "examples": int(top1["users"]),
    }


def per_tag_metrics(
    model: TagModel,
    data: TagData,
    item_vectors: ItemsLike | None = None,
    user_attributes: UsersLike = None,
    k: int = 10,
) -> dict[str, np.ndarray]:
    """Per-tag precision and recall at ``k`` on held-out examples (§4.2, Figs. 5–6):
    :func:`cfcore.metrics.top_k_per_label` with ``tag`` (the names) added.

    Precision of tag y is the fraction of the examples that rank y in their top k that carry
    it (the paper's printed P@k(y) divides by every top-k slot of every example, the same
    number for all tags, which cannot be what its Fig. 5 plots)."""
    data = data.with_vocabulary(model.tag_names_)
    out = top_k_per_label(
        model.scorer(data, item_vectors, user_attributes), data.tags, k=min(k, model.n_tags)
    )
    return {"tag": model.tag_names_, **out}


# ---------------------------------------------------------------------------- helpers
def _csr_arrays(m: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(int64 indptr, int32 indices, float32 values)`` of a CSR, indices sorted."""
    csr = sp.csr_matrix(m, dtype=np.float32)
    csr.sort_indices()
    return (
        csr.indptr.astype(np.int64),
        csr.indices.astype(np.int32),
        np.ascontiguousarray(csr.data, dtype=np.float32),
    )


def _as_user_attributes(obj: Any, encoder: AttributeEncoder | None) -> UserAttributes:
    if isinstance(obj, UserAttributes):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return read_user_attributes(obj, encoder=encoder)
    raise InputError(
        f"user_attributes: expected a UserAttributes or a path, got {type(obj).__name__}"
    )


# ---------------------------------------------------------------------------- protocol
DISTRIBUTIONS = ("natural", "balanced")


def prepare_tags(
    data: TagData,
    vocabulary: int = 10_000,
    distribution: str = "natural",
    balance_top: int = 500,
    seed: int = 0,
) -> TagData:
    """The paper's data set version (§4.1): the ``vocabulary`` most frequent tags, then for
    ``"balanced"`` the ``balance_top`` most frequent of them downsampled to the frequency of
    the next one (:meth:`TagData.balanced`)."""
    if distribution not in DISTRIBUTIONS:
        raise InputError(f"distribution: expected one of {DISTRIBUTIONS}, got {distribution!r}")
    data = data.top_tags(vocabulary)
    return data.balanced(balance_top, seed) if distribution == "balanced" else data


def compare_models(
    train: TagData,
    test: TagData,
    item_vectors: ItemsLike,
    user_attributes: UsersLike = None,
    models: tuple[str, ...] = MODELS,
    on_model: Callable[[dict[str, Any]], Any] | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Fit each model on ``train`` and measure it on ``test`` (the ``tags evaluate`` table).

    Parameters
    ----------
    train, test : TagData
    item_vectors, user_attributes
        As :meth:`TagModel.fit` (loaded once, shared by every model).
    models : tuple of str
    on_model : callable, optional
        Called with each result as soon as it is ready.
    **params
        :class:`TagModel` parameters shared by every model (``dim``, ``epochs``, ``seed``...).

    Returns
    -------
    list of dict
        Per model: ``model``, ``P@1``, ``R@10``, ``A@10``, ``examples`` (evaluated),
        ``fit_seconds``, ``examples_per_s`` (training positives per second), ``epochs`` run
        and ``best_epoch``; and ``per_tag`` (:func:`per_tag_metrics`).
    """
    iv = as_item_vectors(item_vectors)
    ua = None if user_attributes is None else _as_user_attributes(user_attributes, None)
    results = []
    for name in models:
        model = TagModel(name, **params)
        t0 = time.perf_counter()
        model.fit(train, iv, ua)
        seconds = time.perf_counter() - t0
        result: dict[str, Any] = {
            "model": name,
            **evaluate_tags(model, test, iv, ua),
            "fit_seconds": seconds,
            "examples_per_s": model.examples_per_s_,
            "epochs": len(model.history_),
            "best_epoch": model.best_epoch_,
            "per_tag": per_tag_metrics(model, test, iv, ua),
        }
        if on_model is not None:
            on_model(result)
        results.append(result)
    return results
