"""Tests of vlsm_adapter.widgets (the demo's logic and its ipywidgets app, driven from code; no browser).

Independent references: HF's own `CLIPSegForImageSegmentation.forward` (stock_logits) for the base-alone output, a
separately loaded base + `load_vlsm_adapter` for the adapter output, `metrics.dice_score`/`iou_score` for the
figure's numbers, and `load_clipseg` / `VLSMAdapter.forward` counted by wrapping them (not the session's counters).
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

import vlsm_adapter.model as model_mod
import vlsm_adapter.widgets as wmod
from vlsm_adapter.clipseg import load_clipseg, stock_logits, tiny_config
from vlsm_adapter.data import get_dataset, image_to_tensor
from vlsm_adapter.metrics import dice_score, iou_score
from vlsm_adapter.model import VLSMAdapter, load_vlsm_adapter, save_adapter
from vlsm_adapter.utils import shared_path
from vlsm_adapter.widgets import (DemoApp, DemoSession, UploadError, adapter_label, demo_app, find_runs, image_from_upload,
                                  load_item, render, resolve_adapter)

DATA = shared_path("data")
CLINICDB = DATA if DATA is not None and (DATA / "clinicdb_polyp").is_dir() else None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    "A real (tiny, one epoch) training run folder written by fit()."
    from vlsm_adapter.train import TrainConfig, fit
    out = tmp_path_factory.mktemp("runs") / "synthetic-dense-vl"
    res = fit(TrainConfig(dataset="synthetic", model="tiny", method="dense", variant="vl", synthetic_n=16, batch_size=8,
                          max_epochs=1, progress=False, out_dir=str(out)))
    return Path(res.out_dir)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return get_dataset("synthetic", "test", n=6).load_image(0)


@pytest.fixture
def session() -> DemoSession:
    return DemoSession("tiny", verbose=True)


@pytest.fixture
def count_forward(monkeypatch):
    "Counts VLSMAdapter.forward calls (every model call of the session goes through it)."
    calls = []
    orig = VLSMAdapter.forward

    def counted(self, *a, **k):
        calls.append(self)
        return orig(self, *a, **k)
    monkeypatch.setattr(VLSMAdapter, "forward", counted)
    return calls


def upload_entry(name: str, data: bytes) -> dict:
    "One file as ipywidgets 8's FileUpload.value holds it."
    import datetime
    return dict(name=name, type="image/png", size=len(data), content=memoryview(data),
                last_modified=datetime.datetime.now(datetime.timezone.utc))


def png_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO(); im.save(b, format="PNG"); return b.getvalue()


# ---- adapters and run folders -----------------------------------------------------------------------------------

def test_resolve_adapter_and_find_runs(run_dir, tmp_path):
    folder, tc = resolve_adapter(run_dir)
    assert folder.parent == run_dir and folder.name in ("best", "last")
    assert tc["method"] == "dense" and tc["model"] == "tiny"
    assert resolve_adapter(folder) == (folder, tc)
    # a run whose best/ is missing falls back to last/
    import shutil
    only_last = tmp_path / "runs" / "only-last"
    shutil.copytree(run_dir, only_last)
    shutil.rmtree(only_last / "best", ignore_errors=True)
    assert resolve_adapter(only_last)[0] == only_last / "last"
    assert find_runs(tmp_path / "runs") == [only_last]
    assert find_runs(tmp_path / "missing") == []
    assert "dense-vl" in adapter_label(run_dir) and "base tiny" in adapter_label(run_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"): resolve_adapter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run folder"): resolve_adapter(tmp_path / "empty")
    shutil.rmtree(only_last / "last")
    with pytest.raises(FileNotFoundError, match="no adapter yet"): resolve_adapter(only_last)


# ---- the session ------------------------------------------------------------------------------------------------

def test_base_loaded_once_and_never_reloaded_by_swaps(run_dir, monkeypatch, capsys):
    loads = []
    orig = load_clipseg

    def counted(*a, **k):
        loads.append(a)
        return orig(*a, **k)
    monkeypatch.setattr(wmod, "load_clipseg", counted)
    monkeypatch.setattr(model_mod, "load_clipseg", counted)          # load_vlsm_adapter's own loader
    s = DemoSession("tiny")
    base = s.clipseg
    threads = torch.get_num_threads()
    times = [s.set_adapter(run_dir), s.set_adapter(None), s.set_adapter(run_dir), s.set_adapter("none")]
    assert len(loads) == 1 and s.base_loads == 1
    assert s.clipseg is base and s.model.clipseg is base
    s.set_adapter(run_dir)
    assert s.model.clipseg is base and s.model is not s._plain and s.model.method == "dense"
    assert all(isinstance(t, float) and t > 0 for t in times)
    assert torch.get_num_threads() == threads                           # swaps run on 1 thread, then restore it

    out = capsys.readouterr().out
    assert out.count(" ms (") >= 4 and "base model not reloaded" in out
    assert "read from disk" in out and "kept in memory" in out      # the second use of the run did not re-read it


def test_base_alone_is_stock_clipseg(session, image):
    "set_adapter(None) gives HF's own CLIPSeg forward, sigmoid, bilinear resize to the original size."
    session.set_adapter(None)
    prob = session.predict(image, "a red circle")
    ids = session.tokenizer(["a red circle"], return_tensors="pt")
    with torch.no_grad():
        ref = stock_logits(session.clipseg, image_to_tensor(image, session.image_size)[None], ids.input_ids, ids.attention_mask)
    ref = F.interpolate(torch.sigmoid(ref)[None], size=image.size[::-1], mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(prob, ref.numpy(), atol=1e-5)


def test_adapter_output_matches_independent_load(session, run_dir, image):
    session.set_adapter(run_dir)
    prob = session.predict(image, "a blue square")
    folder, tc = resolve_adapter(run_dir)
    size = int(tc.get("image_size") or 352)                               # the run's input size, not always 352
    assert session.image_size == size
    base2, tok = load_clipseg("tiny")
    m, _ = load_vlsm_adapter(folder, clipseg=base2)
    ids = tok(["a blue square"], return_tensors="pt")
    with torch.no_grad():
        ref = torch.sigmoid(m(image_to_tensor(image, size)[None], ids.input_ids, ids.attention_mask))
    ref = F.interpolate(ref[None], size=image.size[::-1], mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(prob, ref.numpy(), atol=1e-5)
    session.set_adapter(None)
    assert np.abs(session.predict(image, "a blue square") - prob).max() > 0     # the adapter changes the output


def test_predict_shape_and_range(session, run_dir, image):
    session.set_adapter(run_dir)
    for im in (image, Image.new("RGB", (123, 77), (200, 30, 30)), Image.new("L", (50, 300), 90)):
        p = session.predict(im, "a red circle")
        assert p.shape == (im.height, im.width) and p.dtype == np.float32
        assert 0.0 <= p.min() and p.max() <= 1.0 and np.isfinite(p).all()
    p = session.predict(image, "a very long prompt " * 40)                  # > 77 tokens: truncated, no crash
    assert p.shape == (image.height, image.width)


def test_threshold_changes_do_not_call_the_model(session, image, count_forward):
    gt = np.zeros((image.height, image.width), bool); gt[50:120, 60:200] = True
    prob = session.predict(image, "a green triangle")
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        p = session.predict(image, "a green triangle")            # what the slider callback does
        fig, m = render(image, p, t, gt)
        assert m["threshold"] == t
    assert len(count_forward) == 1 and session.cache_hits == 5
    assert p is prob
    # anything that changes the output recomputes: the prompt, the image, the adapter
    session.predict(image, "a red square")
    session.predict(image.transpose(Image.FLIP_LEFT_RIGHT), "a red square")
    assert len(count_forward) == 3
    session.set_adapter(None)
    session.predict(image, "a red square")
    assert len(count_forward) == 4


def test_refuses_adapter_of_another_architecture(session, run_dir, tmp_path, image):
    other = VLSMAdapter(load_clipseg_other(), "dense", "vl")
    save_adapter(other, tmp_path / "other")
    session.set_adapter(run_dir)
    before = session.predict(image, "a red circle").copy()
    with pytest.raises(ValueError, match="base model architecture") as e:
        session.set_adapter(tmp_path / "other")
    assert "choose that base model" in str(e.value)
    assert session.adapter_folder == resolve_adapter(run_dir)[0]          # unchanged
    np.testing.assert_allclose(session.predict(image, "a red circle"), before, atol=1e-6)   # float forwards: a tolerance


def load_clipseg_other():
    from transformers import CLIPSegForImageSegmentation
    m = CLIPSegForImageSegmentation(tiny_config(width=32))
    m.config._name_or_path = "tiny-32"
    return m


def test_decoder_run_overwrites_base_then_restores_it(session, tmp_path, image):
    "A decoder-only run stores base (decoder) weights: the session applies them and puts the base back afterwards."
    other, _ = load_clipseg("tiny")
    with torch.no_grad():
        for p in other.decoder.parameters(): p.add_(0.05 * torch.randn_like(p))
    save_adapter(VLSMAdapter(other, "decoder"), tmp_path / "dec")
    original = {k: v.clone() for k, v in session.clipseg.state_dict().items()}
    p0 = session.predict(image, "a red circle").copy()
    session.set_adapter(tmp_path / "dec")
    p1 = session.predict(image, "a red circle").copy()
    assert np.abs(p1 - p0).max() > 1e-3
    session.set_adapter(None)
    for k, v in session.clipseg.state_dict().items(): assert torch.equal(v, original[k]), k
    np.testing.assert_allclose(session.predict(image, "a red circle"), p0, atol=1e-6)   # weights exact, outputs close
    session.set_adapter(tmp_path / "dec")                                  # again: applied again, not stale
    np.testing.assert_allclose(session.predict(image, "a red circle"), p1, atol=1e-6)
    # a refused swap while the decoder run is active: the base is restored and the session is the base alone
    save_adapter(VLSMAdapter(load_clipseg_other(), "dense", "vl"), tmp_path / "other")
    with pytest.raises(ValueError, match="base model architecture"): session.set_adapter(tmp_path / "other")
    assert session.adapter_folder is None
    np.testing.assert_allclose(session.predict(image, "a red circle"), p0, atol=1e-6)
    for k, v in session.clipseg.state_dict().items(): assert torch.equal(v, original[k]), k


# ---- rendering --------------------------------------------------------------------------------------------------

def test_render_figure_and_metrics(session, image):
    ds = get_dataset("synthetic", "test", n=6)
    gt = ds.load_mask(0)
    prob = session.predict(image, ds.pick_prompt(0))
    for t in (0.2, 0.5, float(np.median(prob))):
        fig, m = render(image, prob, t, gt, prompt="x")
        assert isinstance(fig, Figure) and len(fig.axes) >= 3
        assert m["dice"] == pytest.approx(dice_score(prob > t, gt)) and m["iou"] == pytest.approx(iou_score(prob > t, gt))
    # a known case: a probability map equal to the gt (Dice 100) and one covering half of it
    half = gt.copy(); ys, xs = np.nonzero(gt); half[ys[: len(ys) // 2], xs[: len(xs) // 2]] = False
    assert render(image, gt.astype(np.float32), 0.5, gt)[1]["dice"] == pytest.approx(100.0)
    d = render(image, half.astype(np.float32), 0.5, gt)[1]["dice"]
    assert d == pytest.approx(200 * half.sum() / (half.sum() + gt.sum()))
    fig, m = render(image, prob, 0.5)
    assert m is None and isinstance(fig, Figure)
    with pytest.raises(ValueError, match="original size"): render(image, prob[:10], 0.5)
    with pytest.raises(ValueError, match="threshold"): render(image, prob, 1.5)


# ---- image sources ----------------------------------------------------------------------------------------------

def test_dataset_items():
    it = load_item("synthetic", "test", 2)
    ds = get_dataset("synthetic", "test")
    assert it.image.size == ds.load_image(2).size and np.array_equal(it.gt, ds.load_mask(2))
    assert it.prompts[0] == ds.pick_prompt(2) and len(set(it.prompts)) == len(it.prompts) > 3
    with pytest.raises(IndexError, match="out of range"): load_item("synthetic", "test", 999)
    with pytest.raises(FileNotFoundError): load_item("clinicdb", "test", 0, root="/nonexistent/data")


@pytest.mark.skipif(CLINICDB is None, reason="shared data folder ../shared/data/clinicdb_polyp not found")
def test_real_clinicdb_item(session, run_dir):
    it = load_item("clinicdb", "test", 0, root=CLINICDB)
    assert it.image.size == (384, 288) and it.gt.shape == (288, 384) and it.gt.any() and it.prompts
    session.set_adapter(run_dir)
    p = session.predict(it.image, it.prompts[0])
    assert p.shape == it.gt.shape
    assert render(it.image, p, 0.5, it.gt)[1]["dice"] == pytest.approx(dice_score(p > 0.5, it.gt))


def test_upload_good_and_corrupt(image):
    data = png_bytes(image)
    v8 = ({"name": "a.png", "type": "image/png", "size": len(data), "content": memoryview(data), "last_modified": 0},)
    im, name = image_from_upload(v8)
    assert name == "a.png" and im.mode == "RGB" and np.array_equal(np.asarray(im), np.asarray(image))
    assert image_from_upload(data)[0].size == image.size
    assert image_from_upload({"b.png": {"content": data}})[1] == "b.png"            # ipywidgets 7 shape
    grey = io.BytesIO(); Image.new("L", (20, 10), 7).save(grey, format="JPEG")
    assert image_from_upload(grey.getvalue())[0].mode == "RGB"
    for bad, why in [(b"hello, I am a text file", "not an image"), (data[:300], "not an image"),
                     (b"", "empty"), ((), "no file uploaded"), ([{"name": "x.png", "content": 42}], "expected file bytes")]:
        with pytest.raises(UploadError, match=why): image_from_upload(bad)


# ---- the app, driven from code ----------------------------------------------------------------------------------

def test_app_end_to_end(session, run_dir, tmp_path, count_forward):
    app = demo_app(session, dataset="synthetic", split="test", runs=[run_dir], runs_dir=tmp_path / "none")
    assert isinstance(app, DemoApp) and app.last_error is None
    assert app.figure.value[:8] == b"\x89PNG\r\n\x1a\n" and "Dice" in app.metrics.value
    assert app.prompt.value == load_item("synthetic", "test", 0).prompts[0]
    assert [v for _, v in app.adapter.options] == [None, str(run_dir)]
    n = len(count_forward)
    app.threshold.value = 0.25                                            # the slider: no model call
    app.threshold.value = 0.75
    assert len(count_forward) == n and app.last_metrics["threshold"] == 0.75
    app.prompt.value = "a yellow square"                                  # a new prompt: one call
    assert len(count_forward) == n + 1
    app.adapter.value = str(run_dir)                                      # a swap: one call, same base
    assert len(count_forward) == n + 2 and session.model.clipseg is session.clipseg and session.base_loads == 1
    assert "ms" in app.status.value and app.last_error is None
    app.index.value = 4
    assert app.item.source.startswith("synthetic/test[4]") and app.last_error is None
    # a corrupt upload: a message in the app, no exception
    app.upload.value = (upload_entry("broken.png", b"\x89PNG!"),)
    assert "not an image" in app.last_error and "not an image" in app.status.value and app.figure.value == b""
    # a good upload: no ground truth, no metrics
    app.upload.value = (upload_entry("ok.png", png_bytes(Image.new("RGB", (64, 48)))),)
    assert app.item.gt is None and app.last_metrics is None and app.figure.value[:4] == b"\x89PNG"
    # a bad dataset index range / missing dataset: messages
    app.source.value = "dataset"
    app.dataset.value = "clinicdb"; app.root.value = str(tmp_path / "no-data")
    assert "FileNotFoundError" in app.last_error


def test_app_base_change(session, run_dir, tmp_path):
    local = tmp_path / "tiny_local"
    session.clipseg.save_pretrained(local)
    app = demo_app(session, runs=[run_dir], runs_dir=tmp_path / "none", bases=["tiny", "/nonexistent/model", str(local)])
    app.adapter.value = str(run_dir)
    base = session.clipseg
    app.base.value = "/nonexistent/model"                                 # cannot load: message, old base kept
    assert "does not exist" in app.last_error and app.base.value == "tiny" and session.clipseg is base
    app.last_error = None
    with pytest.warns(UserWarning, match="trained on base model"):       # same architecture, another name
        app.base.value = str(local)
    assert session.base_loads == 2 and session.clipseg is not base and session.adapter_folder is not None
    assert app.last_error is None and app.figure.value[:4] == b"\x89PNG"
