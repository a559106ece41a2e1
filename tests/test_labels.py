"""cfcore.labels: one reader for item categories (CSV, movies.csv, movies.dat, u.item, names)."""

from __future__ import annotations

import numpy as np
import pytest

from cfcore.errors import InputError
from cfcore.ids import parse_ids
from cfcore.labels import read_labels


def test_parse_ids_keeps_integers_integer_and_strings_strings():
    assert parse_ids(["7", " 10", "2.0", "-3"]).tolist() == [7, 10, 2, -3]
    assert parse_ids(["7", "10"]).dtype == np.int64
    mixed = parse_ids(["7", "a7"])
    assert mixed.dtype.kind == "U" and mixed.tolist() == ["7", "a7"]
    assert parse_ids(["1_000", "2"]).dtype.kind == "U"  # Python's int() would accept 1_000
    assert parse_ids(["1.5"]).dtype.kind == "U"
    assert parse_ids(np.array([3, 4], dtype=np.int32)).dtype == np.int64


def test_csv_with_header_multi_label(tmp_path):
    f = tmp_path / "genres.csv"
    f.write_text("item_id,labels\n10,Action|Comedy\n2,Drama\n7,\n3, Comedy | Action |\n")
    lab = read_labels(f)
    assert lab.item_ids.tolist() == [10, 2, 7, 3] and lab.item_ids.dtype == np.int64
    assert lab.class_names == ["Action", "Comedy", "Drama"]
    assert lab.matrix.dtype == np.uint8
    assert lab.matrix.tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0], [1, 1, 0]]
    assert lab.multilabel and lab.labelled().tolist() == [True, True, False, True]
    assert lab.class_counts().tolist() == [2, 2, 1]
    assert lab.positions(["3", 10, 99]).tolist() == [3, 0, -1]  # text ids find integer ids


def test_csv_columns_chosen_by_name_or_position_and_tabs(tmp_path):
    f = tmp_path / "photos.tsv"
    f.write_text("photo\ttitle\ttags\nab1\tx\tsky;sea\nab2\ty\tsea\n")
    with pytest.raises(InputError, match="no item id column.*--item-col"):
        read_labels(f)
    lab = read_labels(f, item_col="photo", labels_col="tags", sep=";")
    assert lab.item_ids.tolist() == ["ab1", "ab2"] and lab.item_ids.dtype.kind == "U"
    assert lab.class_names == ["sea", "sky"] and lab.matrix.tolist() == [[1, 1], [1, 0]]
    same = read_labels(f, item_col=0, labels_col=2, sep=";")
    assert np.array_equal(same.matrix, lab.matrix)
    with pytest.raises(InputError, match="no column 'genre' \\(columns: photo, title, tags\\)"):
        read_labels(f, item_col="photo", labels_col="genre")


def test_single_label_csv_keeps_integer_class_numbers(tmp_path):
    f = tmp_path / "labels.csv"  # what `cfcore cluster` writes beside its .npz
    f.write_text("item_id,label\n1,3\n2,0\n5,3\n")
    lab = read_labels(f)
    assert not lab.multilabel and lab.class_names == ["0", "1", "2", "3"]  # 1 and 2 empty
    assert lab.classes().tolist() == [3, 0, 3]
    words = tmp_path / "words.csv"
    words.write_text("item_id,class\na,dog\nb,cat\n")
    assert read_labels(words).classes().tolist() == [1, 0]
    empty = tmp_path / "empty_label.csv"
    empty.write_text("item_id,label\n1,3\n2,\n")
    with pytest.raises(InputError, match=r"empty_label\.csv:3: item '2' has no label"):
        read_labels(empty)
    multi = tmp_path / "m.csv"
    multi.write_text("item_id,labels\n1,a|b\n")
    with pytest.raises(InputError, match="has 2 classes; single-label data needs exactly one"):
        read_labels(multi).classes()


