"""Readers: every supported format, the binary view, and bad input that names file:line."""

from __future__ import annotations

import numpy as np
import pytest

from cfcore.errors import InputError, ModelFormatError
from cfcore.interactions import Interactions
from cfcore.readers import guess_format, read_interactions

# (user, item, rating): user 7 rates item 3 twice (duplicate pair), user 9 only dislikes
ROWS = [(7, 3, 5), (7, 4, 2), (8, 3, 4), (7, 3, 1), (9, 5, 1), (8, 6, 4.5)]
PAIRS = {(7, 3), (7, 4), (8, 3), (9, 5), (8, 6)}


def _pairs(inter: Interactions) -> set[tuple]:
    coo = inter.user_items.tocoo()
    return {
        (inter.user_ids[r].item(), inter.item_ids[c].item())
        for r, c in zip(coo.row, coo.col, strict=True)
    }


def _write(path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def files(tmp_path):
    """The same ratings in each MovieLens layout."""
    out = {}
    out["u.data"] = tmp_path / "u.data"
    _write(out["u.data"], [f"{u}\t{i}\t{r}\t88125000{k}" for k, (u, i, r) in enumerate(ROWS)])
    out["ratings.dat"] = tmp_path / "ratings.dat"
    _write(out["ratings.dat"], [f"{u}::{i}::{r}::88125000{k}" for k, (u, i, r) in enumerate(ROWS)])
    out["ratings.csv"] = tmp_path / "ratings.csv"
    _write(
        out["ratings.csv"],
        ["userId,movieId,rating,timestamp"]
        + [f"{u},{i},{r},88125000{k}" for k, (u, i, r) in enumerate(ROWS)],
    )
    return out


@pytest.mark.parametrize("name", ["u.data", "ratings.dat", "ratings.csv"])
def test_movielens_formats_read_to_the_same_binary_views(files, name):
    inter = read_interactions(files[name])
    assert inter.user_ids.tolist() == [7, 8, 9]
    assert inter.item_ids.tolist() == [3, 4, 5, 6]
    assert inter.user_ids.dtype == np.int64
    assert _pairs(inter) == PAIRS  # duplicate (7, 3) collapsed to one
    assert inter.nnz == 5
    np.testing.assert_array_equal(inter.user_items.data, 1.0)


@pytest.mark.parametrize("name", ["u.data", "ratings.dat", "ratings.csv"])
def test_min_rating_keeps_only_likes(files, name):
    likes = read_interactions(files[name], min_rating=4)
    # duplicates: (7, 3) rated 5 and 1 -> a 5 counts, so the pair is kept
    assert _pairs(likes) == {(7, 3), (8, 3), (8, 6)}
    assert likes.user_ids.tolist() == [7, 8]  # user 9 liked nothing


def test_explicit_format_overrides_the_name(tmp_path, files):
    other = tmp_path / "whatever.txt"
    other.write_bytes(files["u.data"].read_bytes())
    with pytest.raises(InputError, match="cannot guess the format"):
        read_interactions(other)
    assert _pairs(read_interactions(other, "movielens-100k")) == PAIRS
    with pytest.raises(InputError, match="unknown format 'xml'"):
        read_interactions(other, "xml")


def test_guess_format():
    assert guess_format("a/u.data") == "movielens-100k"
    assert guess_format("u1.base") == "movielens-100k"
    assert guess_format("ua.test") == "movielens-100k"
    assert guess_format("ratings.dat") == "movielens-dat"
    assert guess_format("ratings.csv") == "movielens-csv"
    assert guess_format("views.csv") == "csv"
    assert guess_format("views.TSV") == "tsv"
    assert guess_format("v.parquet") == "parquet"
    assert guess_format("v.npz") == "npz"


def test_generic_csv_with_header_and_string_ids(tmp_path):
    path = tmp_path / "views.csv"
    _write(path, ["item,customer,when", "shoe,ann,1", "hat,bob,2", "shoe,bob,3", "shoe,ann,4"])
    inter = read_interactions(path, user_col="customer", item_col="item")
    assert inter.user_ids.tolist() == ["ann", "bob"]
    assert inter.item_ids.tolist() == ["hat", "shoe"]
    assert _pairs(inter) == {("ann", "shoe"), ("bob", "hat"), ("bob", "shoe")}


def test_columns_chosen_by_name_imply_a_header(tmp_path):
    path = tmp_path / "log.csv"
    _write(path, ["when,buyer,product", "1,ann,shoe", "2,bob,hat"])
    inter = read_interactions(path, user_col="buyer", item_col="product")
    assert _pairs(inter) == {("ann", "shoe"), ("bob", "hat")}
    # no well-known names and no options: every line is data, columns 0 and 1
    plain = read_interactions(path)
    assert "when" in plain.user_ids.tolist() and plain.nnz == 3


def test_generic_csv_header_detected_from_well_known_names(tmp_path):
    path = tmp_path / "views.csv"
    _write(path, ["user_id,item_id,score", "u1,a,0.5", "u2,b,3"])
    inter = read_interactions(path, min_rating=1)
    assert _pairs(inter) == {("u2", "b")}


def test_generic_tsv_without_header_by_position(tmp_path):
    path = tmp_path / "log.tsv"
    _write(path, ["2024\tu1\ti9\t1", "2024\tu2\ti9\t0", "2025\tu1\ti8\t3"])
    inter = read_interactions(
        path, header=False, user_col=1, item_col=2, rating_col=3, min_rating=1
    )
    assert _pairs(inter) == {("u1", "i9"), ("u1", "i8")}
    # the first line is data, not a header, when header=False
    plain = read_interactions(path, header=False, user_col=1, item_col=2)
    assert plain.nnz == 3


def test_generic_csv_custom_separator_and_forced_header(tmp_path):
    path = tmp_path / "x.csv"
    _write(path, ["a;b", "1;2", "1;3"])
    inter = read_interactions(path, sep=";", header=True)
    assert inter.user_ids.tolist() == [1] and inter.item_ids.tolist() == [2, 3]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "views.parquet"
    pq.write_table(
        pa.table(
            {"UserId": ["a", "b", "a", "a"], "itemId": [1, 2, 2, 2], "rating": [1.0, 5.0, 4.0, 4.5]}
        ),
        path,
    )
    inter = read_interactions(path)
    assert inter.user_ids.tolist() == ["a", "b"] and inter.item_ids.tolist() == [1, 2]
    assert inter.nnz == 3
    assert _pairs(read_interactions(path, min_rating=4)) == {("b", 2), ("a", 2)}
    by_pos = read_interactions(path, user_col=1, item_col=0)
    assert by_pos.user_ids.tolist() == [1, 2]
    with pytest.raises(InputError, match="no column 'nope'"):
        read_interactions(path, user_col="nope")
    with pytest.raises(InputError, match="no column 7"):
        read_interactions(path, item_col=7)
    pq.write_table(
        pa.table({"user": ["a"], "item": [1], "rating": [np.nan]}), tmp_path / "n.parquet"
    )
    with pytest.raises(InputError, match="n.parquet: row 0: rating is not a finite number"):
        read_interactions(tmp_path / "n.parquet")
    (tmp_path / "bad.parquet").write_text("hello")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_interactions(tmp_path / "bad.parquet")


def test_own_npz_roundtrip(tmp_path, files):
    inter = read_interactions(files["u.data"])
    path = inter.save(tmp_path / "views.npz")
    back = read_interactions(path)
    assert _pairs(back) == PAIRS
    with pytest.raises(InputError, match="min_rating does not apply"):
        read_interactions(path, min_rating=3)
    np.savez(tmp_path / "other.npz", user_factors=np.zeros((2, 2)))
    with pytest.raises(ModelFormatError, match="another tool"):
        read_interactions(tmp_path / "other.npz")


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "name, lines, message",
    [
        ("u.data", ["1\t2\t5\t0", "1\t3"], r"u.data:2: expected at least 3 fields"),
        ("u.data", ["1\t2"], r"u.data:1: expected at least 3 fields"),
        ("u.data", ["1\t2\t5\t0", "1\t3\t5\t0\t9"], r"u.data:2: expected 4 fields .*got 5"),
        (
            "u.data",
            ["1\t2\t5\t0", "", "abc\t3\t4\t0"],
            r"u.data:3: user id 'abc' is not an integer",
        ),
        ("u.data", ["1\t2\t5\t0", "1\t2.5\t4\t0"], r"u.data:2: item id '2.5' is not an integer"),
        ("u.data", ["1\t2\t5\t0", "2\t3\tnan\t0"], r"u.data:2: rating is 'nan'"),
        ("u.data", ["1\t2\t5\t0", "2\t3\t\t0"], r"u.data:2: rating '' is not a number"),
        ("u.data", ["1\t2\tinf\t0"], r"u.data:1: rating is 'inf'"),
        (
            "ratings.dat",
            ["1::2::5::0", "1::x::4::0"],
            r"ratings.dat:2: item id 'x' is not an integer",
        ),
        ("ratings.dat", ["1::2::5::0", "1:3:4:0"], r"ratings.dat:2: expected at least 3 fields"),
        (
            "ratings.csv",
            ["userId,movieId,rating,timestamp", "1,2,5,0", "u,3,4,0"],
            r"ratings.csv:3: user id 'u' is not an integer",
        ),
        (
            "ratings.csv",
            ["userId,movieId,rating,timestamp", "1,2,NaN,0"],
            r"ratings.csv:2: rating is 'NaN'",
        ),
        (
            "views.csv",
            ["user,item,rating", "a,b,1", "a,c,x"],
            r"views.csv:3: rating 'x' is not a number",
        ),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, name, lines, message):
    path = tmp_path / name
    _write(path, lines)
    with pytest.raises(InputError, match=message):
        read_interactions(path)


@pytest.mark.parametrize("name", ["u.data", "ratings.dat", "ratings.csv", "x.csv", "x.tsv"])
@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_files(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match="empty file"):
        read_interactions(path)


def test_header_only_file(tmp_path):
    path = tmp_path / "ratings.csv"
    _write(path, ["userId,movieId,rating,timestamp"])
    with pytest.raises(InputError, match="no data lines"):
        read_interactions(path)


def test_unknown_columns(tmp_path):
    path = tmp_path / "v.csv"
    _write(path, ["user,item", "a,b"])
    with pytest.raises(InputError, match="no column 'who' for users"):
        read_interactions(path, user_col="who")
    with pytest.raises(InputError, match="no column 'stars' for ratings"):
        read_interactions(path, rating_col="stars")
    with pytest.raises(InputError, match="no column 5 for items"):
        read_interactions(path, item_col=5)
    with pytest.raises(InputError, match="no rating column"):
        read_interactions(path, min_rating=3)
    wrong = tmp_path / "ratings.csv"  # named like MovieLens but laid out differently
    _write(wrong, ["user,item,rating", "1,2,3"])
    with pytest.raises(InputError, match="no column 'userId'"):
        read_interactions(wrong)


def test_directory_or_missing_file(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_interactions(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        read_interactions(tmp_path / "u.data")


def test_nothing_left_after_threshold(tmp_path, files):
    with pytest.raises(InputError, match=r"u.data: no interactions left with rating >= 6"):
        read_interactions(files["u.data"], min_rating=6)


# ---------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_ml100k_reads_to_943_by_1682(ml100k_path):
    inter = read_interactions(ml100k_path / "u.data")
    assert inter.shape == (943, 1682)
    assert inter.nnz == 100000
    assert inter.user_ids.tolist() == list(range(1, 944))
    assert inter.item_ids.tolist() == list(range(1, 1683))
    assert inter.user_activity().min() == 20  # every ml-100k user rated at least 20 movies
    likes = read_interactions(ml100k_path / "u.data", min_rating=4)
    assert likes.nnz == 34174 + 21201  # ratings 4 and 5 (README counts)
    base = read_interactions(ml100k_path / "u1.base")
    assert base.nnz == 80000


@pytest.mark.realdata
def test_ml_latest_small_has_610_users(ml_latest_small_path):
    inter = read_interactions(ml_latest_small_path / "ratings.csv")
    assert inter.n_users == 610
    assert inter.n_items == 9724
    assert inter.nnz == 100836


def test_utf8_byte_order_mark(tmp_path):
    path = tmp_path / "ratings.csv"  # as saved by spreadsheet programs
    path.write_bytes(b"\xef\xbb\xbfuserId,movieId,rating,timestamp\n1,2,5,0\n")
    assert _pairs(read_interactions(path)) == {(1, 2)}
    tab = tmp_path / "u.data"
    tab.write_bytes(b"\xef\xbb\xbf1\t2\t5\t0\n3\t4\t5\t0\n")
    assert _pairs(read_interactions(tab)) == {(1, 2), (3, 4)}


def test_header_without_a_user_column_is_a_clear_error(tmp_path):
    # a labels file (item_id,label) passed where interactions are expected
    path = tmp_path / "labels.csv"
    path.write_text("item_id,label\n1,3\n2,4\n")
    with pytest.raises(InputError, match="user, item and rating columns must differ"):
        read_interactions(path)


# ---------------------------------------------------------------------------- integer ids
def test_integer_ids_in_text_stay_integers_in_natural_order(tmp_path):
    path = tmp_path / "views.csv"
    _write(path, ["user_id,item_id", "10,100", "2,7", "-3,100", "10,20", "0,7"])
    inter = read_interactions(path)
    assert inter.user_ids.dtype == np.int64 and inter.item_ids.dtype == np.int64
    assert inter.user_ids.tolist() == [-3, 0, 2, 10]  # numeric, not "-3" < "0" < "10" < "2"
    assert inter.item_ids.tolist() == [7, 20, 100]
    assert _pairs(inter) == {(10, 100), (2, 7), (-3, 100), (10, 20), (0, 7)}
    assert inter.user_index("10").tolist() == [3]  # text on a command line finds the integer


@pytest.mark.parametrize("odd", ["007", "+7", "7.00", "u7", "1e3", "-0", "7.5"])
def test_a_column_with_any_id_that_is_not_plainly_an_integer_keeps_its_text(tmp_path, odd):
    path = tmp_path / "views.csv"
    _write(path, ["user_id,item_id", "7,1", f"{odd},2", "10,1"])
    inter = read_interactions(path)
    assert inter.user_ids.dtype.kind == "U"  # the user's text, not a lossy integer
    assert sorted(inter.user_ids.tolist()) == sorted({"7", odd, "10"})
    assert inter.item_ids.dtype == np.int64  # each column decides for itself


def test_spreadsheet_integers_and_padding_count_as_integers(tmp_path):
    path = tmp_path / "views.csv"
    _write(path, ["user_id,item_id", "7.0,1", " 10 ,2", "-3,1"])
    inter = read_interactions(path)
    assert inter.user_ids.dtype == np.int64 and inter.user_ids.tolist() == [-3, 7, 10]


@pytest.mark.parametrize(
    "ids",
    [
        ["7", "10", "-3", "0"],
        ["7.0", " 10", "2 ", "-3.0"],
        ["007", "1"],
        ["+7", "1"],
        ["-0", "1"],
        ["7.00", "1"],
        ["1e3", "1"],
        ["a", "1"],
        ["", "1"],
        ["9223372036854775807", "1"],
    ],
)
def test_the_reader_and_parse_ids_follow_one_rule(ids):
    import pyarrow as pa

    from cfcore.ids import parse_ids, parse_integer_text

    vectorised = parse_integer_text(pa.array(ids, type=pa.string()))
    python = parse_ids(ids)
    if vectorised is None:
        assert python.dtype.kind == "U", ids
    else:
        assert python.dtype == np.int64 and python.tolist() == vectorised.tolist(), ids


@pytest.mark.parametrize("merge_rows", [1 << 20, 5000])
def test_a_text_id_after_many_integer_batches_turns_the_column_to_text(
    tmp_path, monkeypatch, merge_rows
):
    from cfcore.readers import _IdColumn

    monkeypatch.setattr(_IdColumn, "MERGE_ROWS", merge_rows)  # batches merged, or not yet
    # the reader streams the file in blocks; the first non-integer id is far past the first
    n = 60_000
    path = tmp_path / "views.csv"
    _write(path, ["user_id,item_id"] + [f"{k},{k % 97}" for k in range(n)] + ["alice,5"])
    inter = read_interactions(path)
    assert inter.user_ids.dtype.kind == "U" and inter.n_users == n + 1
    assert {"alice", "0", "59999"} <= set(inter.user_ids.tolist())
    assert inter.item_ids.dtype == np.int64 and inter.nnz == n + 1


def test_parquet_ids_integer_text_and_typed(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "v.parquet"
    table = pa.table(
        {
            "user_id": pa.array(["10", "2", "10"]),
            "item_id": pa.array([5, 3, 3], type=pa.int32()),
            "rating": pa.array([1, 2, 3], type=pa.int8()),
        }
    )
    pq.write_table(table, path)
    inter = read_interactions(path, min_rating=2)
    assert inter.user_ids.tolist() == [2, 10] and inter.user_ids.dtype == np.int64
    assert inter.item_ids.tolist() == [3] and inter.item_ids.dtype == np.int64
    pq.write_table(pa.table({"user_id": [1.5, 2.0], "item_id": [1, 2]}), path)
    with pytest.raises(InputError, match="ids must be integers or text"):
        read_interactions(path)


def test_empty_ids_name_the_line(tmp_path):
    path = tmp_path / "views.csv"
    _write(path, ["user_id,item_id", "a,1", ",2"])
    with pytest.raises(InputError, match=r"views.csv:3: empty user id"):
        read_interactions(path)


# ---------------------------------------------------------------------------- duplicates
@pytest.mark.parametrize("name", ["u.data", "ratings.dat", "ratings.csv"])
def test_duplicate_rows_are_counted(files, name):
    inter = read_interactions(files[name])
    assert inter.n_duplicates == 1  # (7, 3) twice
    assert "1 duplicate row counted once" in repr(inter)
    assert read_interactions(files[name], min_rating=4).n_duplicates == 0  # (7, 3) liked once


# ---------------------------------------------------------------------------- streaming
def test_multi_character_separators_are_replaced_block_by_block(tmp_path):
    from cfcore.readers import _SeparatorStream

    text = b"".join(b"%d::%d::5::88\n" % (k, k * 7) for k in range(300))
    path = tmp_path / "ratings.dat"
    path.write_bytes(text)
    for block in (1, 2, 3, 7, 64, 1 << 22):  # separators split across every block boundary
        stream = _SeparatorStream(path, b"::", b"\x1f", block=block)
        out = b""
        while chunk := stream.read(5):
            out += chunk
        stream.close()
        assert out == text.replace(b"::", b"\x1f")


@pytest.mark.parametrize("merge_rows", [1 << 20, 7000])
def test_large_files_read_the_same_as_the_rows_say(tmp_path, monkeypatch, merge_rows):
    """Many blocks, every format: the same pairs and ids as building them directly."""
    from cfcore.readers import _IdColumn

    monkeypatch.setattr(_IdColumn, "MERGE_ROWS", merge_rows)
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(5)
    n = 120_000
    users, items = rng.integers(1, 5000, n), rng.integers(1, 3000, n)
    expected = Interactions.from_pairs(users, items)
    lines = [f"{u}\t{i}\t4\t881250949" for u, i in zip(users, items, strict=True)]
    _write(tmp_path / "u.data", lines)
    _write(tmp_path / "ratings.dat", [line.replace("\t", "::") for line in lines])
    _write(
        tmp_path / "v.csv",
        ["user_id,item_id"] + [f"{u},{i}" for u, i in zip(users, items, strict=True)],
    )
    pq.write_table(pa.table({"user_id": users, "item_id": items}), tmp_path / "v.parquet")
    for name in ("u.data", "ratings.dat", "v.csv", "v.parquet"):
        inter = read_interactions(tmp_path / name)
        np.testing.assert_array_equal(inter.user_ids, expected.user_ids)
        np.testing.assert_array_equal(inter.item_ids, expected.item_ids)
        assert (inter.user_items != expected.user_items).nnz == 0
        assert inter.n_duplicates == expected.n_duplicates > 0
