"""Facts about the machine and the process: CPU model, caches, memory, library versions, RSS.

Peak memory is read from ``/proc/self/status`` (``VmHWM``, the resident high-water mark), not
``tracemalloc``: the peers and the Numba kernels allocate outside Python's allocator. Each
method runs in its own process, and the high-water mark is reset (``/proc/self/clear_refs``)
right before the fit, so the reported peak belongs to that fit.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
from pathlib import Path

LIBRARIES = (
    "collabfeat",
    "numpy",
    "scipy",
    "numba",
    "faiss-cpu",
    "implicit",
    "lightfm",
    "libmf",
    "cornac",
)


def cpu_model() -> str:
    """The ``model name`` line of ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cache_bytes(level: int = 3) -> int | None:
    """Size of the largest cache of ``level`` seen in sysfs (bytes), or None."""
    best = None
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in base.glob("index*"):
        try:
            if int((d / "level").read_text()) != level:
                continue
            text = (d / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        value = int(text.rstrip("KMG")) * mult
        best = value if best is None else max(best, value)
    return best


def mem_available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (bytes), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries a benchmark record depends on (None: absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, object]:
    """CPU model, usable cores, L2/L3 sizes and total memory, for every record."""
    total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_model": cpu_model(),
        "cores": cpu_count(),
        "l2_bytes": cache_bytes(2),
        "l3_bytes": cache_bytes(3),
        "mem_total_bytes": total,
        "platform": platform.platform(),
    }


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (``/proc/loadavg``): how busy the machine was."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ≥ 4.0). False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """Current resident set size (MiB)."""
    kib = _status_kib("VmRSS")
    return float("nan") if kib is None else kib / 1024.0


def peak_rss_mb() -> float:
    """Resident high-water mark (MiB): ``VmHWM``, else ``getrusage`` ``ru_maxrss``."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0
