"""Install LightFM 1.17 (a benchmark peer) on current Python/setuptools.

LightFM's ``setup.py`` does ``__builtins__.__LIGHTFM_SETUP__ = True``, which fails under
every PEP 517 build (setuptools ``exec``s it with ``__builtins__`` as a dict; lyst/lightfm
issue 687), so ``pip install lightfm`` cannot build it any more. This script fetches the
sdist from the package index pip is configured with, checks its sha256, patches that one
line to ``import builtins; builtins.__LIGHTFM_SETUP__ = True`` and installs it with
``--no-build-isolation`` (Cython, setuptools and numpy must already be installed).

Usage: ``python bench/install_lightfm.py`` (the ``make install`` target runs it).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

VERSION = "1.17"
SHA256 = "2b77ada182ccd768a8d7643ab3cfcd8b6e855db09087f7cc7329bd63316697a8"


def index_url() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True,
        text=True,
    )
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip().rstrip("/")
    from pip._internal.models.index import PyPI  # pip's own default index

    return PyPI.simple_url.rstrip("/")


def main() -> int:
    try:
        import lightfm  # noqa: F401

        print("lightfm already installed")
        return 0
    except ImportError:
        pass
    page_url = f"{index_url()}/lightfm/"
    page = urllib.request.urlopen(page_url, timeout=120).read().decode()
    match = re.search(rf'href="([^"]*lightfm-{re.escape(VERSION)}\.tar\.gz[^"]*)"', page)
    if not match:
        print(f"lightfm-{VERSION}.tar.gz not found at {page_url}", file=sys.stderr)
        return 1
    url = urllib.parse.urljoin(page_url, match.group(1).split("#")[0])
    data = urllib.request.urlopen(url, timeout=300).read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        print(f"sha256 mismatch for {url}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"lightfm-{VERSION}.tar.gz"
        archive.write_bytes(data)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"lightfm-{VERSION}"
        setup = src / "setup.py"
        setup.write_text(
            setup.read_text().replace(
                "__builtins__.__LIGHTFM_SETUP__ = True",
                "import builtins; builtins.__LIGHTFM_SETUP__ = True",
            )
        )
        return subprocess.call(
            [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", str(src)]
        )


if __name__ == "__main__":
    sys.exit(main())
