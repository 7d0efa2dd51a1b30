"""Tests of vlsm_adapter.metrics against independent references (SciPy, MONAI) that the package never imports.

MONAI is a dev dependency (`pip install -e '.[dev]'`); SciPy is a runtime dependency. The real ClinicDB masks are
read from the shared folder (`vlsm_adapter.utils.shared_path`); those tests skip with a reason when it is absent.
"""
from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

from vlsm_adapter.metrics import (EMPTY_RULES, DiceBCELoss, as_mask, batch_dice, batch_iou, boundary,
                                  boundary_distances, check_pair, dice_score, empty_rule, grow_mask, hd95,
                                  image_diagonal, iou_score, score_pair, shift_mask, summarize)
from vlsm_adapter.utils import shared_path

monai = pytest.importorskip("monai", reason="MONAI (a dev dependency) is needed for the cross-checks: pip install -e '.[dev]'")
from monai.losses import DiceCELoss, DiceLoss  # noqa: E402
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou  # noqa: E402
from monai.metrics.utils import get_edge_surface_distance  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    "MONAI's many tiny torch ops are much faster on one thread on a busy 2-core machine; silence its empty-mask warnings."
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------- helpers and independent references

def blob_mask(shape=(288, 384), seed=0, n=1, scale=0.25) -> np.ndarray:
    "Union of `n` random star-shaped blobs with wobbly outlines."
    rng = np.random.default_rng(seed)
    H, W = shape
    yy, xx = np.mgrid[:H, :W]
    m = np.zeros(shape, bool)
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * H, rng.uniform(0.2, 0.8) * W
        R = rng.uniform(0.3, 1.0) * scale * min(H, W)
        th, r = np.arctan2(yy - cy, xx - cx), np.hypot(yy - cy, xx - cx)
        k = np.arange(2, 7)[:, None, None]
        amp = rng.uniform(0, 0.25 / k.ravel())[:, None, None]
        wob = (amp * np.cos(k * th + rng.uniform(0, 2 * np.pi, 5)[:, None, None])).sum(0)
        m |= r < R * (1 + wob)
    return m


def ref_edges(m: np.ndarray) -> np.ndarray:
    return m ^ ndimage.binary_erosion(m)


def ref_hd_scipy(p: np.ndarray, g: np.ndarray, q: float = 95) -> float:
    "SciPy reference: erosion boundary + full-image Euclidean distance transform, no cropping, no KD-tree."
    ep, eg = ref_edges(p), ref_edges(g)
    d1, d2 = ndimage.distance_transform_edt(~eg)[ep], ndimage.distance_transform_edt(~ep)[eg]
    return float(max(np.percentile(d1, q), np.percentile(d2, q)))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))[None, None].float()  # MONAI wants (batch, channel, H, W)


def monai_scores(p: np.ndarray, g: np.ndarray) -> dict:
    tp, tg = _t(p), _t(g)
    _, dists, _ = get_edge_surface_distance(tp[0, 0], tg[0, 0], symmetric=True)
    both = p.any() and g.any()
    return dict(
        dice=100 * compute_dice(tp, tg, ignore_empty=False).item(),
        iou=100 * compute_iou(tp, tg, ignore_empty=False).item(),
        dice_default=compute_dice(tp, tg).item(),
        hd95=compute_hausdorff_distance(tp, tg, include_background=True, percentile=95).item(),
        # MONAI's own boundaries and distances, 95th percentile in float64 (its float32 quantile position is ~1e-6 off)
        hd95_f64=max(np.percentile(d.double().numpy(), 95) for d in dists) if both else math.nan)


def rel_close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


