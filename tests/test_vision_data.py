"""cfvision data: image index, bad images, labels, transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from cfcore.errors import InputError  # noqa: E402
from cfcore.io import save_artifact  # noqa: E402
from cfvision.data import (  # noqa: E402
    ItemImageDataset,
    check_images,
    eval_transform,
    load_image_index,
    load_labels,
    match_items,
    open_rgb,
    train_transform,
)


def _rgb(seed: int, size=(20, 16)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture()
def image_dir(tmp_path):
    """Six good JPEGs plus the quirks of the poster folder and two broken files."""
    d = tmp_path / "img"
    d.mkdir()
    for i in range(6):
        Image.fromarray(_rgb(i)).save(d / f"{i}.jpg")
    Image.fromarray(_rgb(10)).save(d / "10.jpg", format="PNG")  # PNG data named .jpg
    Image.fromarray(_rgb(11)[..., 0], mode="L").save(d / "11.jpg")  # greyscale
    buf = io.BytesIO()
    Image.fromarray(_rgb(12, (64, 64))).save(buf, format="JPEG")
    (d / "12.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated
    (d / "13.jpg").write_bytes(b"not an image at all")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def test_index_from_dir_keys_by_stem(image_dir):
    index = load_image_index(image_dir)
    assert set(index) == {"0", "1", "2", "3", "4", "5", "10", "11", "12", "13"}


def test_bad_images_are_reported_and_skipped(image_dir):
    index = load_image_index(image_dir)
    report = check_images(index, [*index, "99"], "skip")
    assert set(report.ok) == {"0", "1", "2", "3", "4", "5", "10", "11"}
    assert set(report.unreadable) == {"12", "13"}
    assert "12.jpg" in report.unreadable["12"]
    assert set(report.missing) == {"99"}
    assert report.converted == {"11": "L"}
    text = "\n".join(report.lines())
    assert "unreadable 12" in text and "missing    99" in text


def test_bad_images_fail_names_the_files(image_dir):
    index = load_image_index(image_dir)
    with pytest.raises(InputError, match=r"2 bad image\(s\).*1[23]\.jpg"):
        check_images(index, None, "fail")


def test_png_named_jpg_and_greyscale_open_as_rgb(image_dir):
    png = open_rgb(image_dir / "10.jpg")
    grey = open_rgb(image_dir / "11.jpg")
    assert png.mode == grey.mode == "RGB"
    assert np.array_equal(np.asarray(png), _rgb(10))  # PNG is lossless: exact pixels
    g = np.asarray(grey)
    assert g.shape == (16, 20, 3) and np.array_equal(g[..., 0], g[..., 2])


def test_index_from_csv_relative_paths(tmp_path, image_dir):
    table = tmp_path / "index.csv"
    table.write_text("item_id,path\na,img/0.jpg\nb,img/1.jpg\n")
    index = load_image_index(table)
    assert index == {"a": image_dir / "0.jpg", "b": image_dir / "1.jpg"}
    with pytest.raises(InputError, match="no such file or folder"):
        load_image_index(tmp_path / "nope")


def test_labels_csv_single_multi_and_npz(tmp_path):
    single = tmp_path / "single.csv"
    single.write_text("item_id,label\n1,3\n2,0\n5,3\n")
    lab = load_labels(single)
    assert lab.item_ids == ["1", "2", "5"] and not lab.multilabel
    assert lab.targets.tolist() == [3, 0, 3] and lab.n_classes == 4  # integer classes keep numbers
    multi = tmp_path / "multi.csv"
    multi.write_text("item_id,labels\n1,Action|Comedy\n2,Drama\n3,\n")
    lab = load_labels(multi)
    assert lab.multilabel and lab.class_names == ["Action", "Comedy", "Drama"]
    assert lab.targets.tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]
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
    assert (
        lab.item_ids == ["7", "8", "9"] and lab.n_classes == 3
    )  # K from the file, empty class kept
    assert lab.targets.dtype == np.int64


def test_labels_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,label\n1,2\n2\n")
    with pytest.raises(InputError, match=r"bad\.csv:3"):
        load_labels(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("item_id,label\n1,2\n1,3\n")
    with pytest.raises(InputError, match="more than once"):
        load_labels(dup)
    with pytest.raises(InputError, match="no such file"):
        load_labels(tmp_path / "missing.csv")
    other = tmp_path / "model.npz"
    save_artifact(other, "factor-model", {"item_factors": np.zeros((2, 2), np.float32)})
    with pytest.raises(InputError, match="no item_ids/labels"):
        load_labels(other)


def test_label_image_id_mismatch_is_an_error(tmp_path, image_dir):
    lab_file = tmp_path / "l.csv"
    lab_file.write_text("item_id,label\n1001,0\n1002,1\n")
    with pytest.raises(InputError, match="same dataset"):
        match_items(load_image_index(image_dir), load_labels(lab_file))


def test_transforms_sized_by_image_size(image_dir):
    index = load_image_index(image_dir)
    img = open_rgb(index["0"])
    assert tuple(train_transform(12)(img).shape) == (3, 12, 12)
    a, b = eval_transform(12)(img), eval_transform(12)(img)
    assert tuple(a.shape) == (3, 12, 12) and bool((a == b).all())  # eval is deterministic
    ds = ItemImageDataset(["0", "10", "11"], index, np.array([0, 1, 2]), eval_transform(8))
    x, y = ds[2]
    assert tuple(x.shape) == (3, 8, 8) and int(y) == 2


@pytest.mark.realdata
def test_movielens_posters_map_to_ml100k_ids(posters_path):
    index = load_image_index(posters_path, "ml-100k")
    assert len(index) == 1661  # SOURCE.md: 1661 ml-100k items through 1643 posters
    assert index["1"].name == "1.jpg"  # Toy Story
    assert index["573"] == index["670"]  # one poster, two ml-100k ids
    movies = load_image_index(posters_path, "movielens")
    assert len(movies) == 3872
    report = check_images(movies, ["3575", "1789"], "fail")
    assert report.converted == {"1789": "L"}  # 3575 is a PNG named .jpg and opens as RGB
