"""Tag data (cfcore.tagdata, cfcore.readers.read_tags) and user attributes (cfcore.attributes)."""

from __future__ import annotations

import numpy as np
import pytest

from cfcore.attributes import AttributeEncoder, read_user_attributes
from cfcore.errors import InputError
from cfcore.readers import read_table, read_tags
from cfcore.tagdata import TagData, synthetic_tags


def _data() -> TagData:
    # user, item, tag: "a" on 4 examples, "b" on 3, "c" on 2, "d" on 1
    triples = [
        (1, 10, "a"), (1, 10, "b"), (1, 11, "a"), (2, 10, "a"), (2, 12, "c"),
        (3, 11, "a"), (3, 11, "b"), (3, 12, "b"), (3, 12, "c"), (3, 13, "D "),
    ]  # fmt: skip
    u, i, t = zip(*triples, strict=True)
    return TagData.from_applications(np.array(u), np.array(i), list(t))


# ---------------------------------------------------------------------------- TagData
def test_applications_group_into_examples_with_columns_by_frequency():
    d = _data()
    assert d.n_examples == 7 and d.n_applications == 10
    assert d.tag_names.tolist() == ["a", "b", "c", "d"]  # normalised, most frequent first
    np.testing.assert_array_equal(d.tag_counts(), [4, 3, 2, 1])
    row = np.flatnonzero((d.users == 3) & (d.items == 12))[0]
    assert sorted(d.tag_names[d.tags[row].indices]) == ["b", "c"]


def test_top_tags_keeps_the_most_frequent_and_drops_examples_left_without_a_tag():
    d = _data().top_tags(2)
    assert d.tag_names.tolist() == ["a", "b"]
    assert d.n_examples == 5  # (2, 12) had only "c", (3, 13) only "d"
    with pytest.raises(InputError, match="vocabulary size"):
        _data().top_tags(0)


def test_balanced_caps_the_top_tags_at_the_next_ones_frequency():
    d = _data().balanced(top=2, seed=0)
    counts = dict(zip(d.tag_names, d.tag_counts(), strict=True))
    assert counts == {"a": 2, "b": 2, "c": 2, "d": 1}
    assert _data().balanced(top=10).n_applications == 10  # nothing to cap
    again = _data().balanced(top=2, seed=0)
    assert (again.tags != d.tags).nnz == 0 and np.array_equal(again.users, d.users)


def test_balanced_on_real_tags_matches_the_paper_definition(ml_latest_small_path):
    d = read_tags(ml_latest_small_path / "tags.csv")
    counts = np.sort(d.tag_counts())[::-1]
    b = d.balanced(top=50, seed=1)
    bc = dict(zip(b.tag_names, b.tag_counts(), strict=True))
    assert max(bc.values()) == counts[50]  # the 50 most frequent capped at the 51st's count
    top = d.tag_names[np.argsort(-d.tag_counts(), kind="stable")[:50]]
    assert all(bc.get(t, 0) <= counts[50] for t in top)
    rare = d.tag_names[d.tag_counts() < counts[50]]
    full = dict(zip(d.tag_names, d.tag_counts(), strict=True))
    assert all(bc.get(t, 0) == full[t] for t in rare)  # the rest untouched


def test_with_vocabulary_reindexes_and_refuses_an_empty_result():
    d = _data()
    r = d.with_vocabulary(np.array(["c", "a", "zzz"]))
    assert r.tag_names.tolist() == ["c", "a", "zzz"]
    np.testing.assert_array_equal(r.tag_counts(), [2, 4, 0])
    with pytest.raises(InputError, match="empty vocabulary"):
        d.with_vocabulary(np.array(["nothing"]))


def test_split_by_items_keeps_every_test_user_in_training():
    d = synthetic_tags(n_users=80, n_items=60, per_user=10, seed=1).data
    train, test = d.split("items", 0.2, seed=0)
    assert train.n_examples + test.n_examples == d.n_examples
    assert set(test.users) <= set(train.users)
    assert 0.15 < test.n_examples / d.n_examples < 0.25
    keys = set(zip(train.users, train.items, strict=True))
    assert not keys & set(zip(test.users, test.items, strict=True))
    again, _ = d.split("items", 0.2, seed=0)
    np.testing.assert_array_equal(again.items, train.items)


def test_split_by_users_holds_out_whole_users():
    d = synthetic_tags(n_users=80, n_items=60, per_user=10, seed=1).data
    train, test = d.split("users", 0.25, seed=0)
    assert not set(train.users) & set(test.users)
    assert len(set(test.users)) == 20
    with pytest.raises(InputError, match="split"):
        d.split("tags")
    one = d.only(users=d.users[:1])[0]
    with pytest.raises(InputError, match="each side needs at least one user"):
        one.split("users", 0.2)


def test_only_drops_examples_and_counts_them():
    d = _data()
    kept, dropped = d.only(items=[10, 11])
    assert dropped == 3 and set(kept.items) == {10, 11}


# ---------------------------------------------------------------------------- reading
def test_read_movielens_tags(ml_latest_small_path):
    d = read_tags(ml_latest_small_path / "tags.csv")
    assert (d.n_applications, d.n_examples, d.n_tags) == (3683, 1775, 1475)
    assert len(np.unique(d.users)) == 58 and d.items.dtype == np.int64
    assert "highly quotable" in d.tag_names  # "Highly quotable": stripped, lower-case
    assert d.tag_names[0] == "in netflix queue"