def assert_agrees(p: np.ndarray, g: np.ndarray) -> dict:
    ours = score_pair(p, g)
    mo = monai_scores(p, g)
    assert rel_close(ours["dice"], mo["dice"], 1e-6), (ours, mo)
    assert rel_close(ours["iou"], mo["iou"], 1e-6), (ours, mo)
    assert math.isclose(dice_score(p, g), ours["dice"]) and math.isclose(iou_score(p, g), ours["iou"])
    if ours["empty_rule"] is None:
        assert abs(ours["hd95"] - ref_hd_scipy(p, g)) <= 1e-9
        assert rel_close(ours["hd95"], mo["hd95_f64"], 1e-6), (ours, mo)
        assert rel_close(ours["hd95"], mo["hd95"], 1e-5), (ours, mo)
        assert ours["hd95"] == hd95(p, g)
    else:
        assert math.isnan(mo["hd95"]), mo  # MONAI: NaN for any empty mask (and its mean would drop the image)
    return ours


def random_pairs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = tuple(int(x) for x in rng.integers(8, 320, 2))
        g = blob_mask(shape, seed=seed * 1000 + i, n=int(rng.integers(1, 5)), scale=rng.uniform(0.03, 0.6))
        if i % 3 == 0:
            p = blob_mask(shape, seed=seed * 1000 + 500 + i, n=int(rng.integers(1, 5)), scale=rng.uniform(0.03, 0.6))
        elif i % 3 == 1:
            p = shift_mask(grow_mask(g, int(rng.integers(-4, 5))), *(int(x) for x in rng.integers(-8, 9, 2)))
        else:  # salt-and-pepper on the border: many tiny components and holes
            p = g ^ (rng.random(shape) < 0.02)
        yield p, g


def clinicdb_masks() -> dict[str, np.ndarray]:
    d = shared_path("data", "clinicdb_polyp", "masks")
    if d is None:
        pytest.skip("shared ClinicDB masks not found: shared_path('data', 'clinicdb_polyp', 'masks') is None "
                    "(expected ../shared/data/clinicdb_polyp/masks beside the repository, or set VLSM_SHARED)")
    from PIL import Image
    masks = {f.name: np.array(Image.open(f).convert("L")) > 127 for f in sorted(d.glob("*.png"))}
    assert len(masks) == 120, len(masks)
    return masks


# ---------------------------------------------------------------- Dice, IoU, HD95 against MONAI and SciPy

def test_worked_example():
    g = np.zeros((6, 8), bool); g[1:4, 2:6] = True
    p = np.zeros((6, 8), bool); p[2:5, 2:5] = True
    assert math.isclose(dice_score(p, g), 200 * 6 / 21)
    assert math.isclose(iou_score(p, g), 100 * 6 / 15)
    assert_agrees(p, g)


def test_random_masks_agree_with_monai_and_scipy():
    rules = [assert_agrees(p, g)["empty_rule"] for p, g in random_pairs(90)]
    assert rules.count(None) >= 80  # the comparison really ran on non-empty pairs


def test_clinicdb_perturbed_agree_with_monai_and_scipy():
    masks = clinicdb_masks()
    for name, g in masks.items():
        assert g.shape == (288, 384) and g.any(), name
        perturbed = (grow_mask(g, -4), grow_mask(g, 6), shift_mask(g, 9, -5), shift_mask(grow_mask(g, 2), -3, 12),
                     shift_mask(grow_mask(g, -2), 15, 20), np.zeros_like(g))
        for p in perturbed:
            assert_agrees(p, g)
        assert score_pair(g, g) == dict(dice=100.0, iou=100.0, hd95=0.0, empty_rule=None)


def test_boundary_matches_scipy_erosion():
    for p, g in random_pairs(20, seed=3):
        np.testing.assert_array_equal(boundary(g), ref_edges(g))
        np.testing.assert_array_equal(boundary(p), ref_edges(p))
    tiny = np.ones((2, 5), bool)  # everything touches the image border: all boundary
    np.testing.assert_array_equal(boundary(tiny), tiny)


