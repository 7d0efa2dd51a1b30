"""Training machinery: exact resume after kill -9, refusal to overwrite, feature cache equivalence, CLI and papermill errors."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from vlsm_adapter.train import fit, TrainConfig, build_parser, CHECKPOINT, SUMMARY, CONFIG, METRICS, CURVES

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(dataset="synthetic", model="tiny", synthetic_n=24, batch_size=8, image_size=160, progress=False)


def _weights(run):
    return load_file(Path(run) / "last" / "adapter_model.safetensors")


def _same(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_and_no_silent_overwrite(tmp_path):
    r = fit(TrainConfig(out_dir=str(tmp_path), max_epochs=2, **QUICK))
    for f in (CONFIG, METRICS, CURVES, SUMMARY, CHECKPOINT, "best", "last"):
        assert (tmp_path / f).exists(), f
    assert len(pd.read_csv(tmp_path / METRICS)) == 2 == len(r.history)
    assert json.loads((tmp_path / SUMMARY).read_text())["status"] == "finished"
    with pytest.raises(FileExistsError, match="holds a finished run"):
        fit(TrainConfig(out_dir=str(tmp_path), max_epochs=2, **QUICK))
    r2 = fit(TrainConfig(out_dir=str(tmp_path), max_epochs=1, overwrite=True, **QUICK))
    assert len(r2.history) == 1


def test_refuses_unfinished_run_with_other_settings(tmp_path):
    fit(TrainConfig(out_dir=str(tmp_path), max_epochs=1, **QUICK))
    (tmp_path / SUMMARY).unlink()                      # as if it had crashed
    with pytest.raises(ValueError, match="lr: stored"):
        fit(TrainConfig(out_dir=str(tmp_path), max_epochs=2, lr=0.1, **QUICK))


def test_resume_after_kill_9_mid_epoch_is_exact(tmp_path):
    args = [sys.executable, "-m", "vlsm_adapter.train", "--dataset", "synthetic", "--model", "tiny",
            "--synthetic-n", "48", "--batch-size", "8", "--image-size", "160", "--max-epochs", "3",
            "--checkpoint-every", "2", "--no-progress", "--seed", "7"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "uninterrupted"
    subprocess.run(args + ["--out-dir", str(ref)], check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    p = subprocess.Popen(args + ["--out-dir", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ck = run / CHECKPOINT
    deadline = time.time() + 300
    # wait for a mid-epoch checkpoint of the second epoch, then kill -9 while it keeps training
    while time.time() < deadline:
        if ck.exists():
            try:
                st = torch.load(ck, map_location="cpu", weights_only=False)["state"]
            except Exception:
                st = None                                  # being replaced right now: atomic rename, try again
            if st and st["epoch"] >= 1 and st["step_in_epoch"] > 0:
                break
        if p.poll() is not None:
            pytest.fail("training finished before it could be killed: " + p.stdout.read().decode()[-2000:])
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (run / SUMMARY).exists(), "the run finished before the kill"
    st = torch.load(ck, map_location="cpu", weights_only=False)["state"]
    out = subprocess.run(args + ["--out-dir", str(run)], check=True, env=env, capture_output=True, text=True)
    assert "resuming" in out.stdout
    assert _same(_weights(ref), _weights(run)), f"resumed from {st['epoch']}/{st['step_in_epoch']} but weights differ"
    a, b = pd.read_csv(ref / METRICS), pd.read_csv(run / METRICS)
    pd.testing.assert_series_equal(a.val_dice, b.val_dice)


def test_feature_cache_matches_recompute(tmp_path):
    kw = dict(QUICK, method="shallow", variant="v", max_epochs=2)
    a = fit(TrainConfig(out_dir=str(tmp_path / "a"), cache_features=False, **kw))
    b = fit(TrainConfig(out_dir=str(tmp_path / "b"), cache_features=True, **kw))
    # the same computation up to float rounding (text features are encoded per distinct prompt, padded differently)
    for col in ("train_loss", "val_loss"):
        assert torch.allclose(torch.tensor(a.history[col].values), torch.tensor(b.history[col].values), atol=1e-4), col
    # thresholded Dice moves by a few boundary pixels at most
    assert torch.allclose(torch.tensor(a.history.val_dice.values), torch.tensor(b.history.val_dice.values), atol=0.05)


def test_cli_options_and_errors():
    a = build_parser().parse_args(["--dataset", "clinicdb", "--method", "shallow", "--variant", "vlc", "--no-progress"])
    assert (a.dataset, a.method, a.variant, a.progress) == ("clinicdb", "shallow", "vlc", False)
    r = subprocess.run([sys.executable, "-m", "vlsm_adapter.train", "--dataset", "isic2018"], capture_output=True, text=True)
    assert r.returncode != 0 and "isic2018" in r.stderr and "isic16" in r.stderr


@pytest.mark.parametrize("param,value,allowed", [("dataset", "kvasirr", "kvasir"), ("method", "lora", "'dense'"),
                                                  ("variant", "lv", "'vlc'")])
def test_papermill_bad_parameter_fails_fast(tmp_path, param, value, allowed):
    t = time.time()
    r = subprocess.run([str(Path(sys.executable).parent / "papermill"), str(ROOT / "nbs" / "05_train.ipynb"),
                        str(tmp_path / "out.ipynb"), "-p", param, value, "--cwd", str(ROOT / "nbs")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert value in r.stderr and allowed in r.stderr, r.stderr[-2000:]
    # it failed in the cell right after the parameters, before any training
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    errs = [i for i, c in enumerate(nb["cells"]) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    params = [i for i, c in enumerate(nb["cells"]) if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    next_code = next(i for i in range(params[0] + 1, len(nb["cells"])) if nb["cells"][i]["cell_type"] == "code")
    assert errs and errs[0] == next_code, (errs, params)    # (papermill puts a markdown error banner in between)


def test_quickstart_beats_trivial_predictor(tmp_path):
    "The README's main job: tiny-pretrained + dense VL adapters on synthetic data beat the constant predictors."
    r = fit(TrainConfig(dataset="synthetic", out_dir=str(tmp_path), max_epochs=1, synthetic_n=48, progress=False))
    assert r.params["trainable"] == 99_840 and TrainConfig().resolved().model == "tiny-pretrained"
    assert r.best_val_dice > max(r.trivial.values()) + 10, (r.best_val_dice, r.trivial)


def test_resume_after_last_epoch_before_summary(tmp_path):
    "Killed between the last checkpoint and summary.json: restarting finishes the run without training again."
    r1 = fit(TrainConfig(out_dir=str(tmp_path), max_epochs=1, **QUICK))
    (tmp_path / SUMMARY).unlink()
    r2 = fit(TrainConfig(out_dir=str(tmp_path), max_epochs=1, **QUICK))
    assert r2.resumed_from_epoch == 1 and len(r2.history) == 1 and r2.trivial == r1.trivial
    assert json.loads((tmp_path / SUMMARY).read_text())["status"] == "finished"
