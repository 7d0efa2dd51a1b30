"""tools/course_stats.py: the course figures, checked on a notebook written in the test."""
import importlib.util, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("course_stats", ROOT / "tools" / "course_stats.py")
cs = importlib.util.module_from_spec(spec); spec.loader.exec_module(cs)


def nb(cells):
    return {"cells": [{"cell_type": t, "source": s, "metadata": {}} | ({"outputs": []} if t == "code" else {}) for t, s in cells],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_figures(tmp_path):
    p = tmp_path / "x.ipynb"
    p.write_text(json.dumps(nb([
        ("markdown", "# Title\n\nWe teach `used` here. " + "word " * 394),        # 6 + 394 = 400 words
        ("code", "#| export\ndef used(x):\n    return x\n\ndef _private(): pass\nCONST = 3\n"),   # 4 code lines
        ("code", "#| export\nclass Hidden:\n    pass\n"),                         # 2 code lines
        ("code", "used(1)\n" + "y = 2\n" * 44),                                   # 45 lines: a long cell
        ("code", "CONST\n"),
    ])))
    r = cs.stats(p)
    assert r["cells"] == 5 and r["code_lines"] == 4 + 2 + 45 + 1
    assert (r["max_cell"], r["median_cell"], r["long_cells"]) == (45, 3.0, 1)
    assert r["exported"] == 3                       # used, CONST, Hidden (not _private)
    assert r["untaught"] == 1                       # Hidden is never mentioned outside its export cell
    assert r["not_run"] == 1                        # ... and never in a demonstration cell
    assert r["words"] == 400
    assert abs(r["minutes"] - (400 / 200 + 52 / 10)) < 1e-9
    t = cs.table([r, r])
    assert "| **total** | 10 | 104 | 45 | – | 2 | 6 | 2 | 2 | 800 |" in t and "lesson flow" in t


def test_mention_in_prose_counts_as_taught_but_not_run(tmp_path):
    p = tmp_path / "y.ipynb"
    p.write_text(json.dumps(nb([("code", "#| export\ndef helper(): pass\n"), ("markdown", "`helper` does little.")])))
    r = cs.stats(p)
    assert (r["untaught"], r["not_run"]) == (0, 1)


def test_every_course_notebook_parses():
    rows = [cs.stats(p) for p in sorted((ROOT / "nbs").glob("*.ipynb"))]
    assert rows and all(r["cells"] > 0 for r in rows)


def test_under_the_hood_and_appendix_leave_the_lesson_flow(tmp_path):
    p = tmp_path / "03_x.ipynb"
    p.write_text(json.dumps(nb([("markdown", "# Lesson\n\n" + "w " * 198), ("code", "a = 1\n" * 10),
                                ("markdown", "## Under the hood: checks\n\nmore"), ("code", "b = 2\n" * 20)])))
    r = cs.stats(p)
    assert abs(r["lesson_minutes"] - (200 / 200 + 10 / 10)) < 1e-9       # "# Lesson" + 198 words, 10 lines
    assert abs(r["hood_minutes"] - (6 / 200 + 20 / 10)) < 1e-9
    assert abs(r["lesson_minutes"] + r["hood_minutes"] - r["minutes"]) < 1e-9
    q = tmp_path / "14_y.ipynb"
    q.write_text(json.dumps(nb([("markdown", "# Appendix: speed\n\ntext"), ("code", "c = 3\n" * 5)])))
    a = cs.stats(q)
    assert a["appendix"] and a["lesson_minutes"] == 0 and a["hood_minutes"] > 0
    t = cs.table([r, a])
    assert "14_y.ipynb (appendix)" in t and "core lessons 00-06: 0.0 h" in t


def test_course_keeps_its_met_figures():
    "The two course targets already met stay met: no code cell above 40 lines, no exported name left untaught."
    rows = [cs.stats(p) for p in sorted((ROOT / "nbs").glob("*.ipynb"))]
    long = {r["notebook"]: r["long_cells"] for r in rows if r["long_cells"]}
    untaught = {r["notebook"]: r["untaught"] for r in rows if r["untaught"]}
    assert not long, f"code cells above {cs.LONG} lines: {long} (python tools/course_stats.py)"
    assert not untaught, f"exported names never mentioned outside their export cell: {untaught}"


def test_the_hood_ends_at_a_sibling_heading(tmp_path):
    "A `## A run` after `## Under the hood` is read by every learner: it is lesson again; `###` inside stays hood."
    p = tmp_path / "05_x.ipynb"
    p.write_text(json.dumps(nb([("markdown", "# Lesson"), ("code", "a = 1\n" * 10),
                                ("markdown", "## Under the hood"), ("markdown", "### Checks"), ("code", "b = 2\n" * 20),
                                ("markdown", "```\n## not a heading\n```"), ("code", "c = 3\n" * 30),
                                ("markdown", "## A run"), ("code", "d = 4\n" * 40)])))
    r = cs.stats(p)
    assert abs(r["hood_minutes"] - (4 / 200 + 2 / 200 + 20 / 10 + 6 / 200 + 30 / 10)) < 1e-9
    assert abs(r["lesson_minutes"] - (2 / 200 + 10 / 10 + 3 / 200 + 40 / 10)) < 1e-9


def test_course_reads_within_its_targets():
    """Issue 11's targets, met: the lesson flow reads in under 3 hours (180 min) and the core lessons 00-06 in under 2
    (120 min), at 200 prose words/min + 10 code lines/min, "Under the hood" blocks and appendices excluded. Cut from
    424/234 min by moving engineering (imports, refusals, file handling, caches, formatting, drawing, their tests) into
    such blocks and splitting cells that mixed it with the method. A change that adds to a lesson must take as much out."""
    rows = [cs.stats(p) for p in sorted((ROOT / "nbs").glob("*.ipynb"))]
    lesson = sum(r["lesson_minutes"] for r in rows)
    core = sum(r["lesson_minutes"] for r in rows if r["notebook"].startswith(cs.CORE))
    assert lesson < 180 and core < 120, f"lesson flow {lesson:.1f} min, core {core:.1f} min (python tools/course_stats.py)"
