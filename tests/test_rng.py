"""The counter-based kernel RNG: deterministic per stream, independent across streams, uniform."""

import numba
import numpy as np
from scipy import stats

from cfcore._kernels.rng import next_below, next_float, stream_seed


@numba.njit(cache=True)
def _draw(seed, a, b, n, m):
    out = np.empty(n, dtype=np.int64)
    floats = np.empty(n, dtype=np.float64)
    s = stream_seed(seed, a, b)
    for k in range(n):
        s, out[k] = next_below(s, m)
        s, floats[k] = next_float(s)
    return out, floats


def test_same_stream_same_numbers_and_streams_differ():
    a1, f1 = _draw(7, 1, 2, 1000, 10)
    a2, f2 = _draw(7, 1, 2, 1000, 10)
    b, _ = _draw(7, 1, 3, 1000, 10)
    c, _ = _draw(8, 1, 2, 1000, 10)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(f1, f2)
    assert (a1 != b).mean() > 0.8 and (a1 != c).mean() > 0.8


def test_uniform_integers_and_floats():
    ints, floats = _draw(0, 0, 0, 200_000, 17)
    counts = np.bincount(ints, minlength=17)
    assert ints.min() == 0 and ints.max() == 16
    assert stats.chisquare(counts).pvalue > 1e-3
    assert 0.0 <= floats.min() and floats.max() < 1.0
    assert stats.kstest(floats, "uniform").pvalue > 1e-3
