"""The README's Python examples run as written (on the real data)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(
    ml100k, ml_latest_small_path, posters_path, tmp_path, monkeypatch
):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # the examples save model.npz / labels.npz in the working directory
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert (tmp_path / "model.npz").exists() and (tmp_path / "labels.csv").exists()
    assert namespace["report"].summary()["shared_viewers_lift"] > 1.5
    assert (
        0 < namespace["run"].result["test_map"] < 1 and (tmp_path / "mtl" / "result.json").exists()
    )
