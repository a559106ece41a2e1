"""pyarrow ↔ numpy without pandas.

pyarrow imports pandas (~45 MB, ~0.3 s) the first time it converts to or from numpy or
Python objects (``to_numpy``, ``pa.array``, ``pa.scalar``). The readers move numbers through
buffers instead, so that reading a file costs neither.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def numpy_view(values: Any) -> np.ndarray:
    """A pyarrow integer or float array without nulls as a numpy array, without a copy."""
    import pyarrow as pa

    kind = values.type
    if pa.types.is_floating(kind):
        dtype = np.dtype(f"f{kind.bit_width // 8}")
    else:
        dtype = np.dtype(f"{'i' if pa.types.is_signed_integer(kind) else 'u'}{kind.bit_width // 8}")
    return np.frombuffer(
        values.buffers()[1], dtype=dtype, count=len(values), offset=values.offset * dtype.itemsize
    )


def arrow_mask(mask: np.ndarray) -> Any:
    """A numpy bool array as a pyarrow boolean array (bit-packed)."""
    import pyarrow as pa

    bits = np.packbits(mask, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])