def test_boundary_distances_match_edt_and_hausdorff():
    for p, g in random_pairs(30, seed=4):
        if not (p.any() and g.any()):
            continue
        bd = boundary_distances(p, g)
        np.testing.assert_array_equal(np.sort(bd.pred_to_gt), np.sort(ndimage.distance_transform_edt(~ref_edges(g))[ref_edges(p)]))
        np.testing.assert_array_equal(np.sort(bd.gt_to_pred), np.sort(ndimage.distance_transform_edt(~ref_edges(p))[ref_edges(g)]))
        # the points are the boundary pixels, in full-image coordinates
        assert set(map(tuple, bd.pred_points)) == set(map(tuple, np.argwhere(ref_edges(p))))
        # percentile=100 is the plain Hausdorff distance; scipy's directed_hausdorff is a third independent implementation
        hd = max(directed_hausdorff(bd.pred_points, bd.gt_points)[0], directed_hausdorff(bd.gt_points, bd.pred_points)[0])
        assert abs(hd95(p, g, percentile=100) - hd) <= 1e-9
        assert hd95(p, g) == hd95(g, p)  # symmetric


def test_hd95_sanity():
    g = blob_mask((200, 260), seed=7)
    assert hd95(g, g) == 0.0
    assert abs(hd95(shift_mask(g, 0, 10), g) - 10) <= 1.0
    for r in (2, 5, 8):
        assert abs(hd95(grow_mask(g, r), g) - r) <= 1.5
    with pytest.raises(ValueError, match="percentile"):
        hd95(g, g, percentile=101)


# ---------------------------------------------------------------- empty masks

def test_empty_rules():
    H, W = 288, 384
    z = np.zeros((H, W), bool)
    g = blob_mask((H, W), seed=1)
    diag = math.hypot(H, W)
    assert image_diagonal((H, W)) == diag == 480.0
    expected = {
        "both_empty": ((z, z), dict(dice=100.0, iou=100.0, hd95=0.0)),
        "pred_empty": ((z, g), dict(dice=0.0, iou=0.0, hd95=diag)),
        "gt_empty": ((g, z), dict(dice=0.0, iou=0.0, hd95=diag)),
    }
    assert set(expected) == set(EMPTY_RULES)
    for rule, ((p, gt), vals) in expected.items():
        assert score_pair(p, gt) == dict(**vals, empty_rule=rule)
        assert empty_rule(p, gt) == rule
        assert hd95(p, gt) == vals["hd95"]
        mo = monai_scores(p, gt)
        assert math.isnan(mo["hd95"])                       # MONAI: NaN ...
        assert mo["dice"] == vals["dice"] and mo["iou"] == vals["iou"]  # ... and our Dice/IoU = its ignore_empty=False
        if rule != "pred_empty":
            assert math.isnan(mo["dice_default"])           # its default ignore_empty=True gives NaN on an empty gt
    assert empty_rule(g, g) is None
    # a batch of per-image scores with NaN, as MONAI would give, is refused instead of silently averaged
    with pytest.raises(ValueError, match="non-finite hd95"):
        summarize([score_pair(g, g), dict(dice=0.0, iou=0.0, hd95=float("nan"), empty_rule="pred_empty")])


def test_summarize():
    z = np.zeros((50, 60), bool)
    gs = [blob_mask((50, 60), seed=s) for s in range(6)]
    rows = [score_pair(shift_mask(g, 2, 1), g) for g in gs[:4]]
    rows += [score_pair(z, gs[4]), score_pair(gs[5], z), score_pair(z, z), score_pair(z, z)]
    s = summarize(rows)
    assert s["n"] == 8
    assert (s["n_both_empty"], s["n_pred_empty"], s["n_gt_empty"]) == (2, 1, 1)
    for k in ("dice", "iou", "hd95"):
        v = np.array([r[k] for r in rows])
        assert math.isclose(s[f"{k}_mean"], v.mean()) and math.isclose(s[f"{k}_std"], v.std())
    assert math.isclose(s["hd95_mean_nonempty"], np.mean([r["hd95"] for r in rows[:4]]))
    assert math.isclose(summarize(rows, ddof=1)["dice_std"], np.std([r["dice"] for r in rows], ddof=1))
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([dict(image=f"im{i}", **r) for i, r in enumerate(rows)])
    assert summarize(df) == s
    with pytest.raises(ValueError, match="no rows"):
        summarize([])
    with pytest.raises(KeyError, match="hd95"):
        summarize([dict(dice=1.0, iou=1.0)])
    with pytest.raises(ValueError, match="unknown empty_rule"):
        summarize([dict(dice=1.0, iou=1.0, hd95=1.0, empty_rule="nope")])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("fn", [dice_score, iou_score, hd95, score_pair, empty_rule, boundary_distances, check_pair])
