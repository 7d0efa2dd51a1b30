"""Tests of vlsm_adapter.evaluate: a real short run on the ClinicDB subset evaluated end to end, the written masks
re-scored independently (PIL + MONAI, never the package's readers), the embedded paper tables, run-folder errors,
the command line and papermill.

The ClinicDB data is read from the shared folder (`vlsm_adapter.utils.shared_path`); those tests skip with a reason
when it is absent. MONAI is a dev dependency used only here, as an independent reference.
"""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlsm_adapter.clipseg import load_clipseg
from vlsm_adapter.evaluate import (EVAL_KIND, PAPER_CITATION, compare_with_paper, evaluate_run, load_eval, load_run,
                                   main, paper_row, paper_table, predict_mask, read_run, run_dataset)
from vlsm_adapter.metrics import dice_score, iou_score
from vlsm_adapter.model import VLSMAdapter, save_adapter
from vlsm_adapter.utils import shared_path

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_path("data")
CLINICDB = DATA / "clinicdb_polyp" if DATA is not None and (DATA / "clinicdb_polyp").is_dir() else None
needs_clinicdb = pytest.mark.skipif(CLINICDB is None, reason="shared data folder ../shared/data/clinicdb_polyp not found "
                                    "(the real ClinicDB subset lives beside the project, never inside it)")


def fake_run(folder: Path, best: bool = True, finished: bool = True, method: str = "dense", variant: str = "vl", **cfg) -> Path:
    "A run folder as fit() leaves it (config.json from TrainConfig, adapter folders), untrained, without training."
    from vlsm_adapter.train import TrainConfig
    folder.mkdir(parents=True, exist_ok=True)
    tc = TrainConfig(dataset=cfg.pop("dataset", "synthetic"), model="tiny", method=method, variant=variant,
                     out_dir=str(folder), **cfg).resolved()
    base, _ = load_clipseg("tiny")
    m = VLSMAdapter(base, method, variant)
    for d in (["best"] if best else []) + ["last"]:
        save_adapter(m, folder / d)
    (folder / "config.json").write_text(json.dumps(dict(train_config=dataclasses.asdict(tc), params=m.count_parameters())))
    if finished:
        (folder / "summary.json").write_text(json.dumps(dict(status="finished", best_epoch=1, best_val_dice=1.0)))
    return folder


# --------------------------------------------------------------------------------------------------------------------
# the real path: ClinicDB, a short tiny run, evaluated on its 20 test images
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clinicdb_eval(tmp_path_factory):
    if CLINICDB is None:
        pytest.skip("shared data folder ../shared/data/clinicdb_polyp not found")
    from vlsm_adapter.train import TrainConfig, fit
    run = tmp_path_factory.mktemp("clinicdb_run")
    fit(TrainConfig(dataset="clinicdb", data_root=str(DATA), model="tiny", max_epochs=1, batch_size=8, limit_batches=2,
                    progress=False, out_dir=str(run)))
    res = evaluate_run(run, split="test", progress=False)
    return run, res


def _gt(mask_name: str) -> np.ndarray:
    "Ground truth straight from the shared file (PIL, > 127), not through the data module."
    with Image.open(CLINICDB / "masks" / mask_name) as im:
        return np.asarray(im.convert("L")) > 127


@needs_clinicdb
def test_clinicdb_masks_written_lossless_at_original_size(clinicdb_eval):
    run, res = clinicdb_eval
    test_json = json.loads((CLINICDB / "anns" / "test.json").read_text())
    assert res.out_dir == run / "eval-test-best"
    pngs = sorted((res.out_dir / "masks").rglob("*"))
    assert len(pngs) == 20 == len(test_json)
    assert sorted(p.name for p in pngs) == sorted(Path(r["mask_name"]).with_suffix(".png").name for r in test_json)
    values = set()
    for p in pngs:
        assert p.suffix == ".png"
        with Image.open(p) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (384, 288)   # W x H of ClinicDB
            a = np.asarray(im)
        assert a.dtype == np.uint8 and set(np.unique(a)) <= {0, 255}, f"{p}: values {np.unique(a)[:8]}"
        values |= set(np.unique(a).tolist())
    assert values <= {0, 255}


