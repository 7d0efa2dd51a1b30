"""Reliability: no code execution from run folders, no silently wrong data, one writer per run folder, a record
that stays true (see nbs/reliability.qmd). Each test here failed on the code before these guarantees."""
import re
import json, os, pickle, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from vlsm_adapter.data import (DatasetError, MedVLSMDataset, PromptCollator, SyntheticDataset, image_to_tensor,
                               mask_to_bool, validate, write_medvlsm)
from vlsm_adapter.model import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_vlsm_adapter
from vlsm_adapter.train import (CHECKPOINT, CONFIG, LOCK, SUMMARY, RunFolderBusy, TrainConfig, fit, load_checkpoint,
                                run_lock)
from vlsm_adapter.utils import shared_path

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(dataset="synthetic", model="tiny", synthetic_n=16, batch_size=8, image_size=160, progress=False)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-m", "vlsm_adapter.train"]


def _cli_args(out, **kw):
    args = ["--dataset", "synthetic", "--model", "tiny", "--synthetic-n", "16", "--batch-size", "8", "--image-size", "160",
            "--no-progress", "--out-dir", str(out)]
    for k, v in kw.items(): args += [f"--{k.replace('_', '-')}", str(v)]
    return CLI + args


class Payload:
    "Unpickling this runs code: it writes `marker`."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def plant_payload(run: Path) -> Path:
    "Replace the run's checkpoint by a crafted pickle (a valid torch zip file); return the marker it would write."
    marker = run.parent / f"{run.name}-PAYLOAD-RAN"
    torch.save({k: Payload(marker) for k in ("weights", "optimizer", "scheduler", "state", "config")}, run / CHECKPOINT)
    return marker


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory) -> Path:
    "An unfinished one-epoch run (summary.json removed, as if killed): a resume reads its checkpoint."
    out = tmp_path_factory.mktemp("runs") / "unfinished"
    fit(TrainConfig(out_dir=str(out), max_epochs=1, **QUICK))
    (out / SUMMARY).unlink()
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    (dst / LOCK).unlink(missing_ok=True)
    return dst


# ================================================================== security: checkpoints never run code
def test_crafted_checkpoint_is_refused_by_fit(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path / "run")
    marker = plant_payload(run)
    with pytest.raises(ValueError, match="refusing to load"):
        fit(TrainConfig(out_dir=str(run), max_epochs=2, **QUICK))
    assert not marker.exists(), "unpickling the checkpoint executed its payload"


def test_crafted_checkpoint_is_refused_by_the_cli(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path / "run")
    marker = plant_payload(run)
    r = subprocess.run(_cli_args(run, max_epochs=2), capture_output=True, text=True, env=ENV)
    assert r.returncode != 0 and "refusing to load" in r.stderr, r.stderr[-2000:]
    assert not marker.exists()


