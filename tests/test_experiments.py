"""Tests of vlsm_adapter.experiments: grid expansion, the resume/skip rules on fake run folders (no training), failure
recording, parameter checks, collection and the paper-shaped tables against the shared CSVs of the paper's tables
(an independent copy of the numbers the package embeds), the command line, and one real tiny sweep through papermill.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from papermill.exceptions import PapermillExecutionError

import vlsm_adapter.experiments as ex
from vlsm_adapter.evaluate import EVAL_KIND
from vlsm_adapter.experiments import (Grid, RunSpec, SweepFailed, aggregate, collect, estimate_cost, figure2, main,
                                      paper_grid, plan_run, run_sweep, table1, table2, to_markdown, wide, write_tables)
from vlsm_adapter.utils import shared_path

ROOT = Path(__file__).resolve().parents[1]
PAPER = shared_path("paper")
needs_paper = pytest.mark.skipif(PAPER is None, reason="shared/paper (the paper's tables as CSV) not found beside the project")


# ---------------------------------------------------------------- fakes: run folders as fit / evaluate_run leave them
def write_train(run: Path, params: dict, finished: bool = True, trainable: int = 1000, best_val: float = 50.0):
    run.mkdir(parents=True, exist_ok=True)
    tc = {k: v for k, v in params.items()}
    tc["variant"] = tc.get("variant") if tc.get("method") in ("dense", "shallow") else None
    (run / "config.json").write_text(json.dumps({"train_config": tc, "params": {"trainable": trainable, "total": 10**6}}))
    if finished:
        (run / "summary.json").write_text(json.dumps(dict(status="finished", best_epoch=3, best_val_dice=best_val, epochs=5,
                                                          params={"trainable": trainable, "total": 10**6})))


def write_eval(run: Path, dice: float, iou: float | None = None, hd95: float = 10.0, split="test", which="best"):
    d = run / f"eval-{split}-{which}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(dict(kind=EVAL_KIND, split=split, which=which, which_requested=which, n=7,
                                                    dice_mean=dice, dice_std=1.0, iou_mean=iou if iou is not None else dice - 10,
                                                    iou_std=1.0, hd95_mean=hd95, hd95_std=1.0)))


class FakeExecutor:
    "Stands in for papermill: records calls, writes what the notebooks would write, or fails for chosen runs."
    def __init__(self, fail: dict | None = None, dice: float = 60.0):
        self.calls, self.fail, self.dice = [], fail or {}, dice

    def __call__(self, notebook, output, parameters, cwd, kernel_name="python3"):
        output = Path(output)
        stage = "train" if Path(notebook).name == ex.TRAIN_NB else "evaluate"
        run = Path(parameters["out_dir"] if stage == "train" else parameters["run_dir"])
        self.calls.append((run.name, stage, dict(parameters), str(cwd)))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("{}")
        if (run.name, stage) in self.fail:
            raise PapermillExecutionError(cell_index=3, exec_count=4, source="x", ename="ValueError",
                                          evalue=self.fail[run.name, stage], traceback=[])
        if stage == "train": write_train(run, parameters)
        else: write_eval(run, self.dice)


@pytest.fixture
def fake(monkeypatch):
    f = FakeExecutor()
    monkeypatch.setattr(ex, "execute_notebook", f)
    return f


@pytest.fixture
def no_kernels(monkeypatch):
    def boom(*a, **k): raise AssertionError("a notebook was executed although every run should be skipped")
    monkeypatch.setattr(ex, "execute_notebook", boom)


SMALL = Grid(["synthetic"], ["dense", "decoder"], ["v", "vl"], seeds=[41], max_epochs=1)


# ---------------------------------------------------------------- the grid
def test_grid_expansion():
    g = Grid(["kvasir", "ISIC-16"], ["dense", "shallow", "decoder", "e2e"], ["v", "vl", "vlc"], seeds=[41, 42])
    names = [r.name for r in g]
    assert len(g) == 2 * (2 * 3 + 2) * 2 == len(set(names))
    assert names[:3] == ["kvasir-dense-v-seed41", "kvasir-dense-v-seed42", "kvasir-dense-vl-seed41"]
    assert "isic16-decoder-seed42" in names and "isic16-e2e-seed41" in names     # paper names are normalised
    assert all(r.variant is None for r in g if r.method in ("decoder", "e2e"))
    assert all(r.variant in ("v", "vl", "vlc") for r in g if r.method in ("dense", "shallow"))
    assert not any("decoder-v" in n or "e2e-v" in n for n in names)
    full = paper_grid()
    assert len(full) == 192 == len({r.name for r in full})
    assert full.frame().groupby("dataset").size().tolist() == [24] * 8
    assert Grid("kvasir", "decoder", seeds=7, batch_size=4)[0].train_params("/r") == dict(
        dataset="kvasir", method="decoder", variant=None, seed=7, batch_size=4, out_dir="/r")
    assert len(Grid(["kvasir", "kvasir"], ["dense", "dense"], ["v", "v"], [1, 1])) == 1       # duplicates removed


@pytest.mark.parametrize("kw,msg", [(dict(datasets=["kvasirr"]), "kvasir"), (dict(methods=["lora"]), "'dense'"),
                                    (dict(variants=["vll"]), "'vlc'"), (dict(variants=[]), "need at least one variant"),
                                    (dict(datasets=[]), "datasets is empty"), (dict(seed=3), "set by the grid"),
                                    (dict(out_dir="x"), "set by the grid")])
def test_grid_rejects_bad_names(kw, msg):
    args = dict(datasets=["kvasir"], methods=["dense"])
    args.update(kw)
    with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
        Grid(**args)


# ---------------------------------------------------------------- skip / resume rules, without papermill
def test_finished_runs_are_skipped_and_status_written(tmp_path, no_kernels):
    for s in SMALL:
        write_train(tmp_path / s.name, s.train_params(tmp_path / s.name))
        write_eval(tmp_path / s.name, 55.0)
    t = run_sweep(SMALL, tmp_path, progress=False)
    assert list(t.status) == ["skipped"] * 3 and list(t.plan) == ["skip"] * 3
    st = json.loads((tmp_path / ex.STATUS_JSON).read_text())
    assert [r["name"] for r in st["runs"]] == [s.name for s in SMALL] and st["counts"] == {"skipped": 3}
    assert pd.read_csv(tmp_path / ex.STATUS_CSV).status.tolist() == ["skipped"] * 3


def test_plans_and_what_runs(tmp_path, fake):
    a, b, c = SMALL
    write_train(tmp_path / a.name, a.train_params(tmp_path / a.name))                 # trained, not evaluated
    write_train(tmp_path / b.name, b.train_params(tmp_path / b.name), finished=False)  # crashed
    (tmp_path / c.name).mkdir()
    (tmp_path / c.name / "train.ipynb").write_text("{}")                           # failed before fit started
    plan = run_sweep(SMALL, tmp_path, dry_run=True)
    assert list(plan.plan) == ["evaluate", "resume+evaluate", "train+evaluate"]
    assert list(plan.status) == ["dry-run"] * 3 and not (tmp_path / ex.STATUS_JSON).exists()
    assert fake.calls == []
    t = run_sweep(SMALL, tmp_path, progress=False)
    assert list(t.status) == ["done"] * 3
    assert [(n, s) for n, s, _, _ in fake.calls] == [(a.name, "evaluate"), (b.name, "train"), (b.name, "evaluate"),
                                                    (c.name, "train"), (c.name, "evaluate")]
    # papermill runs in the notebooks' folder, with absolute paths
    for _, stage, p, cwd in fake.calls:
        assert cwd == str(ROOT / "nbs")
        assert Path(p["out_dir" if stage == "train" else "run_dir"]).is_absolute()
    fake.calls.clear()
    assert set(run_sweep(SMALL, tmp_path, progress=False).status) == {"skipped"} and fake.calls == []


def test_incomplete_evaluation_is_set_aside(tmp_path, fake, monkeypatch):
    a = SMALL[0]
    run = tmp_path / a.name
    write_train(run, a.train_params(run))
    (run / "eval-test-best" / "masks").mkdir(parents=True)                 # evaluation killed before its summary
    (run / "eval-test-best" / "masks" / "x.png").write_bytes(b"")
    assert plan_run(run, a.train_params(run)) == ("evaluate", None)
    seen = []
    def executor(notebook, output, parameters, cwd, kernel_name="python3"):
        seen.append(sorted(p.name for p in run.iterdir()))
        fake(notebook, output, parameters, cwd, kernel_name)
    monkeypatch.setattr(ex, "execute_notebook", executor)
    assert run_sweep([a], tmp_path, progress=False).status.tolist() == ["done"]
    assert "eval-test-best" not in seen[0] and "eval-test-best.incomplete1" in seen[0]   # set aside before evaluating
    assert (run / "eval-test-best.incomplete1" / "masks" / "x.png").exists() and ex.eval_summary(run) is not None


def test_stderr_of_started_processes_goes_to_the_log(tmp_path):
    log = tmp_path / "k.log"
    with ex.stderr_to(log):
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('from the kernel')"], check=True)
    assert log.read_text() == "from the kernel"
    r = subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('after')"], capture_output=True, text=True)
    assert r.stderr == "after"


def test_older_notebooks_are_kept_as_attempts(tmp_path, monkeypatch):
    import papermill as pm
    monkeypatch.setattr(pm, "execute_notebook", lambda inp, out, **k: Path(out).write_text("new"))
    out = tmp_path / "r" / "train.ipynb"
    ex.execute_notebook(ROOT / "nbs" / ex.TRAIN_NB, out, {}, ROOT / "nbs")
    ex.execute_notebook(ROOT / "nbs" / ex.TRAIN_NB, out, {}, ROOT / "nbs")
    ex.execute_notebook(ROOT / "nbs" / ex.TRAIN_NB, out, {}, ROOT / "nbs")
    assert sorted(p.name for p in out.parent.iterdir()) == ["train.attempt1.ipynb", "train.attempt2.ipynb", "train.ipynb",
                                                            "train.kernel.log"]


def test_kernels_do_not_see_test_markers(monkeypatch):
    import os
    monkeypatch.setenv("IN_TEST", "1")
    seen = {}
    import papermill as pm
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: seen.update({k: os.environ.get(k) for k in ex.TEST_ENV}))
    ex.execute_notebook(ROOT / "nbs" / ex.TRAIN_NB, Path("/tmp") / "vlsm_exp_env_check.ipynb", {}, ROOT / "nbs")
    assert seen == {"IN_TEST": None, "PYTEST_CURRENT_TEST": None}
    assert os.environ["IN_TEST"] == "1" and "PYTEST_CURRENT_TEST" in os.environ     # restored


def test_failure_is_recorded_and_the_sweep_continues(tmp_path, monkeypatch):
    a, b, c = SMALL
    f = FakeExecutor(fail={(a.name, "train"): "\x1b[31mUnknown dataset 'nosuch'\x1b[0m", (c.name, "evaluate"): "boom"})
    monkeypatch.setattr(ex, "execute_notebook", f)
    with pytest.raises(SweepFailed) as e:
        run_sweep(SMALL, tmp_path, progress=False)
    t = e.value.table
    assert list(t.status) == ["failed", "done", "failed"]
    assert list(t.stage.fillna("")) == ["train", "", "evaluate"]
    assert t.error[0] == "ValueError: Unknown dataset 'nosuch' (cell [4])"                   # ANSI colours stripped
    assert t.notebook[0] == str(tmp_path / a.name / "train.ipynb") and t.notebook[2].endswith("evaluate.ipynb")
    assert [n for n, s, _, _ in f.calls].count(a.name) == 1                                # no evaluation after a failed training
    msg = str(e.value)
    assert "2 of 3 runs failed" in msg and a.name in msg and c.name in msg and b.name not in msg
    assert pd.read_csv(tmp_path / ex.STATUS_CSV).status.tolist() == ["failed", "done", "failed"]
    # retry: the failed ones run again (c only needs its evaluation), no raise when told so
    f.fail.clear(); f.calls.clear()
    t2 = run_sweep(SMALL, tmp_path, progress=False, raise_on_failure=False)
    assert list(t2.status) == ["done", "skipped", "done"]
    assert [(n, s) for n, s, _, _ in f.calls] == [(a.name, "train"), (a.name, "evaluate"), (c.name, "evaluate")]


def test_conflicting_settings_are_not_reused(tmp_path, fake):
    a = SMALL[0]
    write_train(tmp_path / a.name, {**a.train_params(tmp_path / a.name), "max_epochs": 7})
    write_eval(tmp_path / a.name, 50.0)
    plan, why = plan_run(tmp_path / a.name, a.train_params(tmp_path / a.name))
    assert plan == "conflict" and "max_epochs: stored 7, sweep 1" in why
    t = run_sweep([a], tmp_path, progress=False, raise_on_failure=False)
    assert t.status.tolist() == ["conflict"] and fake.calls == []
    t = run_sweep([a], tmp_path, progress=False, force=True)
    assert t.status.tolist() == ["done"] and fake.calls[0][2]["overwrite"] is True


def test_parameters_are_checked_against_the_notebooks(tmp_path, fake):
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['weight_decay'\]"):
        run_sweep(SMALL, tmp_path, extra_params=dict(weight_decay=0.1))
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['nope'\]"):
        run_sweep(SMALL, tmp_path, eval_params=dict(nope=1))
    with pytest.raises(ValueError, match="may not set"):
        run_sweep(SMALL, tmp_path, extra_params=dict(out_dir="/x"))
    with pytest.raises(ValueError, match="same name"):
        run_sweep([SMALL[0], SMALL[0]], tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        run_sweep(SMALL, tmp_path, train_nb=tmp_path / "missing.ipynb")
    assert fake.calls == []


def test_relative_data_root_becomes_absolute(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_sweep(Grid("synthetic", "decoder", seeds=1, data_root="mydata"), tmp_path / "sweep", progress=False,
              eval_params=dict(data_root="mydata"))
    (_, _, tp, _), (_, _, ep, _) = fake.calls
    assert tp["data_root"] == ep["data_root"] == str(tmp_path / "mydata")


# ---------------------------------------------------------------- collection and tables on fake results
DICE = {("dense", "vl"): [88.0, 89.0, 90.0], ("shallow", "vl"): [85.0, 86.0, 87.0], ("decoder", None): [80.0, 81.0, 85.0],
        ("e2e", None): [70.0, 72.0, 74.0], ("dense", "v"): [89.5, 89.7, 89.9], ("shallow", "vlc"): [86.0, 86.0, 86.0]}


@pytest.fixture
def fake_results(tmp_path):
    root = tmp_path / "sweep"
    for ds in ("kvasir", "clinicdb"):
        for (m, v), dices in DICE.items():
            for seed, d in zip((41, 42, 43), dices):
                s = RunSpec(ds, m, v, seed)
                run = root / s.name
                write_train(run, s.train_params(run), trainable=2_974_464 if m == "dense" else 1234)
                write_eval(run, d + (1.0 if ds == "clinicdb" else 0.0), iou=d - 8, hd95=d / 2)
    s = RunSpec("kvasir", "dense", "vlc", 41)              # unfinished: not collected
    write_train(root / s.name, s.train_params(root / s.name), finished=False)
    s = RunSpec("kvasir", "shallow", "v", 41)              # trained, not evaluated: not collected
    write_train(root / s.name, s.train_params(root / s.name))
    return root


def _paper(n):
    return pd.read_csv(PAPER / f"table{n}.csv")


def test_collect_and_aggregate(fake_results):
    df = collect(fake_results)
    assert len(df) == 2 * 6 * 3
    assert set(df.columns) >= {"dataset", "method", "variant", "seed", "trainable_params", "dice", "iou", "hd95", "best_val_dice"}
    assert df[df.method == "decoder"].variant.tolist() == [None] * 6
    agg = aggregate(df)
    assert len(agg) == 12 and (agg.n_seeds == 3).all()
    r = agg[(agg.dataset == "kvasir") & (agg.method == "decoder")].iloc[0]
    assert math.isclose(r.dice, np.mean([80, 81, 85])) and math.isclose(r.dice_std, np.std([80, 81, 85], ddof=1))
    assert r.seeds == "41,42,43" and r.variant is None
    one = aggregate(df[df.seed == 41])
    assert one.dice_std.isna().all()                      # one seed: no spread, not a fake 0


@needs_paper
def test_table1_beside_the_paper(fake_results):
    t = table1(collect(fake_results))
    assert list(t.dataset) == ["Kvasir-SEG"] * 4 + ["ClinicDB"] * 4           # the paper's dataset order
    assert list(t.row[:4]) == ["decoder (paper: CLIPSeg E2E †)", "e2e, all parameters (paper: CLIPSeg E2E †)",
                               "CLIPSeg SA = shallow VL", "CLIPSeg DA = dense VL"]
    p1 = _paper(1)
    for r in t.itertuples():
        col = r.paper_column.split(": ")[1]
        for m, pm_ in (("dice", "DSC"), ("iou", "IoU"), ("hd95", "HD95")):
            want = float(p1[(p1.dataset == r.dataset) & (p1.metric == pm_)][col].iloc[0])
            assert getattr(r, f"{m}_paper") == pytest.approx(want)
            assert getattr(r, f"{m}_diff") == pytest.approx(getattr(r, m) - want)
    da = t[(t.dataset == "ClinicDB") & (t.method == "dense")].iloc[0]
    assert da.paper_column == "Table 1: CLIPSeg_DA" and da.dice == pytest.approx(90.0) and da.dice_paper == pytest.approx(88.73)
    assert da.trainable_params == 2_974_464 and da.paper_params == "3M"
    assert set(t[t.method.isin(["decoder", "e2e"])].paper_column) == {"Table 1: CLIPSeg_E2E"}
    assert any("no_grad" in n for n in t.attrs["notes"])
    w = wide(t)
    assert w.shape == (1 + 2 * 3, 4)
    assert w.loc[("ClinicDB", "DSC (%)"), "CLIPSeg DA = dense VL"] == "90.00 ± 1.00 (88.73; +1.27)"
    assert w.loc[("", "trainable params"), "CLIPSeg DA = dense VL"] == "2.97M (paper 3M)"


@needs_paper
def test_table2_beside_the_paper(fake_results):
    t = table2(collect(fake_results))
    assert len(t) == 2 * 4                       # dense v, dense vl, shallow vl, shallow vlc per dataset
    assert list(t.row[:4]) == ["V dense", "VL shallow", "VL dense", "VLC shallow"]
    p2 = _paper(2)
    for r in t.itertuples():
        col = r.paper_column.split(": ")[1]
        want = float(p2[(p2.dataset == r.dataset) & (p2.metric == "DSC")][col].iloc[0])
        assert r.dice_paper == pytest.approx(want) and r.dice_diff == pytest.approx(r.dice - want)
    assert wide(t).shape == (1 + 2 * 3, 4)


def test_tables_without_a_paper_row_and_empty(tmp_path, fake):
    run_sweep(SMALL, tmp_path, progress=False)
    df = collect(tmp_path)
    t1, t2 = table1(df), table2(df)
    assert list(t1.row) == ["decoder (paper: CLIPSeg E2E †)", "CLIPSeg DA = dense VL"] and t1.dice_paper.isna().all()
    assert sorted(t2.row) == ["V dense", "VL dense"] and t2.dice_paper.isna().all()
    assert "(" not in wide(t2).iloc[1, 0]              # no paper number to show
    assert table1(df.iloc[:0]).empty and table2(df.iloc[:0]).empty


def test_markdown_and_files(fake_results, tmp_path):
    df = collect(fake_results)
    files = write_tables(df, tmp_path / "tables")
    assert {"runs", "table1", "table1_md", "table2", "table2_md", "figure2"} <= set(files)
    md = files["table1_md"].read_text()
    assert "| dataset | metric | decoder (paper: CLIPSeg E2E †) |" in md and "no_grad" in md
    assert len({line.count("|") for line in md.splitlines() if line.startswith("|")}) == 1   # a rectangular table
    assert pd.read_csv(files["table2"]).shape[0] == 8
    assert files["figure2"].stat().st_size > 10_000
    assert to_markdown(pd.DataFrame({"x": [1.0]}), index=False) == "| x |\n|---:|\n| 1.00 |\n"


def test_figure2(fake_results):
    import matplotlib.pyplot as plt
    fig = figure2(collect(fake_results))
    assert len([a for a in fig.axes if a.has_data()]) == 2
    plt.close(fig)
    fig = figure2()                                     # the paper's numbers alone
    assert len([a for a in fig.axes if a.has_data()]) == 8 and "not our results" in fig._suptitle.get_text()
    plt.close(fig)


def test_estimate_cost():
    est = estimate_cost(paper_grid())
    assert len(est) == 192 and (est.gpu_hours > 0).all()
    by = est.groupby("method").gpu_hours.sum()
    assert by["e2e"] > by["decoder"]                   # slower throughput, same images
    assert estimate_cost(Grid("kvasir", "dense", "vl", 1, max_epochs=2)).epochs.tolist() == [2]


# ---------------------------------------------------------------- command line
def test_cli_dry_run_and_errors(tmp_path, capsys, fake):
    assert main(["--datasets", "kvasir", "--methods", "dense", "decoder", "--variants", "vl", "--seeds", "41",
                 "--root", str(tmp_path), "--dry-run", "--set", "max_epochs=3", "--set", "model=tiny"]) == 0
    out = capsys.readouterr().out
    assert "kvasir-dense-vl-seed41" in out and "kvasir-decoder-seed41" in out and "2 train+evaluate" in out
    with pytest.raises(SystemExit):
        main(["--datasets", "kvasirr", "--root", str(tmp_path), "--dry-run"])
    assert main(["--datasets", "kvasir", "--root", str(tmp_path), "--set", "weight_decay=1", "--dry-run"]) == 2
    assert main(["--estimate"]) == 0 and "192 runs" in capsys.readouterr().out
    assert main(["--datasets", "synthetic", "--methods", "decoder", "--seeds", "1", "--root", str(tmp_path),
                 "--no-progress"]) == 0
    assert (tmp_path / "tables" / "runs.csv").exists()
    assert main(["--root", str(tmp_path), "--tables-only"]) == 0
    assert fake.calls and all(c[2].get("max_epochs") is None for c in fake.calls)


def test_cli_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vlsm_adapter.experiments", "--datasets", "kvasir", "isic16", "--methods",
                        "dense", "shallow", "--variants", "v", "vl", "vlc", "--seeds", "41", "42", "43", "--root",
                        str(tmp_path), "--data-root", "data", "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "36 runs: 36 train+evaluate" in r.stdout


# ---------------------------------------------------------------- the real thing: papermill, kernels, fit, evaluate
def test_real_tiny_sweep_through_papermill(tmp_path):
    """One failing run (an unknown dataset passed straight through to 05_train) and one real tiny run: the failure
    is recorded with its executed notebook and the sweep continues; a second pass skips the finished run."""
    from vlsm_adapter.clipseg import tiny_pretrained_path
    model = "tiny-pretrained" if tiny_pretrained_path().is_file() else "tiny"
    tiny = dict(model=model, synthetic_n=16, batch_size=8, max_epochs=1, image_size=160)
    specs = [RunSpec("nosuch", "dense", "vl", 41, dict(tiny)), RunSpec("synthetic", "dense", "vl", 41, dict(tiny))]
    with pytest.raises(SweepFailed) as e:
        run_sweep(specs, tmp_path, progress=False)
    t = e.value.table
    assert list(t.status) == ["failed", "done"], t
    assert t.stage[0] == "train" and "nosuch" in t.error[0] and "kvasir" in t.error[0]    # the known names are listed
    assert Path(t.notebook[0]).is_file()                                                 # the partial record
    run = tmp_path / "synthetic-dense-vl-seed41"
    assert {"train.ipynb", "evaluate.ipynb", "summary.json", "config.json", "eval-test-best", "train.kernel.log",
            "evaluate.kernel.log"} <= {p.name for p in run.iterdir()}
    df = collect(tmp_path)
    assert df.name.tolist() == ["synthetic-dense-vl-seed41"] and df.n_test.tolist() == [4]
    assert df.model.tolist() == [model] and df.image_size.tolist() == [160]
    t2 = run_sweep(specs[1:], tmp_path, progress=False)
    assert t2.status.tolist() == ["skipped"]


def test_papermill_sees_every_parameter_of_the_run_notebooks():
    "A comment holding '=' once hid `zero_shot` from papermill (so `--eval-set zero_shot=False` was refused)."
    import nbformat
    root = Path(ex.__file__).resolve().parents[1] / "nbs"
    for nb, must in (("05_train.ipynb", {"dataset", "method", "batch_size", "max_epochs", "synthetic_n"}),
                     ("06_evaluate.ipynb", {"run_dir", "split", "which", "zero_shot", "limit"})):
        cell = next(c for c in nbformat.read(root / nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        names = {l.split("=")[0].strip() for l in cell.source.splitlines() if "=" in l and not l.lstrip().startswith("#")}
        assert set(ex.notebook_parameters(root / nb)) == names, nb
        assert must <= names, nb
