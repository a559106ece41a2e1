"""The social-media simulator: seeded, shaped as asked, true to its model, saved whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cfcore import render
from cfcore.cli.main import cli
from cfcore.cluster import cluster_items, normalized_mutual_info
from cfcore.errors import InputError
from cfcore.factorize import Factorizer
from cfcore.interactions import Interactions
from cfcore.simulate import MANIFEST, TRUTH_ARRAYS, SimulatedWorld, simulate

TINY = dict(n_users=300, n_items=400, n_views=9000, n_classes=6, n_styles=3, image_size=24)


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(**TINY, seed=3)


@pytest.fixture(scope="module")
def saved(world, tmp_path_factory) -> Path:
    return world.save(tmp_path_factory.mktemp("sim") / "world", holdout=0.25)


def _same(a: SimulatedWorld, b: SimulatedWorld) -> bool:
    return (a.views.user_items != b.views.user_items).nnz == 0 and all(
        np.array_equal(getattr(a, k), getattr(b, k)) for k in TRUTH_ARRAYS
    )


# ----------------------------------------------------------------------------- generator
def test_a_seed_gives_one_world_and_other_seeds_others(world):
    assert _same(world, simulate(**TINY, seed=3))
    other = simulate(**TINY, seed=4)
    assert (other.views.user_items != world.views.user_items).nnz > 0
    assert not np.array_equal(other.item_class, world.item_class)


def test_image_options_do_not_change_the_views(world):
    """Each stage has its own random stream: rendering choices leave who-viewed-what alone."""
    other = simulate(**{**TINY, "image_size": 48}, pixel_noise=0.2, seed=3)
    assert (other.views.user_items != world.views.user_items).nnz == 0
    assert np.array_equal(other.item_owner, world.item_owner)


def test_tags_do_not_change_the_views_or_the_images(world):
    """The tags come from a generator of their own: a seed's world is the one it was before
    tags existed (digest taken on the code without them) whatever ``tag_rate`` is."""
    import hashlib

    for tag_rate in (0.0, 0.3, 1.0):
        w = simulate(**TINY, tag_rate=tag_rate, seed=3)
        m = w.views.user_items.tocsr()
        m.sort_indices()
        h = hashlib.blake2b(digest_size=16)
        for a in (
            m.indptr.astype(np.int64),
            m.indices.astype(np.int64),
            w.item_class,
            w.item_style,
            w.item_owner,
            w.render(np.arange(5)),
        ):
            h.update(np.ascontiguousarray(a).tobytes())
        assert h.hexdigest() == "85480eb4e82c75f4a3f57926c90c1fd7", tag_rate


def test_tags_are_seeded_words_of_the_item_that_follow_the_users_focus(world):
    tags = world.tags()
    again = simulate(**TINY, seed=3).tags()
    assert np.array_equal(tags.tags, again.tags) and np.array_equal(tags.item_ids, again.item_ids)
    assert not np.array_equal(simulate(**TINY, seed=4).tags().tags[:50], tags.tags[:50])
    # every application is a view, and its word one of the item's attributes
    assert np.all(np.asarray(world.views.user_items[tags.user_ids, tags.item_ids]).ravel() != 0)
    attrs = [set(a.split("|")) for a in world._attributes()]
    assert all(t in attrs[i] for t, i in zip(tags.tags, tags.item_ids, strict=True))
    # about tag_rate of the views are tagged; shape-focused users write shape names mostly
    examples = len(set(zip(tags.user_ids.tolist(), tags.item_ids.tolist(), strict=True)))
    assert 0.27 < examples / world.views.nnz < 0.33
    shape = np.isin(tags.tags, render.SHAPES)
    focus = tags.user_focus[tags.user_ids]
    # (shape-focused: 1 shape word per 1.45 written; colour-focused: 0.15 per 1.45)
    assert shape[focus == "shape"].mean() > 0.6 and shape[focus == "colour"].mean() < 0.15
    assert len(simulate(**TINY, tag_rate=0.0, seed=3).tags().tags) == 0


def test_sizes_density_and_ids(world):
    v = world.views
    assert v.shape == (300, 400)
    assert np.array_equal(v.user_ids, np.arange(300))
    assert np.array_equal(v.item_ids, np.arange(400))
    assert 0.98 * 9000 <= v.nnz <= 9000  # duplicates are re-drawn
    act = v.user_activity()
    assert act.min() >= 5 and act.max() <= 200  # min_views … half the catalogue
    assert np.array_equal(act, world.user_target_views)  # every user got what was asked
    # classes are balanced; tastes are distributions
    assert np.bincount(world.item_class).max() - np.bincount(world.item_class).min() <= 1
    np.testing.assert_allclose(world.user_class_taste.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(world.user_style_taste.sum(axis=1), 1.0, rtol=1e-5)


def test_owners_are_users_who_like_what_they_upload(world):
    owner = world.item_owner
    assert owner.min() >= 0 and owner.max() < world.n_users
    theta = world.user_class_taste
    liked_by_owner = theta[owner, world.item_class].mean()
    liked_by_anyone = theta[:, world.item_class].mean()
    assert liked_by_owner > 2 * liked_by_anyone
    assert world.owners[7] == int(owner[7])


def test_views_follow_the_documented_distribution():
    """Observed views per item against Σ_u n_u · P(a view of u lands on i).

    Sparse enough (6 views per user on average) that re-drawn duplicates barely matter; the
    expectation is the module docstring's formula (``view_probabilities``), computed
    independently of the sampler. Counts are then about Poisson, so Pearson's χ² over the
    500 items should be near its 499 degrees of freedom (σ ≈ 32); leaving out the style taste
    or the popularity would put it in the thousands.
    """
    w = simulate(n_users=4000, n_items=500, n_views=24_000, n_classes=5, n_styles=3, seed=1)
    probs = w.view_probabilities(np.arange(w.n_users))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    expected = (w.user_target_views[:, None] * probs).sum(axis=0)
    observed = w.views.item_popularity()
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert 400 < chi2 < 600, chi2
    by_class = np.bincount(w.item_class, weights=observed)
    np.testing.assert_allclose(by_class, np.bincount(w.item_class, weights=expected), rtol=0.03)
    # a user's views concentrate on the classes it likes
    user = int(np.argmax(w.user_target_views))
    seen = w.views.user_items[user].indices
    top = np.argsort(-w.user_class_taste[user])[:2]
    assert np.isin(w.item_class[seen], top).mean() > w.user_class_taste[user, top].sum() * 0.8


def test_a_style_missing_from_a_class_falls_back_to_the_whole_class():
    """40 styles over 200 items leave about 30% of the (class, style) cells empty."""
    w = simulate(
        n_users=10_000,
        n_items=200,
        n_views=20_000,
        n_classes=4,
        n_styles=40,
        min_views=1,
        activity_sigma=0.0,
        seed=0,
    )
    cells = np.zeros((4, 40))
    np.add.at(cells, (w.item_class, w.item_style), 1)
    assert (cells == 0).mean() > 0.2
    expected = 2 * w.view_probabilities(np.arange(w.n_users)).sum(axis=0)
    observed = w.views.item_popularity()
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert 140 < chi2 < 260, chi2  # 199 degrees of freedom; measured 177…203 over 4 seeds


def test_pure_noise_views_ignore_taste():
    w = simulate(n_users=200, n_items=300, n_views=6000, noise=1.0, seed=0)
    probs = w.view_probabilities([0, 1])
    np.testing.assert_allclose(probs[0], probs[1])
    np.testing.assert_allclose(probs[0], w.item_popularity / w.item_popularity.sum())


@pytest.mark.filterwarnings("ignore::cfcore.sampling.NegativeShortfallWarning")
def test_factorizing_the_views_recovers_the_planted_classes(world):
    """Collaborative filtering sees the classes: k-means of item factors vs the truth."""
    model = Factorizer(factors=32, epochs=20, threads=1, seed=0, progress=False).fit(world.views)
    labels = cluster_items(model.item_factors_, k=6, seed=0)
    nmi = normalized_mutual_info(labels.labels, world.item_class)
    assert nmi > 0.8, nmi  # measured 0.89…0.94 over seeds 0…4; chance ≈ 0


def test_a_larger_world_with_many_classes_gets_its_views():
    w = simulate(n_users=20_000, n_items=4000, n_views=400_000, n_classes=24, n_styles=8, seed=0)
    assert w.views.nnz >= 0.999 * 400_000  # two chunks of users, duplicates re-drawn
    assert np.bincount(w.item_style, minlength=8).min() > 0


# ----------------------------------------------------------------------------- images
def test_images_show_the_class_but_not_through_the_mean_colour(world):
    imgs = world.render()
    assert imgs.shape == (400, 24, 24, 3) and imgs.dtype == np.uint8
    # one item's image does not depend on the batch it is rendered in
    assert np.array_equal(world.render([17, 5])[1], imgs[5])
    # the mean colour says which palette (style), hardly which shape (class)
    mean = imgs.reshape(len(imgs), -1, 3).mean(axis=1)
    train, test = np.arange(300), np.arange(300, 400)

    def nearest_mean_accuracy(target):
        cents = np.stack([mean[train][target[train] == c].mean(0) for c in np.unique(target)])
        guess = np.argmin(((mean[test, None, :] - cents[None]) ** 2).sum(-1), axis=1)
        return (guess == target[test]).mean()

    assert nearest_mean_accuracy(world.item_style) > 0.6  # chance 1/3
    assert nearest_mean_accuracy(world.item_class) < 0.4  # chance 1/6
    # shapes differ: same class and style look alike more than other classes in that style
    flat = imgs.reshape(len(imgs), -1).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    sim = flat @ flat.T
    same_style = world.item_style[:, None] == world.item_style[None, :]
    same_class = world.item_class[:, None] == world.item_class[None, :]
    off = ~np.eye(len(imgs), dtype=bool)
    assert sim[same_style & same_class & off].mean() > sim[same_style & ~same_class].mean()


def test_every_class_renders_and_too_many_classes_is_a_clear_error():
    n = render.MAX_CLASSES
    rng = np.random.default_rng(0)
    imgs = render.render(
        np.arange(n), np.zeros(n, int), render.draw_params(rng, n), np.arange(n), 1, 16
    )
    assert imgs.shape == (n, 16, 16, 3)
    assert len({im.tobytes() for im in imgs}) == n
    assert len(render.class_names(n)) == n
    big = simulate(n_users=50, n_items=100, n_views=500, n_classes=30, seed=0)
    assert big.class_names[-1] == "class29"  # fine without images
    with pytest.raises(InputError, match="1…24"):
        big.render([0])


# ----------------------------------------------------------------------------- saving
def test_save_writes_every_file_and_load_reads_the_truth_back(world, saved):
    manifest = json.loads((saved / MANIFEST).read_text())
    assert manifest["params"]["seed"] == 3 and manifest["summary"]["views"] == world.views.nnz
    for name in manifest["files"].values():
        assert (saved / name).exists(), name
    assert _same(SimulatedWorld.load(saved), world)
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_saved_files_are_read_by_the_other_commands(world, saved):
    from cfcore.readers import read_interactions
    from cfcore.retrieval import read_owners

    views = read_interactions(saved / "views.npz")
    assert (views.user_items != world.views.user_items).nnz == 0
    owners = read_owners(saved / "owners.csv")
    assert owners["7"] == str(world.item_owner[7])
    classes = (saved / "classes.csv").read_text().splitlines()
    assert (
        classes[0] == "item_id,label"
        and classes[8] == f"7,{world.class_names[world.item_class[7]]}"
    )
    attrs = (saved / "attributes.csv").read_text().splitlines()[8].split(",")[1].split("|")
    assert attrs[0] == render.SHAPES[world.item_class[7] % 12] and len(attrs) == 4


def test_tags_csv_is_read_by_read_tags_and_users_csv_as_attributes(world, saved):
    from cfcore.attributes import read_user_attributes
    from cfcore.readers import read_tags

    read = read_tags(saved / "tags.csv")
    drawn = world.tags().data()
    assert (read.n_examples, read.n_applications, read.n_tags) == (
        drawn.n_examples,
        drawn.n_applications,
        drawn.n_tags,
    )
    assert np.array_equal(read.users, drawn.users) and np.array_equal(read.items, drawn.items)
    assert (read.tags != drawn.tags).nnz == 0 and list(read.tag_names) == list(drawn.tag_names)
    users = read_user_attributes(saved / "users.csv")
    assert len(users) == world.n_users and users.n_features == 2  # the focus, one-hot


def test_holdout_splits_items_with_their_views(world, saved):
    test = [int(x) for x in (saved / "test_items.csv").read_text().split()[1:]]
    train = Interactions.load(saved / "train_views.npz")
    assert len(test) == 100 and train.n_items == 300
    assert not set(test) & set(train.item_ids.tolist())
    assert train.nnz == world.views.subset(items=np.setdiff1d(np.arange(400), test)).nnz


def test_labels_are_read_by_the_labels_reader(world, saved):
    from cfcore.labels import read_labels

    classes = read_labels(saved / "classes.csv")
    assert not classes.multilabel and classes.n_classes == 6
    assert classes.class_names == sorted(world.class_names)
    attrs = read_labels(saved / "attributes.csv")
    assert attrs.multilabel and np.all(attrs.matrix.sum(axis=1) == 4)


def test_images_are_read_by_cfvision(world, saved, tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image

    from cfvision.data import load_image_index, prepare_images

    index = load_image_index(saved)  # the world folder itself: images/ inside
    assert len(index) == world.n_items
    with Image.open(index.path(5)) as img:
        assert np.array_equal(np.asarray(img), world.render([5])[0])
    images = prepare_images(index, size=24, cache_dir=tmp_path)
    assert len(images) == world.n_items and not images.report.bad


def test_save_refuses_to_overwrite_unless_asked_and_never_replaces_other_folders(world, tmp_path):
    target = tmp_path / "w"
    world.save(target, images=False)
    assert not (target / "images").exists()
    with pytest.raises(InputError, match="already exists"):
        world.save(target, images=False)
    other = simulate(**TINY, seed=5)
    other.save(target, images=False, overwrite=True)
    assert _same(SimulatedWorld.load(target), other)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a simulated world"):
        world.save(plain, overwrite=True)
    assert (plain / "keep.txt").read_text() == "mine"


def test_an_interrupted_save_leaves_nothing_that_looks_like_a_world(world, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SimulatedWorld, "_write_images", boom)
    with pytest.raises(KeyboardInterrupt):
        world.save(tmp_path / "w")
    assert list(tmp_path.iterdir()) == []
    world.save(tmp_path / "old", images=False)
    with pytest.raises(KeyboardInterrupt):
        world.save(tmp_path / "old", overwrite=True)
    assert _same(SimulatedWorld.load(tmp_path / "old"), world)  # the old world is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_users=0), "n_users must be >= 1"),
        (dict(n_users=2.5), "n_users must be an integer"),
        (dict(noise="lots"), "noise must be a number"),
        (dict(n_items=4, n_classes=5), "every class needs an item"),
        (dict(n_views=10), "smaller than n_users × min_views"),
        (dict(n_users=10, n_items=10, n_views=60), "too dense"),
        (dict(noise=1.5), r"noise must lie in \[0, 1\]"),
        (dict(class_concentration=0.0), "class_concentration must be > 0"),
        (dict(image_size=4), "image_size must be >= 8 pixels"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(popularity_sigma=float("nan")), "popularity_sigma must be finite"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(InputError, match=message):
        simulate(**{**dict(n_users=20, n_items=40, n_views=400), **kwargs})


def test_bad_save_arguments(world, tmp_path):
    with pytest.raises(InputError, match="holdout must lie in"):
        world.save(tmp_path / "w", holdout=1.0)
    with pytest.raises(InputError, match="not a simulated world"):
        SimulatedWorld.load(tmp_path)


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_a_world_and_explains_itself(tmp_path):
    runner = CliRunner()
    out = tmp_path / "w"
    args = ["simulate", str(out), "--users", "100", "--items", "120", "--views", "2000"]
    res = runner.invoke(cli, [*args, "--quiet", "--image-size", "16"])
    assert res.exit_code == 0, res.output
    assert "100 users × 120 items" in res.output and "120 images of 16×16" in res.output
    assert len(list((out / "images").iterdir())) == 120
    assert (out / "test_items.csv").exists()
    res = runner.invoke(cli, [*args, "--quiet"])
    assert res.exit_code == 1 and "already exists" in res.output and "--force" in res.output
    res = runner.invoke(cli, [*args, "--quiet", "--force", "--no-images", "--holdout", "0"])
    assert res.exit_code == 0 and not (out / "images").exists()
    assert not (out / "test_items.csv").exists()
    res = runner.invoke(cli, ["simulate", str(tmp_path / "k"), "--classes", "30", "--quiet"])
    assert res.exit_code == 1 and "1…24" in res.output
    help_text = runner.invoke(cli, ["simulate", "--help"]).output
    assert "cfvision train world/ labels.npz" in help_text and "owners.csv" in help_text
