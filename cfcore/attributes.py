"""User descriptors from a table of user attributes (Denton et al. 2015, §4.1).

Each attribute column becomes one or more numbers of the user vector ``u``:

=============  ========================================================================
kind           encoding
=============  ========================================================================
numeric        scaled to [0, 1] by the column's minimum and maximum (age in the paper);
               a missing value encodes as 0
gender         a column named ``gender`` or ``sex``: male −→ 1, female −→ −1, anything
               else (unknown) 0 (``m``/``male``/``man``, ``f``/``female``/``woman``)
geo            columns named ``lat``/``latitude`` and ``lon``/``lng``/``longitude``
               together: the point on the unit sphere, ``(cos φ cos λ, cos φ sin λ,
               sin φ)`` (the paper's home-town GPS → 3-D vector)
categorical    anything else: one-hot over its values, most frequent first; a column with
               more than ``max_levels`` values keeps the ``max_levels − 1`` most frequent
               and one ``other`` slot for the rest (ml-100k's 795 zip codes); a value not
               seen when the encoder was fitted counts as ``other`` (all zeros without one)
=============  ========================================================================

The :class:`AttributeEncoder` is fitted once (on the whole user file) and travels with a
trained model, so users read at prediction time are encoded exactly as in training. ml-100k
``u.user`` (``user id | age | gender | occupation | zip code``, no header) is read as it is.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfcore.errors import InputError
from cfcore.ids import as_ids, parse_ids
from cfcore.readers import _USER_NAMES, Table, _pick_column, read_table

GENDER_NAMES = ("gender", "sex")
LATITUDE_NAMES = ("lat", "latitude")
LONGITUDE_NAMES = ("lon", "lng", "long", "longitude")
MALE = ("m", "male", "man")
FEMALE = ("f", "female", "woman")

#: Categorical columns keep at most this many one-hot slots (the last one is ``other``).
MAX_LEVELS = 50


def _numbers(values: list[str]) -> np.ndarray | None:
    """The values as float64 (NaN where empty), or None when one is not a number."""
    out = np.full(len(values), np.nan)
    for k, v in enumerate(values):
        if v:
            try:
                out[k] = float(v)
            except ValueError:
                return None
    return None if np.isnan(out).all() else out


@dataclass(frozen=True)
class AttributeEncoder:
    """How each attribute column becomes numbers (see the module docstring).

    Attributes
    ----------
    id_column : str
        The column holding user ids.
    columns : list of dict
        One spec per encoded column, in output order: ``{"column", "kind"}`` plus
        ``"min"``/``"max"`` (numeric), ``"levels"``/``"other"`` (categorical) or
        ``"lat"``/``"lon"`` (geo).
    """

    id_column: str
    columns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        """Name of each output number (``age``, ``occupation=writer``, ``home.x``...)."""
        out: list[str] = []
        for spec in self.columns:
            name, kind = spec["column"], spec["kind"]
            if kind == "categorical":
                out += [f"{name}={level}" for level in spec["levels"]]
                out += [f"{name}=<other>"] if spec["other"] else []
            elif kind == "geo":
                out += [f"{name}.{axis}" for axis in "xyz"]
            else:
                out.append(name)
        return out

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def to_json(self) -> dict[str, Any]:
        return {"id_column": self.id_column, "columns": self.columns}

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> AttributeEncoder:
        return cls(spec["id_column"], list(spec["columns"]))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        table: Table,
        id_col: int | str | None = None,
        columns: list[str] | None = None,
        max_levels: int = MAX_LEVELS,
    ) -> AttributeEncoder:
        """Choose each column's encoding from ``table`` (all columns but the ids, or
        ``columns``)."""
        if max_levels < 2:
            raise InputError(f"max_levels must be >= 2, got {max_levels}")
        names = table.names
        id_name = _pick_column(table.path, names, id_col, _USER_NAMES, 0, "user ids")
        assert id_name is not None
        chosen = [n for n in names if n != id_name] if columns is None else list(columns)
        for name in chosen:
            _pick_column(table.path, names, name, (), None, "a user attribute")
        if not chosen:
            raise InputError(f"{table.path}: no attribute columns besides the ids ({names})")
        lowered = {n.lower(): n for n in chosen}
        lat = next((lowered[n] for n in LATITUDE_NAMES if n in lowered), None)
        lon = next((lowered[n] for n in LONGITUDE_NAMES if n in lowered), None)
        if (lat is None) != (lon is None):
            raise InputError(
                f"{table.path}: a location needs both a latitude and a longitude column "
                f"(found only {lat or lon!r})"
            )
        specs: list[dict[str, Any]] = []
        for name in chosen:
            if name in (lat, lon):
                if name == lat:
                    specs.append({"column": "home", "kind": "geo", "lat": lat, "lon": lon})
                continue
            values = table.column(name)
            numbers = _numbers(values)
            if name.lower() in GENDER_NAMES:
                specs.append({"column": name, "kind": "gender"})
            elif numbers is not None:
                lo, hi = float(np.nanmin(numbers)), float(np.nanmax(numbers))
                specs.append({"column": name, "kind": "numeric", "min": lo, "max": hi})
            else:
                counts = Counter(v for v in values if v)
                levels = sorted((str(v) for v in counts), key=lambda v: (-counts[v], v))
                other = len(levels) > max_levels
                specs.append(
                    {
                        "column": name,
                        "kind": "categorical",
                        "levels": levels[: max_levels - 1] if other else levels,
                        "other": other,
                    }
                )
        return cls(id_name, specs)

    # ------------------------------------------------------------------ encoding
    def transform(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """``(user ids, float32 values (n_users, n_features))`` of the rows of ``table``.

        Raises
        ------
        InputError
            ``table`` lacks a column this encoder uses, or a number column holds text.
        """
        used = [self.id_column]
        for spec in self.columns:
            used += [spec["lat"], spec["lon"]] if spec["kind"] == "geo" else [spec["column"]]
        missing = [c for c in used if c not in table.names]
        if missing:
            raise InputError(
                f"{table.path}: no column {missing[0]!r} for user attributes (columns: "
                f"{table.names}; the encoding uses {used[1:]})"
            )
        n = len(table.rows)
        blocks: list[np.ndarray] = []
        for spec in self.columns:
            kind = spec["kind"]
            if kind == "numeric":
                x = self._number_column(table, spec["column"])
                span = spec["max"] - spec["min"]
                scaled = (x - spec["min"]) / span if span > 0 else np.zeros(n)
                blocks.append(np.nan_to_num(scaled, nan=0.0)[:, None])
            elif kind == "gender":
                v = [s.lower() for s in table.column(spec["column"])]
                blocks.append(
                    np.array([1.0 if s in MALE else -1.0 if s in FEMALE else 0.0 for s in v])[
                        :, None
                    ]
                )
            elif kind == "geo":
                lat = np.radians(self._number_column(table, spec["lat"]))
                lon = np.radians(self._number_column(table, spec["lon"]))
                xyz = np.stack(
                    [np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1
                )
                blocks.append(np.nan_to_num(xyz, nan=0.0))
            else:
                levels = {v: k for k, v in enumerate(spec["levels"])}
                width = len(levels) + (1 if spec["other"] else 0)
                onehot = np.zeros((n, width))
                for r, v in enumerate(table.column(spec["column"])):
                    k = levels.get(v, len(levels) if spec["other"] else -1)
                    if k >= 0 and v:
                        onehot[r, k] = 1.0
                blocks.append(onehot)
        ids = as_ids(parse_ids(table.column(self.id_column)), n, f"{table.path}: user ids")
        return ids, np.ascontiguousarray(np.hstack(blocks), dtype=np.float32)

    @staticmethod
    def _number_column(table: Table, name: str) -> np.ndarray:
        values = table.column(name)
        for k, v in enumerate(values):
            try:
                float(v or 0)
            except ValueError:
                raise InputError(
                    f"{table.path}:{table.lines[k]}: {name} {v!r} is not a number"
                ) from None
        return np.array([float(v) if v else np.nan for v in values])


@dataclass(frozen=True)
class UserAttributes:
    """One descriptor vector per user.

    Attributes
    ----------
    ids : ndarray
        Raw user ids (int64 or str), unique, in row order.
    values : ndarray of float32, shape (n_users, n_features)
    encoder : AttributeEncoder
        How the values were made (``encoder.feature_names`` names the columns).
    """

    ids: np.ndarray
    values: np.ndarray
    encoder: AttributeEncoder

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return len(self.ids)


def read_user_attributes(
    path: str | os.PathLike[str],
    *,
    sep: str | None = None,
    header: bool | None = None,
    id_col: int | str | None = None,
    columns: list[str] | None = None,
    encoder: AttributeEncoder | None = None,
    max_levels: int = MAX_LEVELS,
) -> UserAttributes:
    """Read a user attribute file and encode every user (see the module docstring).

    Parameters
    ----------
    path : path-like
        A CSV/TSV/pipe-separated file with one line per user, e.g. ml-100k ``u.user``.
    sep, header : optional
        As :func:`cfcore.readers.read_table`.
    id_col : int or str, optional
        The user id column (default: a well-known name such as ``user_id``, else 0).
    columns : list of str, optional
        The attribute columns to use (default: every column but the ids).
    encoder : AttributeEncoder, optional
        Encode with this (a trained model's) instead of fitting one to the file.
    max_levels : int
        One-hot slots per categorical column (see :data:`MAX_LEVELS`).

    Raises
    ------
    InputError
        Missing file, a named column that does not exist, a column the encoder needs that the
        file lacks, duplicate user ids.
    """
    named = (id_col, *(columns or ()))
    if encoder is not None:
        named = (encoder.id_column, *named)
    table = read_table(path, sep=sep, header=header, known=_USER_NAMES, named=named)
    if encoder is None:
        encoder = AttributeEncoder.fit(table, id_col, columns, max_levels)
    ids, values = encoder.transform(table)
    return UserAttributes(ids, values, encoder)
