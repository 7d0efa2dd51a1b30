"""vlsm_adapter.predict: masks for image files from a run or adapter folder, checked against an independent forward."""
import subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlsm_adapter.data import SyntheticDataset, image_to_tensor
from vlsm_adapter.model import load_vlsm_adapter
from vlsm_adapter.predict import predict_images, find_images, main
from vlsm_adapter.train import fit, TrainConfig

PROMPT = "red circle"
SIZES = [(160, 160), (200, 150), (97, 131), (320, 240), (64, 64)]    # (W, H), odd ones included


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    fit(TrainConfig(dataset="synthetic", model="tiny", synthetic_n=16, batch_size=8, max_epochs=1, image_size=160,
                    progress=False, out_dir=str(tmp / "run")))
    src = SyntheticDataset(n=len(SIZES), split="test", size=160, seed=5, prompt="p1")
    (tmp / "imgs").mkdir()
    for i, wh in enumerate(SIZES):
        src.load_image(i).resize(wh).save(tmp / "imgs" / (f"im{i}.png" if i % 2 else f"im{i}.jpg"))
    (tmp / "imgs" / "notes.txt").write_text("not an image")
    return tmp


def reference(run_dir: Path, img: Path, threshold=0.5) -> np.ndarray:
    "An independent forward: the adapter loaded here, image resized to 160, sigmoid, bilinear to the original size."
    model, tok = load_vlsm_adapter(run_dir / "best", base="tiny")
    im = Image.open(img).convert("RGB")
    enc = tok([PROMPT], return_tensors="pt")
    with torch.no_grad():
        p = torch.sigmoid(model(image_to_tensor(im, 160)[None], enc["input_ids"], enc["attention_mask"]))[0]
    return (F.interpolate(p[None, None], size=(im.height, im.width), mode="bilinear", align_corners=False)[0, 0] > threshold).numpy()


def test_folder_matches_independent_forward(run):
    rows = predict_images(run / "run", run / "imgs", PROMPT, run / "out", overlay=True, batch_size=2, progress=False, device="cpu")
    assert [Path(r["image"]).name for r in rows] == sorted(p.name for p in (run / "imgs").iterdir() if p.suffix != ".txt")
    for r in rows:
        m = np.asarray(Image.open(r["mask"]))
        im = Image.open(r["image"])
        assert Image.open(r["mask"]).mode == "L" and m.shape == (im.height, im.width)
        assert set(np.unique(m)) <= {0, 255}
        ref = reference(run / "run", Path(r["image"]))
        assert ((m == 255) != ref).sum() == 0, r["image"]
        assert Image.open(r["overlay"]).size == im.size
    assert any(0 < r["foreground"] < 1 for r in rows)        # a comparison of non-constant masks
    assert (run / "out" / "predictions.csv").read_text().count("\n") == len(SIZES) + 1
    # the threshold matters: a lower one gives at least as much foreground
    lo = predict_images(run / "run" / "best", run / "imgs" / "im1.png", PROMPT, run / "lo", threshold=0.2, progress=False)
    hi = predict_images(run / "run" / "best", run / "imgs" / "im1.png", PROMPT, run / "hi", threshold=0.8, progress=False)
    assert lo[0]["foreground"] >= rows[1]["foreground"] >= hi[0]["foreground"]
    assert ((np.asarray(Image.open(lo[0]["mask"])) == 255) == reference(run / "run", run / "imgs" / "im1.png", 0.2)).all()


def test_glob_and_single_file(run):
    assert [p.name for p in find_images(str(run / "imgs" / "*.png"))] == ["im1.png", "im3.png"]
    assert find_images(run / "imgs" / "im0.jpg") == [run / "imgs" / "im0.jpg"]
    rows = main([str(run / "run"), "--images", str(run / "imgs" / "*.png"), "--prompt", PROMPT, "--out", str(run / "g"),
                 "--no-progress", "--batch-size", "1"])
    assert [Path(r["mask"]).name for r in rows] == ["im1.png", "im3.png"]
    ok = subprocess.run([sys.executable, "-m", "vlsm_adapter.predict", str(run / "run"), "--images", str(run / "imgs" / "im3.png"),
                         "--prompt", PROMPT, "--out", str(run / "sub"), "--no-progress"], capture_output=True, text=True)
    assert ok.returncode == 0 and "wrote 1 mask(s)" in ok.stdout, ok.stderr                        # the console script exits 0
    assert (np.asarray(Image.open(run / "sub" / "masks" / "im3.png")) == np.asarray(Image.open(rows[1]["mask"]))).all()
    one = predict_images(run / "run", run / "imgs" / "im3.png", PROMPT, run / "one", progress=False)
    assert (np.asarray(Image.open(one[0]["mask"])) == np.asarray(Image.open(rows[1]["mask"]))).all()   # batch size does not matter
    # an adapter folder and its run folder give the same masks
    a = predict_images(run / "run" / "best", run / "imgs" / "im3.png", PROMPT, run / "ad", progress=False)
    assert (np.asarray(Image.open(a[0]["mask"])) == np.asarray(Image.open(one[0]["mask"]))).all()


def test_errors(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="match the pattern"): find_images(str(run / "imgs" / "*.bmp"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"): predict_images(run / "run", tmp_path / "empty", PROMPT, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="neither a run folder"): predict_images(run / "imgs", run / "imgs", PROMPT, tmp_path / "o")
    (tmp_path / "bad").mkdir(); (tmp_path / "bad" / "ok.png").write_bytes((run / "imgs" / "im1.png").read_bytes())
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ValueError, match=r"broken\.jpg: cannot read image"): predict_images(run / "run", tmp_path / "bad", PROMPT, tmp_path / "o")
    with pytest.raises(ValueError, match="threshold"): predict_images(run / "run", run / "imgs", PROMPT, tmp_path / "o", threshold=1.5)
    r = subprocess.run([sys.executable, "-m", "vlsm_adapter.predict", str(tmp_path / "empty"), "--images", str(run / "imgs"),
                        "--prompt", PROMPT, "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode != 0 and "vlsm-predict:" in r.stderr and "neither a run folder" in r.stderr
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"): predict_images(run / "run", run / "imgs", PROMPT, tmp_path / "o", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(run):
    cpu = predict_images(run / "run", run / "imgs", PROMPT, run / "cpu", device="cpu", progress=False)
    gpu = predict_images(run / "run", run / "imgs", PROMPT, run / "cuda", device="cuda", progress=False)
    for a, b in zip(cpu, gpu):
        diff = (np.asarray(Image.open(a["mask"])) != np.asarray(Image.open(b["mask"]))).mean()
        assert diff < 1e-3, (a["image"], diff)
