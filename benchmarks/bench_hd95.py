#!/usr/bin/env python
"""Time HD95 (and a whole `score_pair`) on 1920×1080 mask pairs; prints milliseconds per pair.

    .venv/bin/python benchmarks/bench_hd95.py [--repeat 20]

Cases: a typical lesion (one wobbly blob of ~300 px radius, the prediction dilated and shifted), a small lesion,
a poor prediction (a different blob), and two worst-case-ish large irregular masks (thresholded smooth noise with
tens of thousands of boundary pixels; prediction independent, or shifted by 2 px). For reference it also times
SciPy's full-image distance transform and MONAI's compute_hausdorff_distance (when MONAI is installed), and checks
that all agree. A benchmark, not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations
import argparse, math, statistics, time, warnings

import numpy as np
import torch
from scipy import ndimage

from vlsm_adapter.metrics import boundary, grow_mask, hd95, score_pair, shift_mask

H, W = 1080, 1920


def blob(cy, cx, R, seed):
    "A star-shaped blob with a wobbly outline, r(θ) = R·(1 + Σ a_k cos(kθ + φ_k))."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    th, r = np.arctan2(yy - cy, xx - cx), np.hypot(yy - cy, xx - cx)
    k = np.arange(2, 7)[:, None, None]
    wob = (rng.uniform(0, 0.25 / k.ravel())[:, None, None] * np.cos(k * th + rng.uniform(0, 2 * np.pi, 5)[:, None, None])).sum(0)
    return r < R * (1 + wob)


def noise_mask(seed, level=0.0, sigma=8):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal((H, W)), sigma) > level


def ref_hd_scipy(p, g):
    ep, eg = p ^ ndimage.binary_erosion(p), g ^ ndimage.binary_erosion(g)
    d1, d2 = ndimage.distance_transform_edt(~eg)[ep], ndimage.distance_transform_edt(~ep)[eg]
    return float(max(np.percentile(d1, 95), np.percentile(d2, 95)))


def ms(fn, repeat):
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); ts.append(1000 * (time.perf_counter() - t0))
    return statistics.median(ts), min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-reference", action="store_true", help="skip the SciPy/MONAI reference timings")
    a = ap.parse_args()
    try:
        from monai.metrics import compute_hausdorff_distance
    except ImportError:
        compute_hausdorff_distance = None
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    g = blob(540, 900, 300, seed=1)
    small = blob(300, 1400, 60, seed=2)
    big_g = noise_mask(3)
    cases = {
        "typical: blob R≈300, pred dilated 4 px + shifted (6, -9)": (shift_mask(grow_mask(g, 4), 6, -9), g),
        "small: blob R≈60, pred eroded 3 px + shifted (-4, 5)": (shift_mask(grow_mask(small, -3), -4, 5), small),
        "poor: a different blob R≈250 elsewhere": (blob(600, 1100, 250, seed=5), g),
        "worst-ish: irregular noise masks (~50% area), independent": (noise_mask(4, 0.05), big_g),
        "worst-ish: irregular noise mask vs itself shifted 2 px": (shift_mask(big_g, 0, 2), big_g),
    }
    print(f"HD95 on {W}x{H} pairs, median (min) over {a.repeat} runs, ms per pair; torch threads 1")
    for name, (p, gt) in cases.items():
        n_b = int(boundary(p).sum() + boundary(gt).sum())
        rep = a.repeat if n_b < 20000 else max(3, a.repeat // 4)
        h = hd95(p, gt)
        t_hd = ms(lambda: hd95(p, gt), rep)
        t_sp = ms(lambda: score_pair(p, gt), rep)
        line = (f"{name}\n    boundary px {n_b:>7}, HD95 {h:8.3f} px | hd95 {t_hd[0]:7.2f} ({t_hd[1]:.2f}) ms | "
                f"score_pair {t_sp[0]:7.2f} ({t_sp[1]:.2f}) ms")
        if not a.no_reference:
            ref = ref_hd_scipy(p, gt)
            assert abs(ref - h) <= 1e-9, (ref, h)
            line += f" | SciPy full-image EDT {ms(lambda: ref_hd_scipy(p, gt), 3)[0]:7.1f} ms"
            if compute_hausdorff_distance is not None:
                tp, tg = (torch.from_numpy(x)[None, None].float() for x in (p, gt))
                mo = compute_hausdorff_distance(tp, tg, include_background=True, percentile=95).item()
                assert abs(mo - h) <= 1e-5 * max(1, h), (mo, h)
                line += f" | MONAI {ms(lambda: compute_hausdorff_distance(tp, tg, include_background=True, percentile=95), 3)[0]:7.1f} ms"
        print(line, flush=True)


if __name__ == "__main__":
    main()
