"""cfvision data: image index, id matching, labels, the uint8 image cache, batches."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from cfcore.errors import InputError  # noqa: E402
from cfcore.io import save_artifact  # noqa: E402
from cfvision.cache import decode_square, find_cache  # noqa: E402
from cfvision.data import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_image_index,
    load_labels,
    match_items,
    prepare_images,
)
from cfvision.loader import (  # noqa: E402
    AugmentSampler,
    CachedImages,
    make_loader,
    to_model_input,
)


def _rgb(seed: int, size=(20, 16)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture()
def image_dir(tmp_path):
    """Six good images plus the quirks of the poster folder and two broken files."""
    d = tmp_path / "img"
    d.mkdir()
    for i in range(6):
        Image.fromarray(_rgb(i)).save(d / f"{i}.png")
    Image.fromarray(_rgb(10)).save(d / "10.jpg", format="PNG")  # PNG data named .jpg
    Image.fromarray(_rgb(11)[..., 0], mode="L").save(d / "11.jpg")  # greyscale
    buf = io.BytesIO()
    Image.fromarray(_rgb(12, (64, 64))).save(buf, format="JPEG")
    (d / "12.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated
    (d / "13.jpg").write_bytes(b"not an image at all")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


# ------------------------------------------------------------------------------ index, ids
def test_index_from_dir_keys_by_stem_with_integer_ids(image_dir):
    index = load_image_index(image_dir)
    assert index.item_ids.dtype == np.int64
    assert sorted(index.item_ids.tolist()) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13]
    assert index.path("10").name == "10.jpg" and index.path(10).name == "10.jpg"
    assert index.positions(["3", 99]).tolist()[1] == -1


def test_index_from_csv_relative_paths_and_string_ids(tmp_path, image_dir):
    table = tmp_path / "index.csv"
    table.write_text("item_id,path\na,img/0.png\nb,img/1.png\n")
    index = load_image_index(table)
    assert index.item_ids.tolist() == ["a", "b"]
    assert index.paths == [image_dir / "0.png", image_dir / "1.png"]
    with pytest.raises(InputError, match="no such file or folder"):
        load_image_index(tmp_path / "nope")


def test_poster_folder_needs_an_explicit_id_space(tmp_path, image_dir):
    posters = tmp_path / "posters"
    (posters / "images").mkdir(parents=True)
    for movie in (1, 2, 3):
        Image.fromarray(_rgb(movie)).save(posters / "images" / f"{movie}.jpg")
    (posters / "poster_index.csv").write_text(
        "movieId,file,ml100k_item_ids\n1,images/1.jpg,1\n2,images/2.jpg,755\n"
        "3,images/3.jpg,573 670\n"
    )
    with pytest.raises(InputError, match="choose --id-space ml-100k .* or --id-space movielens"):
        load_image_index(posters)
    ml100k = load_image_index(posters, "ml-100k")
    assert sorted(ml100k.item_ids.tolist()) == [1, 573, 670, 755]
    assert ml100k.path(573) == ml100k.path(670)  # one poster, two ml-100k ids
    assert load_image_index(posters, "movielens").item_ids.tolist() == [1, 2, 3]
    # labels keyed by ml-100k ids on the movielens space: refused, with what would match
    labels = tmp_path / "l.csv"
    labels.write_text("item_id,label\n1,0\n755,1\n573,0\n670,1\n")
    with pytest.raises(InputError, match=r"only 1 of 4 .*4 as ml-100k ids and 1 as movielens"):
        match_items(load_image_index(posters, "movielens"), load_labels(labels))


# ------------------------------------------------------------------------------ matching
def test_matching_reports_and_refuses_a_low_matched_fraction(tmp_path, image_dir):
    index = load_image_index(image_dir)
    f = tmp_path / "l.csv"
    f.write_text("item_id,label\n1001,0\n1002,1\n")
    with pytest.raises(InputError, match="same dataset"):
        match_items(index, load_labels(f))
    f.write_text("item_id,label\n0,0\n1,1\n2,0\n1001,0\n1002,1\n1003,1\n1004,0\n")
    with pytest.raises(InputError, match=r"only 3 of 7 labelled items \(42.9%\).*--allow-partial"):
        match_items(index, load_labels(f))
    match = match_items(index, load_labels(f), allow_partial=True)
    assert match.n_matched == 3 and match.unmatched.tolist() == [1001, 1002, 1003, 1004]
    assert match.line().startswith("7 labelled items: 3 with an image (42.9%), 4 without")


# ------------------------------------------------------------------------------ labels
def test_labels_csv_single_multi_dataset_and_npz(tmp_path):
    single = tmp_path / "single.csv"
    single.write_text("item_id,label\n1,3\n2,0\n5,3\n")
    lab = load_labels(single)
    assert lab.item_ids.tolist() == [1, 2, 5] and not lab.multilabel
    assert lab.targets.tolist() == [3, 0, 3] and lab.n_classes == 4  # integer classes keep numbers
    multi = tmp_path / "multi.csv"
    multi.write_text("item_id,labels\n1,Action|Comedy\n2,Drama\n3,\n")
    lab = load_labels(multi)
    assert lab.multilabel and lab.class_names == ["Action", "Comedy", "Drama"]
    assert lab.targets.tolist() == [[1, 1, 0], [0, 0, 1]] and lab.n_unlabelled == 1
    npz = tmp_path / "labels.npz"
    save_artifact(
        npz,
        "pseudo-labels",
        {
            "item_ids": np.array([7, 8, 9]),
            "labels": np.array([1, 0, 1]),
            "centroids": np.zeros((3, 4), np.float32),
            "sizes": np.array([1, 2, 0]),
        },
        {"k": 3},
    )
    lab = load_labels(npz)
    assert lab.item_ids.tolist() == [7, 8, 9] and lab.n_classes == 3  # the empty class is kept
    assert lab.targets.dtype == np.int64
    other = tmp_path / "model.npz"
    save_artifact(other, "factor-model", {"item_factors": np.zeros((2, 2), np.float32)})
    with pytest.raises(InputError, match="expected a pseudo-labels file"):
        load_labels(other)
    with pytest.raises(InputError, match="no such file, and not a dataset name"):
        load_labels(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------ cache
def test_bad_images_are_reported_and_skipped(tmp_path, image_dir):
    index = load_image_index(image_dir)
    got = prepare_images(index, [*index.item_ids.tolist(), 99], 16, tmp_path / "c")
    assert sorted(got.item_ids.tolist()) == [0, 1, 2, 3, 4, 5, 10, 11]
    rep = got.report
    assert set(rep.unreadable) == {"12", "13"} and "12.jpg" in rep.unreadable["12"]
    assert set(rep.missing) == {"99"} and rep.converted == {"11": "L"}
    text = "\n".join(rep.lines())
    assert "unreadable 12" in text and "missing    99" in text
    with pytest.raises(InputError, match=r"3 bad image\(s\).*1[23]\.jpg"):
        prepare_images(index, [*index.item_ids.tolist(), 99], 16, tmp_path / "c", "fail")


def test_png_named_jpg_and_greyscale_decode_to_rgb_squares(image_dir):
    png, mode = decode_square(image_dir / "10.jpg", 16)
    assert mode == "RGB" and png.shape == (16, 16, 3) and png.dtype == np.uint8
    # 20 × 16 → short side already 16: the central 16 columns, pixels exact (PNG is lossless)
    assert np.array_equal(png, _rgb(10)[:, 2:18])
    grey, mode = decode_square(image_dir / "11.jpg", 8)
    assert mode == "L" and np.array_equal(grey[..., 0], grey[..., 2])


def test_cache_is_built_once_keyed_by_content_and_memory_mapped(tmp_path, image_dir, monkeypatch):
    from cfvision import cache as image_cache

    cache_dir = tmp_path / "cache"
    index = load_image_index(image_dir)
    first = prepare_images(index, [0, 1, 2, 3], 16, cache_dir)
    assert isinstance(first.cache.images, np.memmap)  # read from disk, never loaded whole
    assert first.cache.images.shape == (4, 16, 16, 3)
    row = first.rows[first.item_ids.tolist().index(2)]
    assert np.array_equal(first.cache.images[row], decode_square(image_dir / "2.png", 16)[0])

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(image_cache, "_decode", no_decoding)
    again = prepare_images(index, [3, 1], 16, cache_dir)  # a subset: served by the same cache
    assert again.cache.folder == first.cache.folder
    moved = tmp_path / "moved"
    image_dir.rename(moved)  # same bytes elsewhere: still a hit
    assert prepare_images(load_image_index(moved), [0, 1], 16, cache_dir).cache.folder == (
        first.cache.folder
    )
    monkeypatch.undo()
    Image.fromarray(_rgb(99)).save(moved / "1.png")  # new bytes: a new cache
    changed = prepare_images(load_image_index(moved), [0, 1], 16, cache_dir)
    assert changed.cache.folder != first.cache.folder
    assert sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".")) == sorted(
        [first.cache.folder.name, changed.cache.folder.name]
    )
    assert not list(cache_dir.glob("*.tmp"))
    assert find_cache(cache_dir, 12, {"0" * 32}) is None  # other sizes never match


_BUILD = """
import sys
from cfvision.data import load_image_index, prepare_images
got = prepare_images(load_image_index(sys.argv[1]), None, 24, sys.argv[2])
print(got.cache.folder.name, len(got))
"""


def test_two_runs_building_the_same_cache_at_once_share_it(tmp_path, image_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD, str(image_dir), str(tmp_path / "c")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0] and outs[0][0].split()[1] == "8"
    folders = [p for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1 and not list((tmp_path / "c").glob("*.tmp"))


# ------------------------------------------------------------------------------ batches
def test_batches_are_uint8_crops_normalised_on_the_device(tmp_path, image_dir):
    index = load_image_index(image_dir)
    got = prepare_images(index, [0, 1, 2, 3, 4, 5], 16, tmp_path / "c")
    ds = CachedImages(got, [5, 0, 2], np.array([7, 8, 9]), crop=12)
    x, y = ds.__getitems__([0, (1, 0, 4, True), 2])
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 3, 12, 12)
    assert x.is_contiguous(memory_format=torch.channels_last)
    square = got.cache.images[got.rows[5]]
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), square[2:14, 2:14])  # centre crop
    flipped = got.cache.images[got.rows[0]][0:12, 4:16][:, ::-1]
    assert np.array_equal(x[1].permute(1, 2, 0).numpy(), flipped)
    assert y.tolist() == [7, 8, 9]
    z = to_model_input(x, torch.device("cpu"))
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    ref = (x.float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert z.dtype == torch.float32 and torch.allclose(z, ref, atol=1e-5)
    with pytest.raises(InputError, match="3 items but 2 targets"):
        CachedImages(got, [5, 0, 2], np.array([1, 2]))


def test_augmentation_is_seeded_by_epoch_and_independent_of_workers(tmp_path, image_dir):
    index = load_image_index(image_dir)
    got = prepare_images(index, [0, 1, 2, 3, 4, 5], 16, tmp_path / "c")
    ds = CachedImages(got, None, np.arange(6), crop=12)

    def epochs(workers, which=(1, 2)):
        base = torch.utils.data.distributed.DistributedSampler(ds, 1, 0, shuffle=True, seed=5)
        sampler = AugmentSampler(base, 16, 12, seed=3)
        loader = make_loader(ds, 4, torch.device("cpu"), sampler=sampler, workers=workers)
        out = []
        for e in which:  # one loader over several epochs (persistent workers when > 0)
            sampler.set_epoch(e)
            out.append([(x.clone(), y.clone()) for x, y in loader])
        return out

    serial, parallel = epochs(0), epochs(2)
    for a, b in zip(serial, parallel, strict=True):
        assert len(a) == 2
        assert all(
            torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
        )
    one, two = serial
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(one, two, strict=True))
    again = epochs(0, which=(2,))[0]  # epoch 2 alone (a resumed run) draws the same crops
    assert all(torch.equal(p[0], q[0]) for p, q in zip(two, again, strict=True))
    offsets = {(t, left) for _, t, left, _ in AugmentSampler(range(200), 16, 12, seed=0)}
    assert offsets == {(t, left) for t in range(5) for left in range(5)}  # every offset occurs


@pytest.mark.realdata
def test_movielens_posters_map_to_both_id_spaces(posters_path):
    index = load_image_index(posters_path, "ml-100k")
    assert len(index) == 1661  # SOURCE.md: 1661 ml-100k items through 1643 posters
    assert index.path(1).name == "1.jpg"  # Toy Story
    assert index.path(573) == index.path(670)  # one poster, two ml-100k ids
    movies = load_image_index(posters_path, "movielens")
    assert len(movies) == 3872
    from cfvision.cache import decode_square as decode

    assert decode(movies.path(1789), 8)[1] == "L"  # greyscale poster
    assert decode(movies.path(3575), 8)[1] == "RGB"  # a PNG named .jpg opens by content


def test_an_unwritable_cache_dir_is_a_clear_error(tmp_path, image_dir):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"  # root may write anywhere: use a path under a file instead
        blocker.write_text("")
        where = blocker / "cache"
    else:
        where = tmp_path / "ro"
        where.mkdir()
        where.chmod(0o500)
    with pytest.raises(InputError, match="cannot write there.*--cache-dir"):
        prepare_images(load_image_index(image_dir), [0, 1], 16, where)