@needs_clinicdb
def test_clinicdb_csv_and_summary(clinicdb_eval):
    run, res = clinicdb_eval
    csv = pd.read_csv(res.out_dir / "per_image.csv")
    assert len(csv) == 20
    for col in ("img_name", "mask_name", "prompt", "dice", "iou", "hd95", "empty_rule", "height", "width"):
        assert col in csv.columns, col
    assert np.isfinite(csv[["dice", "iou", "hd95"]].to_numpy()).all()
    assert (csv.height == 288).all() and (csv.width == 384).all()
    s = json.loads((res.out_dir / "summary.json").read_text())
    assert s == res.summary and s["kind"] == EVAL_KIND
    assert (s["n"], s["split"], s["which"], s["dataset"], s["method"], s["variant"]) == (20, "test", "best", "clinicdb", "dense", "vl")
    assert s["trainable_params"] == json.loads((run / "config.json").read_text())["params"]["trainable"]
    for k in ("dice", "iou", "hd95"):
        assert s[f"{k}_mean"] == pytest.approx(csv[k].mean(), abs=1e-9)
        assert s[f"{k}_std"] == pytest.approx(csv[k].std(ddof=1), abs=1e-9)
    rules = csv.empty_rule.astype(object).where(csv.empty_rule.notna(), "none")
    for r in ("both_empty", "pred_empty", "gt_empty"):
        assert s[f"n_{r}"] == int((rules == r).sum())
    # the test prompts are the run's validation choice (random), epoch-0 draw, seeded: one per image, reproducible
    ds = run_dataset(json.loads((run / "config.json").read_text())["train_config"], "test")
    assert csv.prompt.tolist() == [ds.pick_prompt(i, 0) for i in csv["index"]]
    # and the folder reads back
    back = load_eval(res.out_dir)
    assert back.summary == s and len(back.per_image) == 20


@needs_clinicdb
def test_clinicdb_metrics_recomputed_independently(clinicdb_eval):
    "Dice/IoU/HD95 from the written PNGs and the raw GT files, with the package's dice_score and with MONAI."
    monai = pytest.importorskip("monai", reason="MONAI (a dev dependency) is the independent reference")
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
    _, res = clinicdb_eval
    csv = pd.read_csv(res.out_dir / "per_image.csv")
    torch.set_num_threads(1)      # MONAI's many small ops run faster on one thread (restored by the autouse fixture)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, row in csv.iterrows():
            with Image.open(res.out_dir / row.pred_mask) as im:
                pred = np.asarray(im) == 255
            gt = _gt(row.mask_name)
            assert pred.shape == gt.shape == (288, 384)
            assert dice_score(pred, gt) == pytest.approx(row.dice, abs=1e-9)
            assert iou_score(pred, gt) == pytest.approx(row.iou, abs=1e-9)
            P, G = (torch.from_numpy(x)[None, None].float() for x in (pred, gt))
            assert 100 * compute_dice(P, G, ignore_empty=False).item() == pytest.approx(row.dice, abs=1e-3)
            assert 100 * compute_iou(P, G, ignore_empty=False).item() == pytest.approx(row.iou, abs=1e-3)
            if pred.any() and gt.any():
                hd = compute_hausdorff_distance(P, G, percentile=95).item()
                assert hd == pytest.approx(row.hd95, abs=1e-3)
            else:   # our documented empty rules: one empty -> the image diagonal, both empty -> 0
                assert row.hd95 == pytest.approx(math.hypot(288, 384) if pred.any() or gt.any() else 0.0)