def test_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError, match=r"pred \(288, 384\) vs gt \(352, 352\)"):
        fn(np.zeros((288, 384), bool), np.zeros((352, 352), bool))


def test_non_binary_and_wrong_rank():
    g = np.zeros((10, 10), np.uint8); g[2:5, 2:5] = 255
    with pytest.raises(ValueError, match=r"gt must be binary.*mask > 127"):
        dice_score(g > 0, g)
    with pytest.raises(ValueError, match="pred must be binary"):
        hd95(np.full((10, 10), 0.7), g > 0)
    with pytest.raises(ValueError, match=r"2-D \(H, W\)"):
        score_pair(np.zeros((1, 10, 10)), np.zeros((1, 10, 10)))
    # 0/1 numbers of any dtype, and torch tensors, are accepted
    m = (g > 0)
    assert dice_score(m.astype(np.float32), torch.from_numpy(m.astype(np.uint8))) == 100.0
    assert as_mask([[0, 1]]).dtype == bool


# ---------------------------------------------------------------- loss

def _monai_loss(logits, target):
    return 1.5 * DiceLoss(sigmoid=True, reduction="mean", batch=False, smooth_nr=1e-5, smooth_dr=1e-5)(
        logits[:, None], target[:, None]) + 1.0 * nn.BCEWithLogitsLoss()(logits, target)


@pytest.mark.parametrize("shape", [(1, 16, 16), (4, 40, 48), (3, 352, 352)])
def test_loss_equals_monai_dice_plus_bce(shape):
    g = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(*shape, generator=g, dtype=torch.float64).float() * 4
    target = (torch.rand(*shape, generator=g) > 0.7).float()
    target[0] = 0  # an image with nothing to segment
    ours = DiceBCELoss()(logits, target)
    assert abs(ours.item() - _monai_loss(logits, target).item()) <= 1e-6
    d, b = DiceBCELoss().components(logits, target)
    assert abs(1.5 * d.item() + b.item() - ours.item()) <= 1e-6
    w = DiceBCELoss(dice_weight=0.3, bce_weight=2.0)(logits, target)
    assert abs(w.item() - (0.3 * d.item() + 2.0 * b.item())) <= 1e-6


def test_loss_extreme_logits_finite_gradients():
    crit = DiceBCELoss()
    target = torch.zeros(2, 8, 8); target[:, 2:5, 2:5] = 1
    for logits in (torch.where(target > 0, 100.0, -100.0), torch.where(target > 0, -100.0, 100.0),
                   torch.full_like(target, 100.0), torch.full_like(target, -100.0)):
        x = logits.clone().requires_grad_(True)
        loss = crit(x, target)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    x = torch.where(target > 0, 100.0, -100.0)
    assert crit(x, target).item() < 1e-6  # a perfect prediction costs (almost) nothing


