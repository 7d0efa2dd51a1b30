#!/usr/bin/env python
"""Documentation checks that work without Quarto, the README built from nbs/index.ipynb, and an HTML copy.

    .venv/bin/python tools/docs.py readme    # nbs/index.ipynb -> README.md (README.md is generated: edit index.ipynb)
    .venv/bin/python tools/docs.py check     # sidebar <-> notebooks, outputs present, no errors, nbdev's processing
    .venv/bin/python tools/docs.py html      # html/<notebook>.html for every notebook (plots embedded), no Quarto needed

With Quarto installed, the real site: `.venv/bin/nbdev_docs` (renders _docs/) or `.venv/bin/nbdev_preview`.
"""
from __future__ import annotations
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"

def notebooks() -> list[Path]:
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith((".", "_")))

def _src(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]

def _text_outputs(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream": out.append("".join(o["text"]))
        elif "text/plain" in o.get("data", {}) and "text/html" not in o.get("data", {}) and "image/png" not in o.get("data", {}):
            out.append("".join(o["data"]["text/plain"]))
    return "".join(out).rstrip()

def readme_text(index: Path = NBS / "index.ipynb") -> str:
    "README.md content made from index.ipynb: prose verbatim, code in fences, text outputs after it."
    nb = json.loads(index.read_text())
    parts = ["<!-- Generated from nbs/index.ipynb by `tools/docs.py readme`: edit the notebook, not this file. -->"]
    for c in nb["cells"]:
        s = _src(c).strip()
        if not s or s.startswith("#| hide"): continue
        if c["cell_type"] == "markdown":
            s = re.sub(r"\]\((\d\d_[\w-]+\.ipynb|[\w-]+\.qmd)", r"](nbs/\1", s)   # notebook and page links from the repo root
            parts.append(s)
        else:
            parts.append("```python\n" + "\n".join(l for l in s.splitlines() if not l.startswith("#|")) + "\n```")
            t = _text_outputs(c)
            if t: parts.append("```\n" + t + "\n```")
    return "\n\n".join(parts) + "\n"

def sidebar_entries() -> list[str]:
    import yaml
    y = yaml.safe_load((NBS / "sidebar.yml").read_text())
    out = []
    def walk(items):
        for it in items:
            if isinstance(it, str): out.append(it)
            elif isinstance(it, dict):
                if "href" in it: out.append(it["href"])
                walk(it.get("contents", []))
    walk(y["website"]["sidebar"]["contents"])
    return out

def check() -> list[str]:
    "Problems that would spoil the rendered site (empty list: all good)."
    probs = []
    entries = sidebar_entries()
    names = {p.name for p in notebooks()} | {p.name for p in NBS.glob("*.qmd")}
    probs += [f"sidebar entry {e} does not exist in nbs/" for e in entries if not (NBS / e).exists()]
    probs += [f"{n} is not listed in nbs/sidebar.yml" for n in sorted(names - set(entries))]
    if not (NBS / "_quarto.yml").exists(): probs.append("nbs/_quarto.yml is missing")
    for p in notebooks():
        nb = json.loads(p.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        errs = [i for i, c in enumerate(nb["cells"]) for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errs: probs.append(f"{p.name}: error outputs in cells {errs}")
        if code and not any(c.get("outputs") for c in code): probs.append(f"{p.name}: committed without outputs")
        first = _src(nb["cells"][0]) if nb["cells"] else ""
        if not re.match(r"# \S", first) or "\n> " not in first: probs.append(f"{p.name}: first cell is not '# Title' + '> description'")
        if "kernelspec" not in nb.get("metadata", {}): probs.append(f"{p.name}: no kernelspec metadata")
    readme = ROOT / "README.md"
    if not readme.exists() or readme.read_text() != readme_text(): probs.append("README.md is out of date: run `tools/docs.py readme`")
    return probs

def proc_nbs() -> Path:
    "nbdev's pre-rendering step (what `nbdev_proc_nbs` does after looking for Quarto), into _proc/."
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.serve import proc_nbs as _proc
    refresh_quarto_yml()
    return _proc(str(NBS), n_workers=0, force=True)

def html(out: Path = ROOT / "html", names: list[str] | None = None) -> list[Path]:
    "HTML copies of the executed notebooks (no Quarto needed)."
    from nbconvert import HTMLExporter
    import nbformat
    out.mkdir(exist_ok=True)
    ex, res = HTMLExporter(), []
    for p in notebooks():
        if names and p.name not in names: continue
        body, _ = ex.from_notebook_node(nbformat.read(p, as_version=4))
        (out / (p.stem + ".html")).write_text(body, encoding="utf-8"); res.append(out / (p.stem + ".html"))
    return res

if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    if cmd == "readme":
        (ROOT / "README.md").write_text(readme_text()); print("wrote README.md")
    elif cmd == "check":
        probs = check()
        cache = proc_nbs()
        missing = [p.name for p in notebooks() if not (cache / p.name).exists()]
        if missing: probs.append(f"nbdev's processing did not produce {missing}")
        print("\n".join(probs) if probs else f"docs OK: {len(notebooks())} notebooks, sidebar complete, processed into {cache}")
        sys.exit(1 if probs else 0)
    elif cmd == "html":
        for f in html(): print(f.relative_to(ROOT))
    else: sys.exit(__doc__)
