#!/usr/bin/env python
"""Course figures per notebook: size, cell lengths, exported symbols and how many are never shown, reading time.

    python tools/course_stats.py [NOTEBOOK ...]      # default: every nbs/*.ipynb; prints a Markdown table

Definitions (so the figures can be checked):
- cells: all cells; code lines: non-blank lines of code cells (directive lines such as `#| export` excluded);
  max / median: of the code lines per code cell; >40: code cells above 40 lines.
- exported: top-level names (functions, classes, assignments not starting with `_`) defined in `#| export` /
  `#| exports` cells (what nbdev puts in the module).
- untaught: exported names never mentioned (as a whole word) in any non-export cell, prose or code;
  not run: exported names never mentioned in a non-export *code* cell (no demonstration or test calls them).
- reading minutes: prose words (markdown cells) at 200 words/min + code lines at 10 lines/min.
- lesson / hood minutes: the same, split between the lesson flow and what is outside it: every cell from a
  markdown heading that starts with "Under the hood" (e.g. `## Under the hood: resuming`) up to the next heading
  of the same or a higher level that is not itself "Under the hood" (e.g. a closing `## A run`, which a learner
  reads), or to the end of the notebook; and every cell of an appendix notebook (its title, the first `# `
  heading, starts with "Appendix").
  The course's reading time is the lesson minutes; the core lessons are 00-06. Long cells and untaught names are
  counted everywhere, lesson or not.
"""
import ast, json, re, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS_PER_MIN, CODE_LINES_PER_MIN, LONG = 200, 10, 40
DIRECTIVE = re.compile(r"^\s*#\s*\|")
HOOD = re.compile(r"^\s*#{1,6}\s*under the hood", re.I)
HEADING = re.compile(r"^\s*(#{1,6})\s")
APPENDIX = re.compile(r"^\s*#\s+appendix", re.I)
CORE = tuple(f"{i:02d}_" for i in range(7))

def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s

def _headings(src: str) -> list[str]:
    "A markdown cell's heading lines, in order (lines inside ``` fences are not headings)."
    out, fenced = [], False
    for l in src.splitlines():
        if l.lstrip().startswith("```"): fenced = not fenced
        elif not fenced and HEADING.match(l): out.append(l)
    return out

def _is_export(src: str) -> bool:
    return any(re.match(r"^\s*#\s*\|\s*export", l) for l in src.splitlines())

def _code_lines(src: str) -> int:
    return sum(1 for l in src.splitlines() if l.strip() and not DIRECTIVE.match(l))

def _exported(src: str) -> list[str]:
    try: tree = ast.parse("\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!"))))
    except SyntaxError: return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                for n in ast.walk(t):
                    if isinstance(n, ast.Name): names.append(n.id)
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]

def stats(path: Path) -> dict:
    cells = json.loads(path.read_text())["cells"]
    code = [_src(c) for c in cells if c["cell_type"] == "code"]
    lens = [_code_lines(s) for s in code]
    exported = [n for s in code if _is_export(s) for n in _exported(s)]
    other = [_src(c) for c in cells if not (c["cell_type"] == "code" and _is_export(_src(c)))]
    other_code = [_src(c) for c in cells if c["cell_type"] == "code" and not _is_export(_src(c))]
    said = lambda n, texts: any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", t) for t in texts)
    words = sum(len(_src(c).split()) for c in cells if c["cell_type"] == "markdown")
    title = next((_src(c) for c in cells if c["cell_type"] == "markdown" and _src(c).lstrip().startswith("# ")), "")
    appendix, hood, lesson_min, hood_min = bool(APPENDIX.match(title)), False, 0.0, 0.0
    for c in cells:
        src = _src(c)
        for line in (_headings(src) if c["cell_type"] == "markdown" else []):
            level = len(HEADING.match(line).group(1))
            if HOOD.match(line): hood = min(hood or 7, level)         # the hood's level (1-6); False: lesson
            elif hood and level <= hood: hood = False                 # a heading above or beside it ends it
        m = len(src.split()) / WORDS_PER_MIN if c["cell_type"] == "markdown" else _code_lines(src) / CODE_LINES_PER_MIN
        if appendix or hood: hood_min += m
        else: lesson_min += m
    return dict(notebook=path.name, cells=len(cells), code_lines=sum(lens), max_cell=max(lens, default=0),
                median_cell=statistics.median(lens) if lens else 0, long_cells=sum(l > LONG for l in lens),
                exported=len(exported), untaught=sum(not said(n, other) for n in exported),
                not_run=sum(not said(n, other_code) for n in exported), words=words,
                minutes=words / WORDS_PER_MIN + sum(lens) / CODE_LINES_PER_MIN, lesson_minutes=lesson_min,
                hood_minutes=hood_min, appendix=appendix)

COLS = [("notebook", "notebook"), ("cells", "cells"), ("code_lines", "code lines"), ("max_cell", "max cell"),
        ("median_cell", "median cell"), ("long_cells", f">{LONG} lines"), ("exported", "exported"),
        ("untaught", "untaught"), ("not_run", "not run"), ("words", "prose words"), ("minutes", "reading min"),
        ("lesson_minutes", "lesson min"), ("hood_minutes", "hood min")]

def table(rows: list[dict]) -> str:
    allc = [r for r in rows]
    tot = dict(notebook="**total**", cells=sum(r["cells"] for r in allc), code_lines=sum(r["code_lines"] for r in allc),
               max_cell=max((r["max_cell"] for r in allc), default=0), median_cell=None,
               long_cells=sum(r["long_cells"] for r in allc), exported=sum(r["exported"] for r in allc),
               untaught=sum(r["untaught"] for r in allc), not_run=sum(r["not_run"] for r in allc),
               words=sum(r["words"] for r in allc), minutes=sum(r["minutes"] for r in allc),
               lesson_minutes=sum(r["lesson_minutes"] for r in allc), hood_minutes=sum(r["hood_minutes"] for r in allc))
    core = sum(r["lesson_minutes"] for r in allc if r["notebook"].startswith(CORE))
    fmt = lambda k, v: "–" if v is None else f"{v:.0f}" if k.endswith("minutes") else (f"{v:g}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(h for _, h in COLS) + " |", "|" + "|".join("---" if k == "notebook" else "---:" for k, _ in COLS) + "|"]
    name = lambda r: r["notebook"] + (" (appendix)" if r.get("appendix") else "")
    lines += ["| " + " | ".join(name(r) if k == "notebook" else fmt(k, r[k]) for k, _ in COLS) + " |" for r in [*rows, tot]]
    return "\n".join(lines) + (f"\n\nCourse (lesson flow) reading time: {tot['lesson_minutes'] / 60:.1f} h "
                               f"({tot['lesson_minutes']:.1f} min), core lessons 00-06: {core / 60:.1f} h ({core:.1f} min); "
                               f"under the hood and appendices: {tot['hood_minutes'] / 60:.1f} h; "
                               f"everything: {tot['minutes'] / 60:.1f} h ({WORDS_PER_MIN} prose words/min + "
                               f"{CODE_LINES_PER_MIN} code lines/min).")

def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or sorted((ROOT / "nbs").glob("*.ipynb"))
    print(table([stats(p) for p in paths]))

if __name__ == "__main__": main()
