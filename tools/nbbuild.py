#!/usr/bin/env python
"""Author notebooks as jupytext percent scripts, build them into executed, cleaned nbdev notebooks.

    .venv/bin/python tools/nbbuild.py SRC.py [SRC2.py ...]   # -> nbs/<stem>.ipynb, executed, nbdev_clean'ed
    .venv/bin/python tools/nbbuild.py --no-exec SRC.py        # convert only (no outputs)
    .venv/bin/python tools/nbbuild.py --to-py nbs/X.ipynb DIR # editable percent script of a notebook (outputs dropped)

The notebooks in nbs/ are the source of truth; the .py scripts are only a convenient way to edit them.
After building, run `.venv/bin/nbdev_export` to refresh the package.
"""
import sys, subprocess, argparse, json, os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

def build(src: Path, execute: bool, timeout: int):
    import jupytext, nbformat
    nb = jupytext.read(src)
    nb.metadata = {"kernelspec": KERNELSPEC}
    for c in nb.cells:
        c.metadata = {k: v for k, v in c.metadata.items() if k == "tags"}
    out = ROOT / "nbs" / (src.stem + ".ipynb")
    if execute:
        from nbclient import NotebookClient
        env_in_test = os.environ.pop("IN_TEST", None)
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(out.parent)}}).execute()
        if env_in_test is not None: os.environ["IN_TEST"] = env_in_test
    nbformat.write(nb, out)
    subprocess.run([str(BIN / "nbdev_clean"), "--fname", str(out)], check=True, cwd=ROOT)
    print("built", out.relative_to(ROOT), "(executed)" if execute else "(not executed)")

def to_py(nbpath: Path, dest: Path):
    import jupytext
    nb = jupytext.read(nbpath)
    dest.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, dest / (nbpath.stem + ".py"), fmt="py:percent")
    print("wrote", dest / (nbpath.stem + ".py"))

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--no-exec", action="store_true")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--to-py", action="store_true")
    a = ap.parse_args()
    if a.to_py: to_py(Path(a.paths[0]), Path(a.paths[1]))
    else:
        for p in a.paths: build(Path(p).resolve(), not a.no_exec, a.timeout)