@needs_clinicdb
def test_clinicdb_prediction_is_resize_then_threshold(clinicdb_eval):
    "The PNG of an image is sigmoid(logits) at 352, bilinearly resized to 288x384, then > 0.5."
    run, res = clinicdb_eval
    model, tok, tc = load_run(run)
    ds = res.dataset
    row = res.per_image.iloc[0]
    it = ds[int(row["index"])]
    enc = tok([it["prompt"]], padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        prob = torch.sigmoid(model(it["pixel_values"][None], enc["input_ids"], enc["attention_mask"]))[0]
    up = F.interpolate(prob[None, None], size=(288, 384), mode="bilinear", align_corners=False)[0, 0]
    ref = up > 0.5
    with Image.open(res.out_dir / row.pred_mask) as im:
        png = np.asarray(im) == 255
    # the PNG came from another float forward (in a batch): pixels within rounding of 0.5 may fall either way
    sure = ((up - 0.5).abs() > 1e-5).numpy()
    assert np.array_equal(png[sure], ref.numpy()[sure]) and sure.mean() > 0.99
    assert np.array_equal(predict_mask(prob, (288, 384)), ref.numpy())


@needs_clinicdb
def test_cli_module(clinicdb_eval, tmp_path):
    run, _ = clinicdb_eval
    out = tmp_path / "cli"
    p = subprocess.run([sys.executable, "-m", "vlsm_adapter.evaluate", str(run), "--split", "test", "--which", "last",
                        "--limit", "3", "--batch-size", "2", "--out-dir", str(out), "--no-progress"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "beside the paper (Table 2, VL DA" in p.stdout and "88.73" in p.stdout      # ClinicDB, dense VL: Table 2
    assert len(pd.read_csv(out / "per_image.csv")) == 3
    assert json.loads((out / "summary.json").read_text())["which"] == "last"


# --------------------------------------------------------------------------------------------------------------------
# the paper's numbers
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2])
def test_embedded_tables_equal_shared_csv(n):
    ref = shared_path("paper", f"table{n}.csv")
    if ref is None:
        pytest.skip(f"shared paper/table{n}.csv not found: nothing to compare the embedded copy with")
    pd.testing.assert_frame_equal(paper_table(n), pd.read_csv(ref))


def test_paper_row_cells():
    r = paper_row("clinicdb", "dense", "vl")
    assert (r["dice"], r["iou"], r["hd95"]) == (88.73, 81.84, 18.76) and r["column"] == "VL_dense" and r["table"] == 2
    assert "Table 1" in r["source"] and r["citation"] == PAPER_CITATION and "2405.06196" in PAPER_CITATION
    assert paper_row("Kvasir-SEG", "dense", "v")["hd95"] == 43.48
    assert paper_row("bkai_polyp", "shallow", "vlc")["iou"] == 75.61
    assert paper_row("camus", "shallow", "v")["dice"] == 87.21
    assert paper_row("busi", "dense", "vlc")["hd95"] == 75.99
    dec = paper_row("isic16", "decoder")
    assert (dec["dice"], dec["column"], dec["variant"]) == (91.88, "CLIPSeg_E2E", None) and "decoder" in dec["note"]
    assert paper_row("dfu", "e2e")["iou"] == 61.61
    assert paper_row("synthetic", "dense", "vl") is None and paper_row("nope", "dense", "vl") is None
    with pytest.raises(ValueError, match="method"):
        paper_row("clinicdb", "lora", "vl")
    # Table 1's SA/DA columns are Table 2's VL columns (the paper's own consistency)
    t1, t2 = paper_table(1), paper_table(2)
    assert t1.CLIPSeg_SA.tolist() == t2.VL_shallow.tolist() and t1.CLIPSeg_DA.tolist() == t2.VL_dense.tolist()


def test_compare_with_paper():
    s = dict(dataset="clinicdb", method="shallow", variant="v", dice_mean=90.0, dice_std=5.0, iou_mean=80.0, iou_std=4.0,
             hd95_mean=20.0, hd95_std=3.0)
    t = compare_with_paper(s)
    assert t.loc["Dice (%)", "paper"] == 89.14 and t.loc["Dice (%)", "ours − paper"] == pytest.approx(0.86)
    assert t.loc["HD95 (px)", "ours"] == "20.00 ± 3.00"
    assert compare_with_paper(dict(s, dataset="synthetic")) is None


# --------------------------------------------------------------------------------------------------------------------
# run folders: errors, warnings, datasets
# --------------------------------------------------------------------------------------------------------------------
def test_load_run_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder") as e:
        load_run(tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        load_run(tmp_path / "does_not_exist")
    (tmp_path / "config.json").write_text('{"something": 1}')
    with pytest.raises(ValueError, match="train_config") as e:
        read_run(tmp_path)
    assert str(tmp_path) in str(e.value)
    run = fake_run(tmp_path / "r", best=False)
    import shutil
    shutil.rmtree(run / "last")
    with pytest.raises(FileNotFoundError, match="'best' adapter") as e:
        load_run(run)
    assert str(run) in str(e.value)


def test_unfinished_and_fallback_warn(tmp_path):
    run = fake_run(tmp_path / "r", best=False, finished=False)
    with pytest.warns(UserWarning) as w:
        model, tok, tc = load_run(run)
    msgs = " | ".join(str(x.message) for x in w)
    assert "unfinished" in msgs and "falling back" in msgs
    assert model.loaded_from == run / "last" and not model.training and tc["dataset"] == "synthetic"


def test_synthetic_sizes_follow_fit(tmp_path):
    run = fake_run(tmp_path / "r", synthetic_n=8)
    tc = read_run(run)["train_config"]
    assert [len(run_dataset(tc, s)) for s in ("train", "val", "test")] == [8, 2, 2]
    res = evaluate_run(run, split="val", progress=False, batch_size=1)
    assert res.out_dir == run / "eval-val-best" and res.summary["n"] == 2
    for p in (res.out_dir / "masks").rglob("*.png"):
        with Image.open(p) as im:
            assert im.size == (320, 240)      # the synthetic images' original size, not 352
    # a foreign folder with masks/ is never overwritten
    (tmp_path / "foreign" / "masks").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing"):
        evaluate_run(run, progress=False, out_dir=tmp_path / "foreign")
    with pytest.raises(ValueError, match="threshold"):
        evaluate_run(run, threshold=1.5)


def test_interrupted_evaluation_is_redone(tmp_path):
    "An evaluation killed after its first masks (marker present, no summary) is cleaned and redone, not refused."
    from vlsm_adapter.evaluate import EVAL_MARKER
    run = fake_run(tmp_path / "r", synthetic_n=8)
    out = run / "eval-val-best"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "stale.png").write_bytes(b"half")
    (out / EVAL_MARKER).write_text("x")
    res = evaluate_run(run, split="val", progress=False)
    assert res.summary["n"] == 2 and not (out / "masks" / "stale.png").exists() and not (out / EVAL_MARKER).exists()


def test_main_function(tmp_path, capsys):
    run = fake_run(tmp_path / "r", synthetic_n=4)
    r = main([str(run), "--no-progress", "--out-dir", str(tmp_path / "e")])
    out = capsys.readouterr().out
    assert "Dice (%)" in out and "written to" in out and r.summary["n"] == 1


def test_papermill_bad_run_dir(tmp_path):
    pm = pytest.importorskip("papermill")
    bad = tmp_path / "no_such_run"
    with pytest.raises(Exception) as e:
        pm.execute_notebook(str(ROOT / "nbs" / "06_evaluate.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters=dict(run_dir=str(bad)), cwd=str(ROOT / "nbs"), progress_bar=False,
                            kernel_name="python3")
    assert "no_such_run" in str(e.value) and "does not exist" in str(e.value)