def test_read_tags_several_per_line_and_by_column_name(tmp_path):
    tsv = tmp_path / "posts.tsv"
    tsv.write_text("u1\ti1\t3\t5\t7\nu2\ti1\t5\nu1\ti2\t3\t\t9\n")
    d = read_tags(tsv, tag_col="2:")
    assert d.n_examples == 3 and d.n_applications == 6
    assert d.users.dtype.kind == "U" and set(d.tag_names) == {"3", "5", "7", "9"}
    csv = tmp_path / "t.csv"
    csv.write_text("when,who,what,label\n1,7,70,Cat\n2,7,71,dog\n")
    d = read_tags(csv, user_col="who", item_col="what")
    assert d.tag_names.tolist() == ["cat", "dog"] and d.users.tolist() == [7, 7]


def test_read_tags_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,tag\n1,2,funny\n1,,sad\n")
    with pytest.raises(InputError, match=r"bad\.csv:3: empty item id"):
        read_tags(bad)
    short = tmp_path / "short.csv"
    short.write_text("userId,movieId,tag\n1,2,funny\n1,2\n")
    with pytest.raises(InputError, match=r"short\.csv:3: expected 3 fields"):
        read_tags(short)
    with pytest.raises(InputError, match="no column 'genre' for tags"):
        read_tags(bad, tag_col="genre")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty file"):
        read_tags(tmp_path / "empty.csv")
    with pytest.raises(InputError, match="no such file"):
        read_tags(tmp_path / "absent.csv")


# ---------------------------------------------------------------------------- attributes
def test_ml100k_user_file_is_read_and_encoded_directly(ml100k_path):
    users = read_user_attributes(ml100k_path / "u.user")
    names = users.encoder.feature_names
    assert len(users) == 943 and users.values.dtype == np.float32
    age = users.values[:, names.index("age")]
    assert age.min() == 0 and age.max() == 1
    row = int(np.flatnonzero(users.ids == 1)[0])  # 1|24|M|technician|85711
    assert users.values[row, names.index("gender")] == 1
    assert users.values[row, names.index("occupation=technician")] == 1
    assert users.values[:, [n.startswith("occupation=") for n in names]].sum(1).max() == 1
    zips = [n for n in names if n.startswith("zip_code=")]
    assert len(zips) == 50 and zips[-1] == "zip_code=<other>"  # 795 zip codes bucketed
    assert set(np.unique(users.values[:, names.index("gender")])) == {-1.0, 1.0}


def test_attribute_kinds_geo_numbers_and_unseen_levels(tmp_path):
    f = tmp_path / "users.csv"
    f.write_text(
        "user_id,age,sex,country,lat,lon\na,13,female,ca,90,0\nb,63,male,au,0,90\nc,38,,uk,0,0\n"
    )
    users = read_user_attributes(f)
    names = users.encoder.feature_names
    assert names[:2] == ["age", "sex"] and names[-3:] == ["home.x", "home.y", "home.z"]
    np.testing.assert_allclose(users.values[:, 0], [0, 1, 0.5])
    np.testing.assert_array_equal(users.values[:, 1], [-1, 1, 0])
    np.testing.assert_allclose(users.values[:, -3:], [[0, 0, 1], [0, 1, 0], [1, 0, 0]], atol=1e-6)
    assert np.allclose(np.linalg.norm(users.values[:, -3:], axis=1), 1)
    g = tmp_path / "new.csv"
    g.write_text("user_id,age,sex,country,lat,lon\nd,100,m,nz,0,0\n")
    new = read_user_attributes(g, encoder=users.encoder)  # trained scaling and levels
    assert new.values[0, 0] == pytest.approx(1.74)  # (100 − 13) / 50: not refitted
    assert new.values[0, [n.startswith("country=") for n in names]].sum() == 0  # unseen


def test_user_file_errors(tmp_path, ml100k_path):
    with pytest.raises(InputError, match="no column 'income' for a user attribute"):
        read_user_attributes(ml100k_path / "u.user", columns=["age", "income"])
    f = tmp_path / "users.csv"
    f.write_text("user_id,age,gender\n1,20,m\n2,30,f\n")
    encoder = read_user_attributes(f).encoder
    g = tmp_path / "fewer.csv"
    g.write_text("user_id,gender\n3,m\n")
    with pytest.raises(InputError, match="no column 'age' for user attributes"):
        read_user_attributes(g, encoder=encoder)
    h = tmp_path / "text.csv"
    h.write_text("user_id,age,gender\n3,old,m\n")
    with pytest.raises(InputError, match=r"text\.csv:2: age 'old' is not a number"):
        read_user_attributes(h, encoder=encoder)
    dup = tmp_path / "dup.csv"
    dup.write_text("user_id,age\n1,2\n1,3\n")
    with pytest.raises(InputError, match="unique"):
        read_user_attributes(dup)
    half = tmp_path / "half.csv"
    half.write_text("user_id,lat\n1,2\n")
    with pytest.raises(InputError, match="both a latitude and a longitude"):
        read_user_attributes(half)


def test_encoder_round_trips_through_json():
    syn = synthetic_tags(n_users=20, n_items=10, per_user=3)
    enc = syn.user_attributes().encoder
    again = AttributeEncoder.from_json(enc.to_json())
    np.testing.assert_array_equal(again.transform(syn.user_table)[1], syn.user_attributes().values)


def test_read_table_checks_widths(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("1|2|3\n4|5\n")
    with pytest.raises(InputError, match=r"t\.txt:2: expected 3 fields separated by '\|'"):
        read_table(f)
