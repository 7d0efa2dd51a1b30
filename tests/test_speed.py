"""The speed work's correctness: the official-path peer computes our logits, bf16 training through `fit` stays
finite, and `DecodedCache` items equal decoded ones and follow file changes. (No timed assertions: speed is printed
by `python -m vlsm_adapter.bench`.)"""
import math, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlsm_adapter.bench import OfficialPath, peer_ratio, precision_gain, _inputs
from vlsm_adapter.clipseg import load_clipseg, stock_logits
from vlsm_adapter.data import DecodedCache, MedVLSMDataset, SyntheticDataset, write_medvlsm
from vlsm_adapter.model import VLSMAdapter
from vlsm_adapter.train import fit, TrainConfig
from test_fidelity import randomise_adapters   # one definition of the random adapter weights

PLACEMENTS = [(m, v) for m in ("shallow", "dense") for v in ("v", "vl", "vlc")]


def randomise(model, seed=0):
    "Noticeable random adapter weights (PyTorch's init is small enough that a misplaced adapter could hide)."
    return randomise_adapters(model, seed).eval()


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["float32", "float64"])
def tiny(request):
    base, tok = load_clipseg("tiny", seed=3)
    base.to(request.param)
    px, ids, _ = _inputs(tok, 2, 352, "cpu")
    assert ids.attention_mask.sum(1).unique().numel() == 2          # prompts of different lengths: padding exercised
    return base, px.to(request.param), ids


@pytest.mark.parametrize("method,variant", PLACEMENTS)
def test_official_path_matches_ours(tiny, method, variant):
    base, px, ids = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = randomise(VLSMAdapter(base, method, variant).to(base.dtype))
    off = OfficialPath(m)
    layers = list(base.clip.vision_model.encoder.layers) + list(base.clip.text_model.encoder.layers)
    n_hooks = lambda: sum(len(l.self_attn._forward_hooks) + len(l.mlp._forward_hooks) for l in layers)
    with torch.no_grad(): off(px, ids.input_ids, ids.attention_mask)   # transformers installs its own capture hooks once
    before = n_hooks()
    with torch.no_grad():
        ours = m(px, ids.input_ids, ids.attention_mask)
        theirs = off(px, ids.input_ids, ids.attention_mask)
        stock = stock_logits(base, px, ids.input_ids, ids.attention_mask)
    scale = theirs.abs().max()
    tol = 1e-5 if px.dtype == torch.float32 else 1e-10
    assert ((ours - theirs).abs().max() / scale).item() < tol
    assert ((stock - theirs).abs().max() / scale).item() > 1e-2    # the adapters act on the official path too
    # the adapter hooks live for one call only (transformers may keep hooks of its own there)
    assert n_hooks() == before


def test_official_path_gradients_reach_every_adapter():
    base, tok = load_clipseg("tiny")
    m = VLSMAdapter(base, "dense", "vlc").train()
    px, ids, target = _inputs(tok, 2, 160, "cpu")
    torch.nn.functional.binary_cross_entropy_with_logits(OfficialPath(m)(px, ids.input_ids, ids.attention_mask), target).backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing
    assert all(p.grad is None for p in base.parameters())


def test_official_path_refuses_baselines():
    base, _ = load_clipseg("tiny")
    for method in ("e2e", "decoder"):
        with pytest.raises(ValueError, match="official adapter models"):
            OfficialPath(VLSMAdapter(base, method))


def test_peer_and_precision_measurements_run():
    r = peer_ratio("dense", "vl", model="tiny", steps=1, warmup=1, image_size=160)
    assert r["t_ours_s"] > 0 and r["t_official_s"] > 0 and r["speedup"] == r["t_official_s"] / r["t_ours_s"]
    c = peer_ratio("shallow", "v", model="tiny", steps=1, warmup=1, image_size=160, cached=True)
    assert c["cached"] and c["t_ours_s"] > 0
    with pytest.raises(ValueError, match="nothing to cache"):
        peer_ratio("dense", "v", model="tiny", steps=1, warmup=1, image_size=160, cached=True)
    low = precision_gain("dense", "vl", "bf16", model="tiny", steps=1, warmup=1, image_size=160)
    assert low["t_fp32_s"] > 0 and low["t_low_s"] > 0


def test_bf16_fit_on_cpu_is_finite(tmp_path):
    r = fit(TrainConfig(dataset="synthetic", model="tiny", method="dense", variant="vl", precision="bf16", synthetic_n=16,
                        batch_size=8, max_epochs=2, image_size=160, progress=False, out_dir=str(tmp_path)))
    h = r.history
    assert len(h) == 2 and np.isfinite(h[["train_loss", "val_loss", "val_dice"]].to_numpy()).all()
    assert h.train_loss.iloc[1] != h.train_loss.iloc[0]                 # it trained


def test_decoded_cache_equal_and_invalidated(tmp_path):
    write_medvlsm(SyntheticDataset(5), tmp_path / "data", "kvasir_polyp", split="train")
    plain = MedVLSMDataset("kvasir", "train", root=tmp_path / "data", size=64)
    cached = DecodedCache(plain, tmp_path / "cache")
    assert cached.rebuilt == 5
    for i in range(5):
        a, b = plain[i], cached[i]
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["mask"], b["mask"])
        assert (a["prompt"], a["orig_size"], a["img_name"], a["index"]) == (b["prompt"], tuple(b["orig_size"]), b["img_name"], b["index"])
    plain.set_epoch(3); cached.set_epoch(3)
    assert [plain[i]["prompt"] for i in range(5)] == [cached[i]["prompt"] for i in range(5)]
    assert DecodedCache(plain, tmp_path / "cache").rebuilt == 0
    # a changed image file: only the items reading it (synthetic records share images) are decoded again, with the new pixels
    p = plain.image_path(1); im = Image.open(p).convert("RGB")
    Image.fromarray(255 - np.asarray(im)).save(p)
    users = [i for i in range(5) if plain.image_path(i) == p]
    assert 1 <= len(users) < 5
    again = DecodedCache(plain, tmp_path / "cache")
    assert again.rebuilt == len(users) and all(torch.equal(again[i]["pixel_values"], plain[i]["pixel_values"]) for i in range(5))
    # an interrupted refresh (no index file) rebuilds everything on the next open
    (again.dir / "index.json").unlink()
    assert DecodedCache(plain, tmp_path / "cache").rebuilt == 5