def test_movielens_movies_csv_and_dat(tmp_path):
    csv_file = tmp_path / "movies.csv"
    csv_file.write_text(
        "movieId,title,genres\n"
        '1,"Toy Story, the (1995)",Adventure|Animation\n'
        "2,Unknown Thing (2001),(no genres listed)\n"
        "3,Heat (1995),Action|Crime|Thriller\n"
    )
    lab = read_labels(csv_file)
    assert lab.class_names == ["Action", "Adventure", "Animation", "Crime", "Thriller"]
    assert lab.labelled().tolist() == [True, False, True]  # the placeholder is no genre
    dat = tmp_path / "movies.dat"
    dat.write_bytes(
        "1::Toy Story (1995)::Animation|Children's\n2::Cité des enfants (1995)::Drama\n".encode(
            "latin-1"
        )
    )
    lab = read_labels(dat)
    assert lab.item_ids.tolist() == [1, 2]
    assert lab.class_names == ["Animation", "Children's", "Drama"]
    bad = tmp_path / "bad.dat"
    bad.write_text("1::Toy Story (1995)\n")
    with pytest.raises(InputError, match=r"bad\.dat:1: expected movieId::title::genres"):
        read_labels(bad)


def test_u_item_flags_with_u_genre_names(tmp_path):
    (tmp_path / "u.genre").write_text("unknown|0\nAction|1\nDrama|2\n\n")
    (tmp_path / "u.item").write_bytes(
        "1|A (1995)|01-Jan-1995||http://x|0|1|1\n"
        "2|B (1995)|01-Jan-1995||http://x|1|0|0\n"
        "3|Café (1995)|01-Jan-1995||http://x|0|0|1\n".encode("latin-1")
    )
    lab = read_labels(tmp_path / "u.item")
    assert lab.class_names == ["Action", "Drama"]  # "unknown" is not a genre
    assert lab.matrix.tolist() == [[1, 1], [0, 0], [0, 1]]
    assert read_labels(tmp_path).class_names == ["Action", "Drama"]  # the folder works too
    (tmp_path / "u.item").write_text("1|A|d||u|0|1\n")
    with pytest.raises(InputError, match=r"u\.item:1: expected 8 '\|'-separated fields"):
        read_labels(tmp_path / "u.item")
    (tmp_path / "u.genre").unlink()
    with pytest.raises(InputError, match="u.genre beside it"):
        read_labels(tmp_path / "u.item")


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(InputError, match="no such file, and not a dataset name"):
        read_labels(tmp_path / "nope.csv")
    dup = tmp_path / "dup.csv"
    dup.write_text("item_id,labels\n1,a\n2,b\n1,c\n")
    with pytest.raises(InputError, match=r"item 1 is listed more than once \(lines 2 and 4\)"):
        read_labels(dup)
    none = tmp_path / "none.csv"
    none.write_text("item_id,labels\n1,\n2,\n")
    with pytest.raises(InputError, match="no item has a label"):
        read_labels(none)
    short = tmp_path / "short.csv"
    short.write_text("item_id,title,labels\n1,x,a\n2\n")
    with pytest.raises(InputError, match=r"short\.csv:3: expected 3 fields"):
        read_labels(short)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty labels file"):
        read_labels(tmp_path / "empty.csv")
    binary = tmp_path / "model.npz"
    binary.write_bytes(b"PK\x03\x04\0\0binary")
    with pytest.raises(InputError, match="a binary file"):
        read_labels(binary)


def test_to_csv_round_trips(tmp_path):
    f = tmp_path / "in.csv"
    f.write_text('item_id,labels\nx,"a,b|c"\ny,\nz,c\n')
    lab = read_labels(f)
    back = read_labels(lab.to_csv(tmp_path / "out.csv"))
    assert back.item_ids.tolist() == ["x", "y", "z"] and back.class_names == lab.class_names
    assert np.array_equal(back.matrix, lab.matrix)
    s = tmp_path / "s.csv"
    s.write_text("item_id,label\n1,2\n2,0\n")
    single = read_labels(read_labels(s).to_csv(tmp_path / "s2.csv"))
    assert not single.multilabel and single.classes().tolist() == [2, 0]


@pytest.mark.realdata
def test_movielens_datasets_by_name(ml100k_path, ml_latest_small_path):
    lab = read_labels("ml-100k", data_dir=ml100k_path.parent)
    assert lab.matrix.shape == (1682, 18) and lab.item_ids.tolist() == list(range(1, 1683))
    toy = lab.matrix[lab.positions([1])[0]]
    assert [n for n, f in zip(lab.class_names, toy, strict=True) if f] == [
        "Animation",
        "Children's",
        "Comedy",
    ]
    assert (~lab.labelled()).sum() == 2  # the two items flagged only "unknown"
    small = read_labels("ml-latest-small", data_dir=ml_latest_small_path.parent)
    assert small.n_items == 9742 and "(no genres listed)" not in small.class_names
    assert small.class_counts()[small.class_names.index("Drama")] == 4361
