"""The documentation site's inputs, checked without Quarto; the README generated from index.ipynb; the HTML copy has the plots."""
import importlib.util, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs", ROOT / "tools" / "docs.py")
docs = importlib.util.module_from_spec(spec); spec.loader.exec_module(docs)


def test_sidebar_outputs_readme():
    assert docs.check() == []


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    cmds = [l.split("#")[0].strip() for l in first_block.strip().splitlines()]
    assert cmds[:2] == ["make demo", "make test"]


def test_nbdev_processing_covers_every_notebook(tmp_path):
    cache = docs.proc_nbs()
    missing = [p.name for p in docs.notebooks() if not (cache / p.name).exists()]
    assert not missing and (cache / "_quarto.yml").exists() and (cache / "sidebar.yml").exists()


def test_html_copy_contains_the_plots(tmp_path):
    with_images = [p.name for p in docs.notebooks()
                   if any("image/png" in o.get("data", {}) for c in json.loads(p.read_text())["cells"] for o in c.get("outputs", []))]
    assert len(with_images) >= 5, with_images
    files = docs.html(tmp_path, names=with_images)
    for f in files:
        assert "data:image/png;base64" in f.read_text(), f.name