def test_crafted_checkpoint_is_refused_by_the_training_notebook(unfinished, tmp_path):
    "papermill 05_train (what the sweep runs) resuming the run folder."
    run = copy_run(unfinished, tmp_path / "run")
    marker = plant_payload(run)
    params = ["-p", "dataset", "synthetic", "-p", "model", "tiny", "-p", "synthetic_n", "16", "-p", "batch_size", "8",
              "-p", "image_size", "160", "-p", "max_epochs", "2", "-p", "out_dir", str(run)]
    env = {k: v for k, v in ENV.items() if k not in ("IN_TEST", "PYTEST_CURRENT_TEST")}   # a real run, not a test run
    r = subprocess.run([str(Path(sys.executable).parent / "papermill"), str(ROOT / "nbs" / "05_train.ipynb"),
                        str(tmp_path / "out.ipynb"), *params, "--cwd", str(ROOT / "nbs")], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "refusing to load" in r.stderr, r.stderr[-2000:]
    assert not marker.exists()


def test_readers_of_run_folders_never_unpickle(unfinished, tmp_path):
    "evaluate, the demo and the sweep tools read adapters (safetensors) and JSON only: a crafted checkpoint stays inert."
    from vlsm_adapter.evaluate import evaluate_run
    from vlsm_adapter.widgets import DemoSession
    from vlsm_adapter.experiments import collect, plan_run, train_status
    run = copy_run(unfinished, tmp_path / "sweep" / "synthetic-dense-vl-seed42")
    (run / SUMMARY).write_text(json.dumps(dict(status="finished", best_epoch=1, best_val_dice=1.0, epochs=1)))
    marker = plant_payload(run)
    evaluate_run(run, progress=False)
    s = DemoSession("tiny", verbose=False); s.set_adapter(run)
    assert collect(tmp_path / "sweep").name.tolist() == [run.name]
    assert train_status(run) == "finished" and plan_run(run, {})[0] == "skip"
    assert not marker.exists()


def test_only_checkpoints_are_unpickled_in_the_package():
    "Every torch.load / pickle load of the package goes through load_checkpoint (weights_only=True)."
    hits = []
    for f in (ROOT / "vlsm_adapter").glob("*.py"):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if any(k in line for k in ("torch.load(", "pickle.load", "pickle.loads", "joblib.load", "np.load(")):
                hits.append((f.name, n, line.strip()))
    calls = [h for h in hits if not h[2].startswith(('"', "#"))          # not docstrings or comments
             and not ("np.load(" in h[2] and h[2].count("np.load(") == h[2].count("allow_pickle=False"))]   # plain arrays only
    assert [h[0] for h in calls] == ["train.py"] and "weights_only=True" in calls[0][2], calls


# ================================================================== one writer per run folder
def _wait_for(pred, timeout=240, proc=None):
    t = time.time()
    while time.time() - t < timeout:
        if pred(): return True
        if proc is not None and proc.poll() is not None: return False
        time.sleep(0.05)
    return False


def test_two_trainings_on_one_folder(tmp_path):
    run = tmp_path / "run"
    # the first run would train for days (no early stop): it still holds the folder when the second starts
    first = subprocess.Popen(_cli_args(run, max_epochs=10**6, patience=10**6), env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        held = lambda: (run / LOCK).exists() and "pid" in (run / LOCK).read_text()      # the first run holds the lock
        assert _wait_for(held, proc=first), first.stdout.read().decode()[-2000:]
        second = subprocess.run(_cli_args(run, max_epochs=50), capture_output=True, text=True, env=ENV)
        assert second.returncode != 0
        assert "in use by another process" in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr[-2000:]
        assert str(run) in second.stderr
    finally:
        first.send_signal(signal.SIGKILL); first.wait()
    with run_lock(run):                       # the killed holder left no stale lock
        assert f"pid {os.getpid()}" in (run / LOCK).read_text()


def test_evaluation_refused_while_another_process_holds_the_run(unfinished, tmp_path):
    from vlsm_adapter.evaluate import evaluate_run
    run = copy_run(unfinished, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", f"from vlsm_adapter.train import run_lock\nimport time\n"
                               f"with run_lock({str(run)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=f"pid {holder.pid}"):
            evaluate_run(run, progress=False)
        with pytest.raises(RunFolderBusy, match="in use by another process"):
            fit(TrainConfig(out_dir=str(run), max_epochs=1, **QUICK))
    finally:
        holder.kill(); holder.wait()
    assert not (run / "eval-test-best").exists()
    evaluate_run(run, progress=False)          # the lock died with its process


# ================================================================== the record stays true
def test_overwrite_clears_the_old_runs_evaluations(tmp_path):
    from vlsm_adapter.evaluate import evaluate_run
    fit(TrainConfig(out_dir=str(tmp_path), max_epochs=1, **QUICK))
    evaluate_run(tmp_path, progress=False)
    assert (tmp_path / "eval-test-best" / "summary.json").is_file()
    (tmp_path / "notes.txt").write_text("mine")
    fit(TrainConfig(out_dir=str(tmp_path), max_epochs=1, overwrite=True, **QUICK))
    assert not (tmp_path / "eval-test-best").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"     # only what runs and evaluations write is removed


def test_early_stop_survives_a_kill_before_the_summary(tmp_path):
    kw = dict(QUICK, out_dir=str(tmp_path), max_epochs=5, patience=1, min_delta=1000.0)   # no epoch after the first improves
    r1 = fit(TrainConfig(**kw))
    assert r1.stopped_early and len(r1.history) == 2
    (tmp_path / SUMMARY).unlink()                       # killed after the last checkpoint, before summary.json
    r2 = fit(TrainConfig(**kw))
    assert len(r2.history) == 2 and r2.stopped_early, r2.history
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 2


def test_settings_checked_against_the_checkpoint_when_config_is_gone(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path / "run")
    (run / CONFIG).unlink()
    stored = TrainConfig(**QUICK).resolved().lr                     # the default lr the unfinished run was trained with
    with pytest.raises(ValueError, match=rf"lr: stored {re.escape(str(stored))} \(checkpoint.pt\), now 0.1"):
        fit(TrainConfig(out_dir=str(run), max_epochs=2, lr=0.1, **QUICK))


def test_truncated_config_names_the_file(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path / "run")
    (run / CONFIG).write_text((run / CONFIG).read_text()[:50])
    with pytest.raises(ValueError) as e:
        fit(TrainConfig(out_dir=str(run), max_epochs=2, **QUICK))
    assert str(run / CONFIG) in str(e.value) and "Delete it to resume" in str(e.value)


def test_truncated_checkpoint_names_the_file_and_the_weights_left(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path / "run")
    data = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as e:
        fit(TrainConfig(out_dir=str(run), max_epochs=2, **QUICK))
    msg = str(e.value)
    assert str(run / CHECKPOINT) in msg and "truncated or corrupt" in msg and str(run / "best") in msg
    load_vlsm_adapter(run / "best")                     # and the best weights are indeed still there


def test_leftover_temporary_files_are_removed(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path / "run")
    junk = [run / ".checkpoint.pt.k3j2.tmp", run / "best" / ".adapter_model.safetensors.x1.tmp"]
    for j in junk: j.write_bytes(b"half a file")
    fit(TrainConfig(out_dir=str(run), max_epochs=2, **QUICK))
    assert not any(j.exists() for j in junk)


def test_truncated_adapter_file_names_the_file(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path / "run")
    w = run / "best" / ADAPTER_WEIGHTS
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(ValueError) as e: load_vlsm_adapter(run / "best")
    assert str(w) in str(e.value) and "truncated or corrupt" in str(e.value)


def test_adapter_config_edited_is_refused(unfinished, tmp_path):
    run = copy_run(unfinished, tmp_path / "run")
    f = run / "best" / ADAPTER_CONFIG
    cfg = json.loads(f.read_text())
    assert cfg["activation"] == "relu"
    f.write_text(json.dumps(dict(cfg, activation="gelu")))
    with pytest.raises(ValueError, match="activation: adapter_config.json has 'gelu', the weights were saved with 'relu'"):
        load_vlsm_adapter(run / "best")


@pytest.mark.parametrize("damage,msg", [("nan", "non-finite"), ("int", "non-float")])
def test_adapter_weights_nan_or_int_are_refused(unfinished, tmp_path, damage, msg):
    run = copy_run(unfinished, tmp_path / "run")
    w = run / "best" / ADAPTER_WEIGHTS
    from safetensors import safe_open
    with safe_open(str(w), "pt") as fh: meta = fh.metadata()
    state = load_file(w)
    k = sorted(state)[0]
    state[k] = state[k].clone().fill_(float("nan")) if damage == "nan" else state[k].round().to(torch.int32)
    save_file(state, str(w), metadata=meta)
    with pytest.raises(ValueError, match=msg): load_vlsm_adapter(run / "best")


def test_feature_cache_resume_is_exact(tmp_path):
    "Shallow adapters with the cache: a run resumed after epoch 2 (empty cache) equals an uninterrupted 3-epoch run."
    kw = dict(QUICK, method="shallow", variant="vl", cache_features=True, synthetic_n=24, prompt="random")
    a = fit(TrainConfig(out_dir=str(tmp_path / "a"), max_epochs=3, **kw))
    fit(TrainConfig(out_dir=str(tmp_path / "b"), max_epochs=2, **kw))
    (tmp_path / "b" / SUMMARY).unlink()
    b = fit(TrainConfig(out_dir=str(tmp_path / "b"), max_epochs=3, **kw))
    assert b.resumed_from_epoch == 2
    wa, wb = load_file(tmp_path / "a" / "last" / ADAPTER_WEIGHTS), load_file(tmp_path / "b" / "last" / ADAPTER_WEIGHTS)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed weights differ"
    pd.testing.assert_series_equal(a.history.val_dice, b.history.val_dice)


# ================================================================== data that would train or score silently wrong
TRUTH = np.zeros((40, 60), bool); TRUTH[10:30, 15:50] = True


def _mask_variants():
    t8 = TRUTH.astype(np.uint8)
    yield "L 0/1", Image.fromarray(t8)
    yield "P 0/1 no palette", Image.fromarray(t8, "P")
    yield "I;16 0/1", Image.fromarray(TRUTH.astype(np.uint16))
    yield "I;16 0/65535", Image.fromarray(TRUTH.astype(np.uint16) * 65535)
    yield "I 0/1", Image.fromarray(TRUTH.astype(np.int32))
    yield "F 0/1", Image.fromarray(TRUTH.astype(np.float32))
    yield "LA 0/1", Image.fromarray(np.stack([t8, np.full_like(t8, 255)], -1), "LA")
    yield "RGBA 0/1", Image.fromarray(np.stack([t8] * 3 + [np.full_like(t8, 255)], -1))
    yield "RGB 0/255", Image.fromarray(np.stack([t8 * 255] * 3, -1))


@pytest.mark.parametrize("name,im", list(_mask_variants()), ids=[n for n, _ in _mask_variants()])
def test_mask_modes_and_depths(name, im, tmp_path):
    assert (mask_to_bool(im) == TRUTH).all()
    f = tmp_path / ("m.tif" if im.mode in ("I", "F") else "m.png"); im.save(f)     # and the same after a trip through a file
    with Image.open(f) as back: back.load(); assert (mask_to_bool(back) == TRUTH).all(), back.mode


def test_uninterpretable_masks_are_refused():
    lab = TRUTH.astype(np.uint8); lab[:5] = 2
    with pytest.raises(ValueError, match="multi-class label mask"): mask_to_bool(Image.fromarray(lab))
    with pytest.raises(ValueError, match="NaN"): mask_to_bool(Image.fromarray(np.full((4, 4), np.nan, np.float32)))


def test_jpeg_masks_threshold_at_127(tmp_path):
    f = tmp_path / "m.jpg"; Image.fromarray(TRUTH.astype(np.uint8) * 255).save(f, quality=60)
    with Image.open(f) as im:
        im.load(); assert len(np.unique(np.asarray(im))) > 2 and (mask_to_bool(im) == TRUTH).all()


@pytest.mark.parametrize("dtype,mode", [(np.uint16, "I;16"), (np.int32, "I"), (np.float32, "F")])
def test_deep_images_are_scaled_not_clipped(dtype, mode):
    ramp = np.tile(np.linspace(0, 4095, 64), (8, 1)).astype(dtype)
    im = Image.fromarray(ramp)
    assert im.mode == mode
    x = image_to_tensor(im, 64)
    # grey, increasing left to right over the full 8-bit range: 64 distinct levels (PIL's convert("RGB") clips to ~2)
    row = x[0, 0]
    assert len(torch.unique(row)) == 64 and bool((row[1:] > row[:-1]).all())


def _toy(root, mask_fn=None, folder="kvasir_polyp", n=6, **kw):
    "A synthetic dataset on disk; `mask_fn(bool mask) -> PIL image` rewrites every mask."
    for s in ("train", "val", "test"): write_medvlsm(SyntheticDataset(n, split=s), root, folder, prefix=f"{s}_", **kw)
    d = Path(root) / folder
    if mask_fn:
        for s in ("train", "val", "test"):
            for r in json.loads((d / "anns" / f"{s}.json").read_text()):
                p = d / "masks" / r["mask_name"]
                with Image.open(p) as im: m = np.asarray(im) > 127
                mask_fn(m).save(p)
    return d


def test_label_masks_train_and_score_as_the_truth(tmp_path):
    d = _toy(tmp_path, lambda m: Image.fromarray(m.astype(np.uint8)))           # 0/1 label masks
    ds = MedVLSMDataset("kvasir", "train", root=tmp_path)
    ref = SyntheticDataset(6, split="train")
    for i in range(len(ds)): assert (ds.load_mask(i) == ref.load_mask(i)).all()    # what training and evaluation read
    assert ds[0]["mask"].sum() > 0
    assert validate("kvasir", root=tmp_path, decode=True).ok


def test_all_empty_split_is_refused_unless_the_dataset_has_empty_masks(tmp_path):
    _toy(tmp_path / "a", lambda m: Image.fromarray(np.zeros(m.shape, np.uint8)))
    rep = validate("kvasir", root=tmp_path / "a", decode=True, raise_=False)
    assert sorted(p.split for p in rep) == ["test", "train", "val"] and all("are empty" in p.message for p in rep)
    _toy(tmp_path / "b", lambda m: Image.fromarray(np.zeros(m.shape, np.uint8)), folder="busi")
    assert validate("busi", root=tmp_path / "b", decode=True).ok


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_train_or_val_split_refused_up_front(tmp_path, split, monkeypatch):
    d = _toy(tmp_path)
    (d / "anns" / f"{split}.json").write_text("[]")
    import vlsm_adapter.train as T
    monkeypatch.setattr(T, "load_clipseg", lambda *a, **k: pytest.fail("the model was loaded before the data was checked"))
    with pytest.raises(ValueError) as e:
        fit(TrainConfig(dataset="kvasir", data_root=str(tmp_path), out_dir=str(tmp_path / "run"), model="tiny", progress=False))
    assert str(d / "anns" / f"{split}.json") in str(e.value)
    with pytest.raises(ValueError, match="no records"):
        fit(TrainConfig(dataset="kvasir", data_root=str(tmp_path), out_dir=str(tmp_path / "run2"), model="tiny",
                        progress=False, validate_data=False))


def test_empty_test_split_refused_before_the_model_loads(tmp_path, monkeypatch):
    from vlsm_adapter import evaluate as E
    d = _toy(tmp_path)
    run = tmp_path / "run"
    fit(TrainConfig(dataset="kvasir", data_root=str(tmp_path), out_dir=str(run), model="tiny", image_size=160,
                    batch_size=8, max_epochs=1, progress=False))
    (d / "anns" / "test.json").write_text("[]")
    monkeypatch.setattr(E, "load_run", lambda *a, **k: pytest.fail("the model was loaded before the data was checked"))
    with pytest.raises(ValueError) as e: E.evaluate_run(run, progress=False)
    assert str(d / "anns" / "test.json") in str(e.value) and "no records" in str(e.value)


def _truncate_one_jpeg(tmp_path):
    d = _toy(tmp_path, image_ext=".jpg")
    r = json.loads((d / "anns" / "train.json").read_text())[3]
    f = d / "images" / r["img_name"]
    f.write_bytes(f.read_bytes()[:1500])                 # a valid header, then the data stops
    return f


def test_truncated_jpeg_found_by_fit_before_training(tmp_path, monkeypatch):
    f = _truncate_one_jpeg(tmp_path)
    import vlsm_adapter.train as T
    monkeypatch.setattr(T, "load_clipseg", lambda *a, **k: pytest.fail("the model was loaded before the data was checked"))
    with pytest.raises(DatasetError) as e:
        fit(TrainConfig(dataset="kvasir", data_root=str(tmp_path), out_dir=str(tmp_path / "run"), model="tiny", progress=False))
    assert str(f) in str(e.value) and "truncated" in str(e.value)


def test_errors_in_dataloader_workers_keep_their_message(tmp_path):
    f = _truncate_one_jpeg(tmp_path)
    ds = MedVLSMDataset("kvasir", "train", root=tmp_path, size=64)
    dl = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=lambda items: items)
    with pytest.raises(DatasetError) as e:
        for _ in dl: pass
    assert str(f) in str(e.value) and "image file is truncated" in str(e.value), str(e.value)[:600]


def test_dataset_error_pickles_whole():
    from vlsm_adapter.data import Problem
    e = DatasetError([Problem("kvasir", "train", 3, "/x/y.jpg", "cannot read image")])
    back = pickle.loads(pickle.dumps(e))
    assert str(back) == str(e) and back.problems == e.problems
    assert str(DatasetError("a message\nover two lines")) == "a message\nover two lines"


@pytest.mark.skipif(shared_path("data", "clinicdb_polyp") is None, reason="shared/data/clinicdb_polyp not found")
def test_real_clinicdb_masks_unchanged_by_the_rule():
    "The ClinicDB PNGs (grey levels, not only 0/255) binarise exactly as the former > 127 rule did."
    root = shared_path("data")
    ds = MedVLSMDataset("clinicdb", "test", root=root)
    for i in range(len(ds)):
        with Image.open(ds.mask_path(i)) as im: ref = np.asarray(im) > 127
        assert (ds.load_mask(i) == ref).all(), ds.mask_path(i)


def test_training_prompts_are_drawn_per_epoch(monkeypatch, tmp_path):
    """Without the feature cache the batches come from Accelerate's DataLoader, which resets the dataset's epoch to its
    own counter (0 for a new loader): every epoch trained on epoch 0's prompt draws. Each epoch must get its own."""
    import vlsm_adapter.train as T
    from vlsm_adapter.data import get_dataset
    calls = []

    class Recording(T.PromptCollator):
        def __call__(self, items):
            calls.append([(int(it["index"]), it["prompt"]) for it in items])
            return super().__call__(items)
    monkeypatch.setattr(T, "PromptCollator", Recording)
    fit(TrainConfig(out_dir=str(tmp_path), max_epochs=2, **QUICK))       # 16 train (2 batches) + 4 val (1 batch) per epoch
    ref = get_dataset("synthetic", "train", n=16, size=160, seed=42, prompt="random")
    for epoch, batches in ((1, calls[0:2]), (2, calls[3:5])):
        got = dict(p for b in batches for p in b)
        assert got == {i: ref.pick_prompt(i, epoch) for i in got}, f"epoch {epoch} trained on other prompt draws"
    assert dict(p for b in calls[0:2] for p in b) != dict(p for b in calls[3:5] for p in b)


def test_disk_full_names_the_file_and_keeps_the_old_one(unfinished, tmp_path, monkeypatch):
    import errno
    import vlsm_adapter.model as M
    import vlsm_adapter.train as T
    run = copy_run(unfinished, tmp_path / "run")
    before = (run / CHECKPOINT).read_bytes()

    def full(*a, **k): raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(T.torch, "save", full)
    with pytest.raises(OSError) as e: T._save_checkpoint(run / CHECKPOINT, {"x": 1})
    assert str(run / CHECKPOINT) in str(e.value) and "disk full" in str(e.value) and e.value.errno == errno.ENOSPC
    assert (run / CHECKPOINT).read_bytes() == before and not list(run.glob(".*.tmp"))
    monkeypatch.setattr(M, "save_file", full)
    model, _ = load_vlsm_adapter(run / "best")
    w = (run / "best" / ADAPTER_WEIGHTS).read_bytes()
    with pytest.raises(OSError) as e: M.save_adapter(model, run / "best")
    assert str(run / "best") in str(e.value) and "disk full" in str(e.value)
    assert (run / "best" / ADAPTER_WEIGHTS).read_bytes() == w


def test_evaluation_removes_temporary_files_of_a_killed_evaluation(unfinished, tmp_path):
    from vlsm_adapter.evaluate import evaluate_run
    run = copy_run(unfinished, tmp_path / "run")
    ev = run / "eval-test-best"
    ev.mkdir(); (ev / ".evaluating").write_text("vlsm_adapter evaluation")       # as a killed evaluation leaves it
    junk = [ev / ".summary.json.a1b2.tmp", ev / ".per_image.csv.c3d4.tmp"]
    for j in junk: j.write_text("half")
    evaluate_run(run, progress=False)
    assert not any(j.exists() for j in junk) and (ev / "summary.json").is_file()


def test_fit_with_workers_names_the_truncated_file(tmp_path):
    "The issue's case: validation off, two DataLoader workers, a truncated JPEG: the error arrives whole, naming the file."
    f = _truncate_one_jpeg(tmp_path)
    with pytest.raises(DatasetError) as e:
        fit(TrainConfig(dataset="kvasir", data_root=str(tmp_path), out_dir=str(tmp_path / "run"), model="tiny", image_size=160,
                        batch_size=4, max_epochs=1, num_workers=2, validate_data=False, progress=False))
    assert str(f) in str(e.value) and "image file is truncated" in str(e.value), str(e.value)[:600]