def test_decoded_cache_real_clinicdb(tmp_path):
    from vlsm_adapter.utils import shared_path
    root = shared_path("data")
    if root is None or not (root / "clinicdb_polyp" / "anns").is_dir():
        pytest.skip("the ClinicDB subset (../shared/data/clinicdb_polyp) is absent")
    plain = MedVLSMDataset("clinicdb", "val", root=root)
    cached = DecodedCache(plain, tmp_path)
    for i in (0, 7, len(plain) - 1):
        assert torch.equal(plain[i]["pixel_values"], cached[i]["pixel_values"]) and torch.equal(plain[i]["mask"], cached[i]["mask"])
        assert plain[i]["orig_size"] == tuple(cached[i]["orig_size"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_distance_transform_path_equals_kdtree(monkeypatch, seed):
    "Fragmented masks take the distance-transform path; its distances (and HD95) equal the KD-tree's exactly."
    from scipy import ndimage
    from scipy.spatial.distance import directed_hausdorff
    import vlsm_adapter.metrics as M
    rng = np.random.default_rng(seed)
    g = np.zeros((180, 240), bool); g[40:150, 60:200] = True
    p = ndimage.gaussian_filter(rng.random((180, 240)), 1.5) > 0.5          # many small fragments
    bd = {}
    for name, frac in (("kdtree", math.inf), ("edt", 0.0)):
        monkeypatch.setattr(M, "EDT_MIN_FRACTION", frac)
        bd[name] = (M.boundary_distances(p, g), M.hd95(p, g), M.hd95(p, g, percentile=100))
    (a, hk, hk100), (b, he, he100) = bd["kdtree"], bd["edt"]
    assert np.array_equal(a.pred_points, b.pred_points) and np.array_equal(a.pred_to_gt, b.pred_to_gt)
    assert np.array_equal(a.gt_to_pred, b.gt_to_pred) and hk == he and hk100 == he100
    # and the plain Hausdorff distance is SciPy's, on the boundary pixels
    P, G = a.pred_points, a.gt_points
    assert he100 == pytest.approx(max(directed_hausdorff(P, G)[0], directed_hausdorff(G, P)[0]), abs=1e-12)


def test_fit_with_decoded_cache_trains_identically(tmp_path):
    "`decoded_cache` changes where the pixels come from, not the run: the same losses and Dice, epoch by epoch."
    for s in ("train", "val"): write_medvlsm(SyntheticDataset(12, split=s), tmp_path / "data", "kvasir_polyp", split=s)
    kw = dict(dataset="kvasir", data_root=str(tmp_path / "data"), model="tiny", method="dense", variant="vl", batch_size=4,
              max_epochs=2, image_size=64, progress=False)
    plain = fit(TrainConfig(**kw, out_dir=str(tmp_path / "plain")))
    cached = fit(TrainConfig(**kw, out_dir=str(tmp_path / "cached"), decoded_cache=str(tmp_path / "cache")))
    cols = ["train_loss", "val_loss", "val_dice", "val_iou"]
    assert np.array_equal(plain.history[cols].to_numpy(), cached.history[cols].to_numpy())
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["kvasir_polyp-train-64", "kvasir_polyp-val-64"]
    # the cache may be switched on or off when a run is resumed (the data are the same): epoch 1 cached, epoch 2 not
    half = fit(TrainConfig(**{**kw, "max_epochs": 1}, out_dir=str(tmp_path / "half"), decoded_cache=str(tmp_path / "cache")))
    assert len(half.history) == 1
    (tmp_path / "half" / "summary.json").unlink()                     # as if stopped after epoch 1's checkpoint
    resumed = fit(TrainConfig(**kw, out_dir=str(tmp_path / "half")))
    assert resumed.resumed_from_epoch == 1
    assert np.array_equal(resumed.history[cols].to_numpy(), plain.history[cols].to_numpy())


def test_decoded_cache_refused_for_generated_data():
    with pytest.raises(ValueError, match="decoded_cache is for datasets read from files; 'synthetic-us'"):
        TrainConfig(dataset="synthetic-us", decoded_cache="cache")


def _build_cache(args):
    root, folder = args
    return DecodedCache(MedVLSMDataset("kvasir", "train", root=root, size=64), folder).rebuilt


def test_decoded_cache_concurrent_builders(tmp_path):
    "Two processes opening the same new cache at once: one decodes everything, the other waits and decodes nothing."
    import multiprocessing as mp
    write_medvlsm(SyntheticDataset(30), tmp_path / "data", "kvasir_polyp", split="train")
    with mp.get_context("spawn").Pool(2) as pool:
        rebuilt = pool.map(_build_cache, [(tmp_path / "data", tmp_path / "cache")] * 2)
    assert sorted(rebuilt) == [0, 30]
    plain = MedVLSMDataset("kvasir", "train", root=tmp_path / "data", size=64)
    cached = DecodedCache(plain, tmp_path / "cache")
    assert cached.rebuilt == 0 and all(torch.equal(plain[i]["pixel_values"], cached[i]["pixel_values"]) for i in range(30))
