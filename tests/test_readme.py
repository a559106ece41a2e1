"""The README's Python examples run as written (on the real data)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(
    ml100k, ml_latest_small_path, posters_path, tmp_path, monkeypatch, request
):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # the examples save model.npz / labels.npz in the working directory
    namespace: dict = {}
    for block in blocks:
        if "cfcore.spark" in block:
            request.getfixturevalue("spark")  # the one local session (skips without Java)
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert (tmp_path / "model.npz").exists() and (tmp_path / "labels.csv").exists()
    assert (tmp_path / "dsgd.npz").exists()
    assert namespace["report"].summary()["shared_viewers_lift"] > 1.5
    assert (
        0 < namespace["run"].result["test_map"] < 1 and (tmp_path / "mtl" / "result.json").exists()
    )


def test_every_cited_document_exists():
    """A Markdown file named in the code, the tests or the docs is in the repository (a
    CONTRACTS document was once cited as the contract of the model file without existing:
    the contract is ``cfcore/model.py``'s docstring)."""
    root = README.parent
    present = {p.name for p in root.rglob("*.md") if ".venv" not in p.parts}
    # in the data directory's movielens-posters/; written by `cfvision experiment`; written
    # by a pipeline job's report stage
    elsewhere = {"SOURCE.md", "table.md", "report.md"}
    cited = set()
    for path in [*root.glob("*.md"), *root.glob("*.toml"), *root.glob("Makefile")] + [
        p
        for folder in ("cfcore", "cfvision", "bench", "tests", "examples")
        for p in (root / folder).rglob("*")
        if p.suffix in (".py", ".md") and "results" not in p.parts
    ]:
        cited |= set(re.findall(r"\b([A-Za-z_-]+\.md)\b", path.read_text(encoding="utf-8")))
    assert cited - present - elsewhere == set()
