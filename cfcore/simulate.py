"""A seeded social-media simulator whose ground truth is known.

Users with latent tastes view items that other users uploaded; each item's image is rendered
from the same latent factors the users respond to, so a CNN can learn from the pictures what
collaborative filtering learns from the views — and both can be checked against the truth
(Fang et al. 2015: "the CNN features recover what users see"; §4.3's owner-viewed measure).

The generative model (every random choice is drawn here, in this order):

1. **Users.** Each user *u* has a *class taste* θ_u ~ Dirichlet(``class_concentration``) over
   the ``n_classes`` content classes and a *style taste* φ_u ~ Dirichlet(
   ``style_concentration``) over the ``n_styles`` styles — small concentrations mean users who
   like few classes — and an activity weight a_u ~ LogNormal(0, ``activity_sigma``).
   User *u* views n_u = ``min_views`` + a share ∝ a_u of the remaining ``n_views`` items
   (capped at half the catalogue).
2. **Items.** Content classes are balanced (a random permutation of ``i mod n_classes``).
   Item *i*'s owner (uploader) is drawn with probability ∝ a_u · θ_u[c_i] — active users
   upload more, and upload what they like — and its style is drawn from the owner's style
   taste φ_owner. Its popularity (appeal the image does not show) is
   π_i ~ LogNormal(0, ``popularity_sigma``). Its image (:mod:`cfcore.render`) shows the class
   as a shape family and the style as a palette and background, with per-item jitter.
3. **Views.** Each of user *u*'s views is, with probability ``noise``, an item drawn
   ∝ π over the whole catalogue; otherwise a class c ~ θ_u and a style s ~ φ_u are drawn and
   then an item ∝ π among the items of class c and style s (among class c when no such item
   exists). A user's views are the first n_u distinct items of its draws — sampling without
   replacement, one item after another — so a user ends with n_u views unless 16 rounds of
   re-drawing the repeats run dry. Owners are users like any other: they view their own
   items only if they draw them.

So the probability that one draw of *u* lands on *i* is
``noise · π_i / Σπ + (1 − noise) · θ_u[c_i] · φ_u[s_i] · π_i / Π(c_i, s_i)`` with Π(c, s) the
popularity mass of class c in style s (:meth:`SimulatedWorld.view_probabilities`, which also
handles empty cells). Collaborative filtering recovers the classes and styles from the views;
the images show the same classes and styles, which is what a CNN trained on pseudo-classes must
find.

4. **Tags** (:meth:`SimulatedWorld.tags`, Denton et al. 2015's setting). Each user has a
   *tagging focus*, ``shape`` or ``colour`` (a fair coin), and tags each of its views with
   probability ``tag_rate``: a shape-focused user writes the item's shape name, adding its
   fill with probability 0.3; a colour-focused user writes its palette, adding its background
   with probability 0.3; either adds the other focus's main word with probability 0.15. The
   words are the item's visible attributes (``attributes.csv``), so the image shows every
   candidate tag and the user decides which one gets written: a model of the item alone
   cannot tell a shape from a palette tag, a user-conditioned one can.

Each stage draws from its own generator, ``numpy.random.default_rng([seed, stage, chunk])``,
and users are processed in chunks of a fixed size, so the world depends only on its parameters
and seed — rendering images or not, a different ``image_size`` or ``tag_rate``, leaves the
views unchanged.

>>> from cfcore.simulate import simulate
>>> world = simulate(n_users=500, n_items=800, n_views=20_000, seed=0)
>>> world.views                                     # an Interactions
>>> world.save("world/")                            # views, owners, labels, images, truth
>>> world.tags().data()                             # the tag applications, a TagData
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore import render
from cfcore.errors import InputError
from cfcore.interactions import Interactions
from cfcore.io import atomic_write_text, load_artifact, require_keys, save_artifact

ARTIFACT_KIND = "simulated-world"
#: the file that describes a world; it is written last, so a folder without it is no world
MANIFEST = "world.json"
#: users per chunk of the view generator (fixed: the views for a seed must not depend on it)
CHUNK_USERS = 16_384
#: rounds of re-drawing a user's duplicate views before accepting a shortfall
TOPUP_ROUNDS = 16
#: images rendered per batch (bounds the renderer's temporary arrays)
RENDER_BATCH = 256
#: draws per block of the categorical sampler (bounds its temporary arrays)
_CATEGORICAL_BLOCK = 1 << 16

#: the latent arrays of a world, as saved in ``truth.npz`` (beside the raw ids)
TRUTH_ARRAYS = (
    "item_class",
    "item_style",
    "item_popularity",
    "item_owner",
    "render_params",
    "user_class_taste",
    "user_style_taste",
    "user_target_views",
)

# generator streams, one per stage (the second word of each generator's seed)
_USERS, _ITEMS, _OWNERS, _VIEWS, _TAGS = 1, 2, 3, 4, 5
#: a user's tagging focus: the attributes it writes (columns of the attribute words)
TAG_FOCUS = ("shape", "colour")
#: probabilities of a tagged view's second word (fill / background) and cross-focus word
TAG_SECOND, TAG_CROSS = 0.3, 0.15


@dataclass(frozen=True)
class WorldParams:
    """The parameters of :func:`simulate` (see the module docstring for their meaning)."""

    n_users: int = 2000
    n_items: int = 3000
    n_views: int = 120_000
    n_classes: int = 8
    n_styles: int = 4
    image_size: int = 32
    class_concentration: float = 0.3
    style_concentration: float = 1.0
    noise: float = 0.1
    popularity_sigma: float = 0.8
    activity_sigma: float = 0.8
    min_views: int = 5
    pixel_noise: float = 0.06
    tag_rate: float = 0.3
    seed: int = 0

    def validated(self) -> WorldParams:
        """These parameters as Python ints and floats; :class:`InputError` names a bad one."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int | np.integer):
                    raise InputError(f"{f.name} must be an integer, got {value!r}")
                values[f.name] = int(value)
            else:
                try:
                    values[f.name] = float(value)
                except (TypeError, ValueError):
                    raise InputError(f"{f.name} must be a number, got {value!r}") from None
                if not np.isfinite(values[f.name]):
                    raise InputError(f"{f.name} must be finite, got {value!r}")
        p = WorldParams(**values)
        for name in ("n_users", "n_items", "n_views", "n_classes", "n_styles", "min_views"):
            if getattr(p, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(p, name)}")
        if p.n_classes > p.n_items:
            raise InputError(
                f"n_classes={p.n_classes} exceeds n_items={p.n_items}: every class needs an item"
            )
        if p.min_views > p.n_items // 2:
            raise InputError(f"min_views={p.min_views} is more than half of n_items={p.n_items}")
        if p.n_views < p.min_views * p.n_users:
            raise InputError(
                f"n_views={p.n_views} is smaller than n_users × min_views = "
                f"{p.n_users * p.min_views}"
            )
        if p.n_views > p.n_users * (p.n_items // 2):
            raise InputError(
                f"n_views={p.n_views} is too dense for {p.n_users} users × {p.n_items} items "
                "(at most half the catalogue per user)"
            )
        for name in ("class_concentration", "style_concentration"):
            if getattr(p, name) <= 0:
                raise InputError(f"{name} must be > 0, got {getattr(p, name)}")
        for name in ("popularity_sigma", "activity_sigma", "pixel_noise"):
            if getattr(p, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(p, name)}")
        for name in ("noise", "tag_rate"):
            if not 0.0 <= getattr(p, name) <= 1.0:
                raise InputError(f"{name} must lie in [0, 1], got {getattr(p, name)}")
        if p.image_size < 8:
            raise InputError(f"image_size must be >= 8 pixels, got {p.image_size}")
        if p.seed < 0:
            raise InputError(f"seed must be >= 0, got {p.seed}")
        return p


# --------------------------------------------------------------------------- the world
@dataclass
class SimulatedWorld:
    """A simulated social-media site: who viewed what, who uploaded what, and why.

    Attributes
    ----------
    views : Interactions
        users × items views; user ids ``0…n_users-1``, item ids ``0…n_items-1``.
    item_class, item_style : ndarray of int64, shape (n_items,)
        The planted content class (a shape family in the image) and style (palette and
        background).
    item_popularity : ndarray of float64, shape (n_items,)
        π_i, the item's appeal that the image does not show.
    item_owner : ndarray of int64, shape (n_items,)
        The user who uploaded each item.
    render_params : ndarray of float32, shape (n_items, len(render.PARAM_NAMES))
        Per-item image jitter (scale, rotation, position, colour, background).
    user_class_taste : ndarray of float32, shape (n_users, n_classes)
        θ_u, rows sum to 1.
    user_style_taste : ndarray of float32, shape (n_users, n_styles)
        φ_u, rows sum to 1.
    user_target_views : ndarray of int64, shape (n_users,)
        n_u, the number of distinct items each user was meant to view.
    params : WorldParams
    """

    views: Interactions
    item_class: np.ndarray
    item_style: np.ndarray
    item_popularity: np.ndarray
    item_owner: np.ndarray
    render_params: np.ndarray
    user_class_taste: np.ndarray
    user_style_taste: np.ndarray
    user_target_views: np.ndarray
    params: WorldParams

    # ------------------------------------------------------------------ facts
    @property
    def n_users(self) -> int:
        return self.views.n_users

    @property
    def n_items(self) -> int:
        return self.views.n_items

    @property
    def class_names(self) -> list[str]:
        """Name of each content class (its shape family, or ``class<k>`` past the renderer's)."""
        k = self.params.n_classes
        if k <= render.MAX_CLASSES:
            return render.class_names(k)
        return [f"class{c}" for c in range(k)]

    @property
    def style_names(self) -> list[str]:
        return render.style_names(self.params.n_styles)

    @property
    def owners(self) -> dict[int, int]:
        """Item id → owner's user id."""
        return dict(zip(self.views.item_ids.tolist(), self.item_owner.tolist(), strict=True))

    def summary(self) -> dict[str, Any]:
        """Sizes and shape of the world (what ``cfcore simulate`` prints)."""
        pop = self.views.item_popularity()
        act = self.views.user_activity()
        return {
            "users": self.n_users,
            "items": self.n_items,
            "views": self.views.nnz,
            "views_asked": self.params.n_views,
            "density": self.views.density,
            "views_per_user_median": float(np.median(act)),
            "views_per_item_median": float(np.median(pop)),
            "items_without_views": int((pop == 0).sum()),
            "classes": self.params.n_classes,
            "styles": self.params.n_styles,
            "owners": int(len(np.unique(self.item_owner))),
            "items_viewed_by_owner": int(self.owner_viewed_own().sum()),
        }

    def owner_viewed_own(self) -> np.ndarray:
        """Whether each item's owner viewed it, bool ``(n_items,)``."""
        m = self.views.user_items
        return np.asarray(m[self.item_owner, np.arange(self.n_items)]).ravel() != 0

    def tags(self) -> WorldTags:
        """The users' tag applications (module docstring, step 4), drawn from their own
        generator: the views, images and every other output do not depend on them."""
        p = self.params
        rng = np.random.default_rng([p.seed, _TAGS])
        focus = rng.integers(0, len(TAG_FOCUS), self.n_users)
        m = self.views.user_items.tocsr()
        m.sort_indices()
        rows = np.repeat(np.arange(self.n_users), np.diff(m.indptr))
        cols = m.indices.astype(np.int64)
        tagged = rng.random(len(rows)) < p.tag_rate
        rows, cols = rows[tagged], cols[tagged]
        main = 2 * focus[rows]  # column of the attribute words: shape (0) or palette (2)
        second = rng.random(len(rows)) < TAG_SECOND
        cross = rng.random(len(rows)) < TAG_CROSS
        words = self._attribute_words()
        pick = np.concatenate([np.arange(len(rows)), np.flatnonzero(second), np.flatnonzero(cross)])
        column = np.concatenate([main, main[second] + 1, 2 - main[cross]])
        order = np.lexsort((column, cols[pick], rows[pick]))
        pick, column = pick[order], column[order]
        return WorldTags(
            self.views.user_ids[rows[pick]],
            self.views.item_ids[cols[pick]],
            words[cols[pick], column],
            np.array(TAG_FOCUS)[focus],
            self.views.user_ids,
        )

    # ------------------------------------------------------------------ the truth
    def view_probabilities(self, users: Sequence[int] | np.ndarray) -> np.ndarray:
        """The distribution of one draw of each given user's views over the items.

        Parameters
        ----------
        users : array-like of int
            User rows.

        Returns
        -------
        ndarray of float64, shape (len(users), n_items)
            Row *r* is P(a draw of ``users[r]`` lands on item *i*) (module docstring); rows
            sum to 1. A user's views are its first distinct draws, so this also ranks the
            user's unseen items as the generator would: the ideal recommender's scores.
        """
        users = np.asarray(users, dtype=np.int64)
        if users.ndim != 1 or (len(users) and (users.min() < 0 or users.max() >= self.n_users)):
            raise InputError(f"users must be rows 0…{self.n_users - 1}")
        k, s = self.params.n_classes, self.params.n_styles
        c, st, pop = self.item_class, self.item_style, self.item_popularity
        cell_mass = np.zeros((k, s))
        np.add.at(cell_mass, (c, st), pop)
        class_mass = cell_mass.sum(axis=1)
        empty = (cell_mass == 0).astype(np.float64)  # (k, s)
        theta = self.user_class_taste[users].astype(np.float64)
        phi = self.user_style_taste[users].astype(np.float64)
        theta /= theta.sum(axis=1, keepdims=True)  # stored as float32: renormalise
        phi /= phi.sum(axis=1, keepdims=True)
        in_cell = pop / cell_mass[c, st]  # an item's own cell is never empty
        fallback = (phi @ empty.T)[:, c] * (pop / class_mass[c])  # empty cells → whole class
        tasted = theta[:, c] * (phi[:, st] * in_cell + fallback)
        return self.params.noise * pop / pop.sum() + (1.0 - self.params.noise) * tasted

    # ------------------------------------------------------------------ images
    def render(self, items: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The images of ``items`` (default: all), uint8 ``(n, image_size, image_size, 3)``."""
        render.check_n_classes(self.params.n_classes)
        items = np.arange(self.n_items) if items is None else np.asarray(items, dtype=np.int64)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise InputError(f"items must be columns 0…{self.n_items - 1}")
        size = self.params.image_size
        out = np.empty((len(items), size, size, 3), dtype=np.uint8)
        for start in range(0, len(items), RENDER_BATCH):  # bounded temporary arrays
            part = items[start : start + RENDER_BATCH]
            out[start : start + len(part)] = render.render(
                self.item_class[part],
                self.item_style[part],
                self.render_params[part],
                part,
                self.params.n_styles,
                size,
                self.params.pixel_noise,
                self.params.seed,
            )
        return out

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        directory: str | os.PathLike[str],
        images: bool = True,
        holdout: float = 0.0,
        overwrite: bool = False,
        progress: bool = False,
        workers: int = 2,
    ) -> Path:
        """Write the world to ``directory``, all at once or not at all.

        Layout::

            world.json        parameters, summary, names, the list of files (written last)
            views.npz         the views (``Interactions``; `cfcore info world/views.npz`)
            owners.csv        item_id,owner        (``--owners`` of cfcore/cfvision)
            classes.csv       item_id,label        planted class (probe / NMI labels)
            attributes.csv    item_id,labels       shape|fill|palette|background (multi-label)
            tags.csv          user_id,item_id,tag  tag applications (unless tag_rate is 0)
            users.csv         user_id,focus        each user's tagging focus (shape/colour)
            truth.npz         every latent array (kind "simulated-world")
            images/<id>.png   one image per item (unless ``images=False``)
            train_views.npz   with ``holdout``: the views of the train items only
            test_items.csv    with ``holdout``: the held-out items (item_id)

        Everything is written into a temporary sibling folder that is renamed onto
        ``directory`` at the end, so an interrupted save leaves no half-written world.

        Parameters
        ----------
        directory : path-like
            Must not exist, unless ``overwrite`` and it holds a world (a ``world.json``).
        images : bool
            Render and write the images (skip for benchmark-only worlds).
        holdout : float
            Fraction of items held out with all their views (``cfcore.splits.item_split``,
            seeded by the world's seed; Fang §4.1 holds out 5%): writes ``train_views.npz``
            and ``test_items.csv``. 0 writes neither.
        overwrite : bool
            Replace an existing world.
        progress : bool
            tqdm bar over the image batches.
        workers : int
            Threads rendering and writing images.
        """
        target = Path(directory)
        if target.exists():
            if not overwrite:
                raise InputError(f"{target}: already exists (overwrite it with --force)")
            if not (target / MANIFEST).is_file():
                raise InputError(
                    f"{target}: exists and is not a simulated world (no {MANIFEST}); "
                    "refusing to replace it"
                )
        if not 0.0 <= holdout < 1.0:
            raise InputError(f"holdout must lie in [0, 1), got {holdout!r}")
        if images:
            render.check_n_classes(self.params.n_classes)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            files = self._write(tmp, images, holdout, progress, workers)
            manifest = {
                "kind": ARTIFACT_KIND,
                "params": asdict(self.params),
                "holdout": holdout,
                "images": images,
                "class_names": self.class_names,
                "style_names": self.style_names,
                "render_params": list(render.PARAM_NAMES),
                "summary": self.summary(),
                "files": files,
            }
            atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
            _replace_dir(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _write(
        self, out: Path, images: bool, holdout: float, progress: bool, workers: int
    ) -> dict[str, str]:
        ids = self.views.item_ids.tolist()
        files = {"views": "views.npz", "owners": "owners.csv", "classes": "classes.csv"}
        self.views.save(out / "views.npz")
        owners = self.item_owner.tolist()
        _write_csv(out / "owners.csv", "item_id,owner", zip(ids, owners, strict=True))
        names = self.class_names
        _write_csv(
            out / "classes.csv",
            "item_id,label",
            ((i, names[c]) for i, c in zip(ids, self.item_class.tolist(), strict=True)),
        )
        files["attributes"] = "attributes.csv"
        _write_csv(
            out / "attributes.csv", "item_id,labels", zip(ids, self._attributes(), strict=True)
        )
        files["truth"] = "truth.npz"
        save_artifact(
            out / "truth.npz",
            ARTIFACT_KIND,
            {
                "item_ids": self.views.item_ids,
                "user_ids": self.views.user_ids,
                **{name: getattr(self, name) for name in TRUTH_ARRAYS},
            },
            {
                "params": asdict(self.params),
                "class_names": self.class_names,
                "style_names": self.style_names,
                "render_params": list(render.PARAM_NAMES),
            },
        )
        if self.params.tag_rate > 0:
            tags = self.tags()
            rows = zip(tags.user_ids.tolist(), tags.item_ids.tolist(), tags.tags, strict=True)
            _write_csv(out / "tags.csv", "user_id,item_id,tag", rows)
            _write_csv(
                out / "users.csv",
                "user_id,focus",
                zip(tags.users.tolist(), tags.user_focus.tolist(), strict=True),
            )
            files.update(tags="tags.csv", users="users.csv")
        if holdout > 0:
            from cfcore.splits import item_split

            split = item_split(self.views, holdout, seed=self.params.seed)
            split.train.save(out / "train_views.npz")
            test_ids = self.views.item_ids[split.test_items].tolist()
            _write_csv(out / "test_items.csv", "item_id", ((i,) for i in test_ids))
            files.update(train_views="train_views.npz", test_items="test_items.csv")
        if images:
            self._write_images(out / "images", progress, workers)
            files["images"] = "images/"
        return files

    def _attributes(self) -> list[str]:
        """``shape|fill|palette|background`` of each item (the visible factors, multi-label)."""
        return ["|".join(row) for row in self._attribute_words().tolist()]

    def _attribute_words(self) -> np.ndarray:
        """Shape, fill, palette and background of each item, str ``(n_items, 4)``."""
        shapes, fills, bgs = render.SHAPES, render.FILLS, render.BACKGROUNDS
        c, s = self.item_class, self.item_style
        return np.stack(
            [
                np.array(shapes)[c % len(shapes)],
                np.array(fills)[np.minimum(c // len(shapes), len(fills) - 1)],
                np.char.add("palette", s.astype(str)),
                np.array(bgs)[s % len(bgs)],
            ],
            axis=1,
        )

    def _write_images(self, folder: Path, progress: bool, workers: int) -> None:
        """Render and write the images batch by batch, ``workers`` batches at a time.

        numpy and zlib release the GIL in their inner loops, so threads overlap well.
        """
        from PIL import Image

        folder.mkdir()
        ids = self.views.item_ids

        def batch(start: int) -> None:
            items = np.arange(start, min(start + RENDER_BATCH, self.n_items))
            for item, pixels in zip(ids[items].tolist(), self.render(items), strict=True):
                Image.fromarray(pixels).save(folder / f"{item}.png", compress_level=1)

        starts = range(0, self.n_items, RENDER_BATCH)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            done: Any = pool.map(batch, starts)
            if progress:
                from tqdm.auto import tqdm

                done = tqdm(done, total=len(starts), desc="images", unit="batch", leave=False)
            for _ in done:
                pass

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SimulatedWorld:
        """Read a world written by :meth:`save` (its views and truth; images stay on disk)."""
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise InputError(f"{directory}: not a simulated world (no {MANIFEST})")
        arrays, header = load_artifact(directory / "truth.npz", ARTIFACT_KIND)
        require_keys(directory / "truth.npz", arrays, list(TRUTH_ARRAYS))
        params = WorldParams(**header["params"]).validated()
        views = Interactions.load(directory / "views.npz")
        return cls(views, **{k: arrays[k] for k in TRUTH_ARRAYS}, params=params)


@dataclass(frozen=True)
class WorldTags:
    """A world's tag applications (:meth:`SimulatedWorld.tags`).

    Attributes
    ----------
    user_ids, item_ids : ndarray of int64
        Who tagged which item, one row per application (sorted by user, item).
    tags : ndarray of str
        The word written: the item's shape, fill, palette or background.
    user_focus : ndarray of str, shape (n_users,)
        Each user's tagging focus (:data:`TAG_FOCUS`), in the order of ``users``.
    users : ndarray of int64, shape (n_users,)
        The user ids.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    tags: np.ndarray
    user_focus: np.ndarray
    users: np.ndarray

    def data(self):  # -> cfcore.tagdata.TagData
        """The applications as a :class:`~cfcore.tagdata.TagData` (what ``read_tags`` gives
        for the saved ``tags.csv``)."""
        from cfcore.tagdata import TagData

        return TagData.from_applications(self.user_ids, self.item_ids, self.tags.tolist())


def _write_csv(path: Path, header: str, rows: Iterable[Iterable[Any]]) -> None:
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``; an existing ``target`` is moved aside first, then deleted."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- generator
def simulate(
    n_users: int = WorldParams.n_users,
    n_items: int = WorldParams.n_items,
    n_views: int = WorldParams.n_views,
    n_classes: int = WorldParams.n_classes,
    n_styles: int = WorldParams.n_styles,
    image_size: int = WorldParams.image_size,
    *,
    class_concentration: float = WorldParams.class_concentration,
    style_concentration: float = WorldParams.style_concentration,
    noise: float = WorldParams.noise,
    popularity_sigma: float = WorldParams.popularity_sigma,
    activity_sigma: float = WorldParams.activity_sigma,
    min_views: int = WorldParams.min_views,
    pixel_noise: float = WorldParams.pixel_noise,
    tag_rate: float = WorldParams.tag_rate,
    seed: int = WorldParams.seed,
) -> SimulatedWorld:
    """Simulate users, uploads and views (the module docstring gives the model).

    Parameters
    ----------
    n_users, n_items : int
        Sizes.
    n_views : int
        Distinct (user, item) views to draw, about (a user whose tastes run out of items
        keeps fewer).
    n_classes : int
        Planted content classes (shape families in the images; at most
        ``render.MAX_CLASSES`` = 24 when images are rendered).
    n_styles : int
        Planted styles (palette and background).
    image_size : int
        Side of the rendered images in pixels (images are rendered by :meth:`~SimulatedWorld.
        render` and :meth:`~SimulatedWorld.save`, not here).
    class_concentration, style_concentration : float
        Dirichlet concentrations of the users' tastes: below 1 a user likes few classes
        (styles), above 1 most of them about equally.
    noise : float
        Fraction of views drawn by popularity alone, whatever the user's taste.
    popularity_sigma : float
        σ of the log-normal item popularity (0 = every item equally appealing).
    activity_sigma : float
        σ of the log-normal user activity (0 = every user views about as many items).
    min_views : int
        Views of the least active users.
    pixel_noise : float
        Standard deviation of the images' (uniform) pixel noise, intensities in 0…1.
    tag_rate : float
        Fraction of each user's views it tags (:meth:`SimulatedWorld.tags`; 0: no tags).
    seed : int
        Everything is a function of the parameters and this seed.

    Returns
    -------
    SimulatedWorld
    """
    p = WorldParams(
        n_users=n_users,
        n_items=n_items,
        n_views=n_views,
        n_classes=n_classes,
        n_styles=n_styles,
        image_size=image_size,
        class_concentration=class_concentration,
        style_concentration=style_concentration,
        noise=noise,
        popularity_sigma=popularity_sigma,
        activity_sigma=activity_sigma,
        min_views=min_views,
        pixel_noise=pixel_noise,
        tag_rate=tag_rate,
        seed=seed,
    ).validated()
    # 1. users: tastes and activity
    rng = np.random.default_rng([p.seed, _USERS])
    theta = _dirichlet(rng, p.class_concentration, p.n_users, p.n_classes)
    phi = _dirichlet(rng, p.style_concentration, p.n_users, p.n_styles)
    activity = rng.lognormal(0.0, p.activity_sigma, p.n_users)
    target = _view_counts(activity, p)
    # 2. items: class, popularity, owner, style, image jitter
    rng = np.random.default_rng([p.seed, _ITEMS])
    item_class = (rng.permutation(p.n_items) % p.n_classes).astype(np.int64)
    popularity = rng.lognormal(0.0, p.popularity_sigma, p.n_items)
    render_params = render.draw_params(rng, p.n_items)
    rng = np.random.default_rng([p.seed, _OWNERS])
    owner = _draw_owners(rng, activity, theta, item_class)
    item_style = _categorical(rng, np.cumsum(phi, axis=1), owner)
    # 3. views
    matrix = _draw_views(p, theta, phi, target, item_class, item_style, popularity)
    views = Interactions(matrix)
    return SimulatedWorld(
        views=views,
        item_class=item_class,
        item_style=item_style,
        item_popularity=popularity,
        item_owner=owner,
        render_params=render_params,
        user_class_taste=theta.astype(np.float32),
        user_style_taste=phi.astype(np.float32),
        user_target_views=target,
        params=p,
    )


def _dirichlet(rng: np.random.Generator, alpha: float, n: int, k: int) -> np.ndarray:
    """``n`` rows ~ Dirichlet(alpha · 1_k), float64 (normalised Gamma draws)."""
    g = rng.standard_gamma(alpha, (n, k))
    sums = g.sum(axis=1, keepdims=True)
    zero = sums[:, 0] <= 0  # every Gamma draw underflowed (tiny alpha): a uniform taste
    g[zero], sums[zero] = 1.0, float(k)
    return g / sums


def _view_counts(activity: np.ndarray, p: WorldParams) -> np.ndarray:
    """``min_views`` + a share ∝ activity of the remaining views, capped at half the items."""
    cap = p.n_items // 2
    rest = p.n_views - p.min_views * p.n_users
    counts = np.full(p.n_users, p.min_views, dtype=np.int64)
    free = np.ones(p.n_users, dtype=bool)
    for _ in range(16):  # hand what the cap cut off to the users below it
        if rest <= 0 or not free.any():
            break
        w = activity * free
        share = np.floor(w / w.sum() * rest).astype(np.int64)
        counts = np.minimum(counts + share, cap)
        free &= counts < cap
        rest = p.n_views - int(counts.sum())
    if rest > 0 and free.any():  # rounding leftovers: one more view for the most active
        idx = np.flatnonzero(free)
        idx = idx[np.argsort(-activity[idx], kind="stable")][:rest]
        counts[idx] += 1
    return counts


def _categorical(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw from each ``cum[rows[j]]``, a row-wise cumulative distribution, int64.

    All uniforms are drawn first, then looked up block by block in the rows' cumulative
    sums laid end to end (row ``b`` of a block shifted by ``b``), so memory stays bounded.
    """
    k = cum.shape[1]
    u = rng.random(len(rows))
    out = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), _CATEGORICAL_BLOCK):
        r = rows[start : start + _CATEGORICAL_BLOCK]
        block = cum[r] / cum[r, -1:]
        block[:, -1] = 1.0
        shift = np.arange(len(r), dtype=np.float64)
        flat = (block + shift[:, None]).ravel()
        pos = np.searchsorted(flat, shift + u[start : start + len(r)], side="right")
        out[start : start + len(r)] = np.minimum(pos - shift.astype(np.int64) * k, k - 1)
    return out


def _draw_owners(
    rng: np.random.Generator, activity: np.ndarray, theta: np.ndarray, item_class: np.ndarray
) -> np.ndarray:
    """Owner of each item ∝ activity_u · θ_u[class] (active users upload what they like)."""
    owner = np.empty(len(item_class), dtype=np.int64)
    for c in range(theta.shape[1]):
        items = np.flatnonzero(item_class == c)
        cum = np.cumsum(activity * theta[:, c])
        u = rng.random(len(items)) * cum[-1]
        owner[items] = np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)
    return owner


def _draw_views(
    p: WorldParams,
    theta: np.ndarray,
    phi: np.ndarray,
    target: np.ndarray,
    item_class: np.ndarray,
    item_style: np.ndarray,
    popularity: np.ndarray,
) -> sp.csr_matrix:
    """The users × items view matrix (module docstring, step 3), chunk by chunk of users."""
    k, s = p.n_classes, p.n_styles
    cell = item_class * s + item_style
    order = np.argsort(cell, kind="stable")  # items grouped by class, then style
    cum = np.concatenate(([0.0], np.cumsum(popularity[order])))
    # item ranges [start, end) in ``order`` of every cell and every class
    cell_start = np.searchsorted(cell[order], np.arange(k * s), side="left")
    cell_end = np.searchsorted(cell[order], np.arange(k * s), side="right")
    class_start, class_end = cell_start[::s], cell_end[s - 1 :: s]
    empty = cell_end == cell_start
    cell_start = np.where(empty, np.repeat(class_start, s), cell_start)  # → the whole class
    cell_end = np.where(empty, np.repeat(class_end, s), cell_end)
    theta_cum = np.cumsum(theta, axis=1)
    phi_cum = np.cumsum(phi, axis=1)

    def draw(rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        noise = rng.random(len(users)) < p.noise
        c = _categorical(rng, theta_cum, users)
        st = _categorical(rng, phi_cum, users)
        lo = np.where(noise, 0, cell_start[c * s + st])
        hi = np.where(noise, p.n_items, cell_end[c * s + st])
        mass = cum[lo] + rng.random(len(users)) * (cum[hi] - cum[lo])
        pos = np.searchsorted(cum, mass, side="right") - 1
        return order[np.clip(pos, lo, hi - 1)]

    indices, counts = [], np.empty(p.n_users, dtype=np.int64)
    for chunk, u0 in enumerate(range(0, p.n_users, CHUNK_USERS)):
        u1 = min(p.n_users, u0 + CHUNK_USERS)
        rng = np.random.default_rng([p.seed, _VIEWS, chunk])
        want = target[u0:u1]
        keys = np.empty(0, dtype=np.int64)  # user * n_items + item, sorted
        have = np.zeros(u1 - u0, dtype=np.int64)
        for round_ in range(TOPUP_ROUNDS):
            need = want - have
            if not need.any():
                break
            # over-draw after the first round: what is left is mostly duplicates
            n_draw = need * min(2**round_, 256)
            local = np.repeat(np.arange(u1 - u0, dtype=np.int64), n_draw)
            drawn = local * p.n_items + draw(rng, local + u0)
            fresh = _first_new(drawn, keys)
            # keep each user's first ``need`` fresh items, in draw order
            rank = np.concatenate(([0], np.cumsum(fresh)))
            before = rank[np.cumsum(n_draw) - n_draw]  # fresh items before the user's block
            keep = fresh & (rank[1:] - before[local] <= need[local])
            keys = np.sort(np.concatenate((keys, drawn[keep])))
            have += np.bincount(local[keep], minlength=u1 - u0)
        counts[u0:u1] = have
        indices.append(keys % p.n_items)
    indptr = np.concatenate(([0], np.cumsum(counts)))
    flat = np.concatenate(indices)
    return sp.csr_matrix(
        (np.ones(len(flat), dtype=np.float32), flat, indptr), shape=(p.n_users, p.n_items)
    )


def _first_new(drawn: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Entries of ``drawn`` not in the sorted ``keys`` and not drawn earlier in ``drawn``.

    Keeping a user's first distinct draws is sampling without replacement, one item after
    another, as a person browsing would.
    """
    pos = np.searchsorted(keys, drawn)
    new = keys[np.minimum(pos, len(keys) - 1)] != drawn if len(keys) else np.ones(len(drawn), bool)
    order = np.argsort(drawn, kind="stable")
    first = np.ones(len(drawn), dtype=bool)
    sorted_keys = drawn[order]
    first[order[1:]] = sorted_keys[1:] != sorted_keys[:-1]
    return new & first