def test_loss_float32_under_autocast_cpu():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 32, 32) * 3, (torch.rand(2, 32, 32) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lb = DiceBCELoss()(logits.bfloat16(), target)
    assert lb.dtype == torch.float32
    assert abs(lb.item() - DiceBCELoss()(logits.bfloat16().float(), target).item()) <= 1e-6
    lh = DiceBCELoss()(logits.half(), target.half())
    assert lh.dtype == torch.float32 and abs(lh.item() - DiceBCELoss()(logits.half().float(), target).item()) <= 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for fp16 autocast")
def test_loss_fp16_autocast_cuda():
    torch.manual_seed(0)
    lin = nn.Linear(8, 8).cuda()
    x = torch.randn(4, 8, 8, device="cuda")
    target = (torch.rand(4, 8, 8, device="cuda") > 0.5).float()
    with torch.autocast("cuda", dtype=torch.float16):
        logits = lin(x) * 30
        assert logits.dtype == torch.float16
        loss = DiceBCELoss()(logits, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(lin.weight.grad).all()
    assert abs(loss.item() - DiceBCELoss()(logits.float(), target).item()) <= 1e-6


def test_loss_shape_mismatch():
    with pytest.raises(ValueError, match=r"logits \(2, 8, 8\) vs target \(2, 1, 8, 8\)"):
        DiceBCELoss()(torch.zeros(2, 8, 8), torch.zeros(2, 1, 8, 8))


def test_double_sigmoid_floor():
    "The official loss (DiceCELoss on probabilities) has a BCE floor: perfect predictions still cost ~0.31 / 0.69 per pixel."
    t = torch.zeros(1, 1, 20, 20); t[..., :4, :] = 1  # 20 % foreground
    z = torch.where(t > 0, 30.0, -30.0)
    official = DiceCELoss(lambda_dice=1.5, lambda_ce=1.0)(torch.sigmoid(z), t)
    floor = 0.2 * -math.log(1 / (1 + math.exp(-1))) + 0.8 * math.log(2)
    assert abs(official.item() - floor) < 1e-5
    assert DiceBCELoss()(z[:, 0], t[:, 0]).item() < 1e-9


# ---------------------------------------------------------------- batch_dice / batch_iou

def test_batch_dice_iou_match_per_image_scores():
    torch.manual_seed(0)
    tg = torch.stack([torch.from_numpy(blob_mask((64, 80), seed=s, n=1 + s % 3)).float() for s in range(10)])
    lg = torch.randn(10, 64, 80) * 2 + 3 * (tg * 2 - 1)
    tg[6] = 0                           # empty gt, non-empty prediction -> 0
    lg[7] = -20                         # empty prediction -> 0
    lg[8], tg[8] = -20, 0               # both empty -> 100
    lg[9] = 0.0                         # sigmoid = 0.5 exactly: not foreground (strict >)
    d, i = batch_dice(lg, tg), batch_iou(lg, tg)
    assert d.shape == (10,) and d.dtype == torch.float32 and i.dtype == torch.float32
    pm = (torch.sigmoid(lg) > 0.5).numpy()
    for b in range(10):
        assert abs(d[b].item() - dice_score(pm[b], tg[b].numpy())) <= 1e-5
        assert abs(i[b].item() - iou_score(pm[b], tg[b].numpy())) <= 1e-5
    assert d[6:].tolist() == [0.0, 0.0, 100.0, 0.0]
    # bool targets, (B, 1, H, W) tensors and a threshold
    assert torch.equal(batch_dice(lg[:, None], tg[:, None].bool()), d)
    p7 = (torch.sigmoid(lg) > 0.7).numpy()
    assert abs(batch_dice(lg, tg, threshold=0.7)[0].item() - dice_score(p7[0], tg[0].numpy())) <= 1e-5
    with pytest.raises(ValueError, match=r"logits \(10, 64, 80\) vs target \(3, 64, 80\)"):
        batch_dice(lg, tg[:3])
    with pytest.raises(ValueError, match="threshold"):
        batch_iou(lg, tg, threshold=1.5)


def test_package_does_not_import_monai():
    import subprocess
    code = "import sys, vlsm_adapter.metrics; print('monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
