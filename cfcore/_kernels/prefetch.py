"""Software prefetch of a table row: the one copy, for the SGD kernels and the benchmark.

SGD over sparse entries gathers item rows at random. Even when the item table fits in the
last-level cache, each gather waits for a cache miss, and the update cannot start before the
dot product has read the row: the loop is latency bound. The kernels know the next entries
in advance (each user's shuffled work list), so they issue a prefetch for the row a few
entries ahead; its miss then overlaps the current update. ``prefetch_row(T, i)`` emits one
``llvm.prefetch`` (read, keep in all cache levels) per 64-byte line of row ``i``; it never
faults, so any row index inside the table is safe.

Fallback: the intrinsic's name depends on the LLVM behind llvmlite (``llvm.prefetch.p0`` with
opaque pointers, LLVM ≥ 15; ``llvm.prefetch.p0i8`` before). At import a tiny function using
it is compiled (cached); if that fails for any reason, :func:`prefetch_row` is a no-op —
prefetching is a hint, the kernels stay correct and only lose its speed-up — and
:data:`PREFETCH_KIND` says ``"none"`` (the benchmark reports it).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_LINE_BYTES = 64
_INTRINSIC = "llvm.prefetch.p0" if llvm.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch_address(typingctx, arr, row, col):
    """Prefetch the cache line holding ``arr[row, col]`` (2-D C-contiguous array)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None
    sig = types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        r = context.cast(builder, args[1], signature.args[1], types.intp)
        c = context.cast(builder, args[2], signature.args[2], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [r, c], wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _INTRINSIC)
        # rw = 0 (read), locality = 3 (keep in every level), cache type = 1 (data)
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(inline="always", cache=True)
def _prefetch_lines(table, row):
    """Prefetch every cache line of ``table[row]`` (2-D, C-contiguous)."""
    step = _LINE_BYTES // table.itemsize
    for col in range(0, table.shape[1], step):
        _prefetch_address(table, row, col)


@numba.njit(inline="always", cache=True)
def _no_prefetch(table, row):
    """The fallback: no prefetch."""


@numba.njit(cache=True)
def _probe(table):
    _prefetch_lines(table, 1)
    return table[0, 0]


def _intrinsic_works() -> bool:
    try:
        _probe(np.zeros((2, 16), dtype=np.float32))
    except Exception:  # noqa: BLE001 - any failure to build it means "no prefetch"
        return False
    return True


def _select(intrinsic_works: bool):
    """``(prefetch_row, PREFETCH_KIND)`` for whether the intrinsic can be built."""
    return (_prefetch_lines, "llvm.prefetch") if intrinsic_works else (_no_prefetch, "none")


prefetch_row, PREFETCH_KIND = _select(_intrinsic_works())
