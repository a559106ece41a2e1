"""collabfeat benchmarks: factorization throughput against the peers, thread and size scaling,
the hardware ceiling, and quality at equal work.

Run ``python -m bench run quick`` (``make bench``) or ``python -m bench run full``
(``make bench-full``); ``python -m bench list`` shows suites, datasets and methods. See
:mod:`bench.runner` for the output layout and :mod:`bench.methods` for how each method's
updates are counted.
"""
