"""vlsm_adapter.prepare: a folder of images and masks becomes a registered, validated MedVLSM-layout dataset."""
import csv, json, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vlsm_adapter.data import MedVLSMDataset, validate, get_dataset, DATASETS, mask_to_bool, load_annotations
from vlsm_adapter.prepare import (prepare_dataset, describe_mask, make_prompts, pair_files, split_indices, main,
                                  PrepareError, PREPARED_FILE)
from vlsm_adapter.utils import shared_path

CLINIC = shared_path("data", "clinicdb_polyp")
needs_clinicdb = pytest.mark.skipif(CLINIC is None or not (CLINIC / "images").is_dir(),
                                    reason="shared/data/clinicdb_polyp/images not found (the shared folder beside the project)")


def make_folder(root: Path, n=10, suffix="_mask", size=(96, 64), seed=0):
    "n RGB images with one disc each (a known position and size) and their masks."
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True); (root / "msk").mkdir()
    truth = {}
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 80, (size[1], size[0], 3), dtype=np.uint8))
        msk = Image.new("L", size, 0)
        r = 6 + 2 * (i % 3); x = 15 if i % 2 else size[0] - 15; y = size[1] // 2
        for im, fill in ((img, (240, 220, 200)), (msk, 255)):
            ImageDraw.Draw(im).ellipse([x - r, y - r, x + r, y + r], fill=fill)
        img.save(root / "img" / f"c{i:02d}.png"); msk.save(root / "msk" / f"c{i:02d}{suffix}.png")
        truth[f"c{i:02d}"] = "left" if i % 2 else "right"
    return root / "img", root / "msk", truth


@pytest.fixture
def cleanup_names():
    before = dict(DATASETS)
    yield
    DATASETS.clear(); DATASETS.update(before)


def test_generated_folder_becomes_a_valid_dataset(tmp_path, cleanup_names):
    imgs, msks, truth = make_folder(tmp_path / "raw", n=20)
    out = prepare_dataset(imgs, msks, tmp_path / "data", "disc", mask_suffix="_mask", split=(0.6, 0.2, 0.2), seed=3)
    assert out == tmp_path / "data" / "disc"
    rep = validate("disc", root=tmp_path / "data", decode=True)
    assert rep.ok and rep.counts == {"train": 12, "val": 4, "test": 4}
    names = []
    for sp, n in rep.counts.items():
        ds = get_dataset("disc", sp, root=tmp_path / "data", prompt="p5")
        assert isinstance(ds, MedVLSMDataset) and len(ds) == n
        for i in range(len(ds)):
            r = ds.records[i]; names.append(Path(r["img_name"]).stem)
            m = ds.load_mask(i)
            ref = mask_to_bool(Image.open(msks / f"{Path(r['img_name']).stem}_mask.png"))
            assert (m == ref).all()                                   # masks written losslessly
            assert r["prompts"]["p0"] == "" and r["prompts"]["p1"] == "disc"
            assert r["prompts"]["p5"].startswith("one small") and r["prompts"]["p5"].endswith(f"located in {truth[names[-1]]} of the image")
            item = ds[i]
            assert tuple(item["pixel_values"].shape) == (3, 352, 352)
    assert sorted(names) == sorted(truth)                             # every image once, in exactly one split
    info = json.loads((out / PREPARED_FILE).read_text())
    assert info["counts"] == rep.counts and info["seed"] == 3


def test_deterministic_and_seed_dependent(tmp_path, cleanup_names):
    imgs, msks, _ = make_folder(tmp_path / "raw", n=12)
    splits = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = prepare_dataset(imgs, msks, tmp_path / "data", name, class_name="disc", mask_suffix="_mask", seed=seed)
        splits[name] = {sp: (out / "anns" / f"{sp}.json").read_text() for sp in ("train", "val", "test")}
    assert splits["a"] == splits["b"]
    assert splits["a"] != splits["c"]


def test_split_sizes():
    assert {k: len(v) for k, v in split_indices(120, (0.7, 0.15, 0.15)).items()} == {"train": 84, "val": 18, "test": 18}
    assert {k: len(v) for k, v in split_indices(7, (0.8, 0.1, 0.1)).items()} == {"train": 5, "val": 1, "test": 1}
    with pytest.raises(ValueError, match="summing to 1"): split_indices(10, (0.7, 0.1, 0.1))


def test_unpaired_files_are_named(tmp_path, cleanup_names):
    imgs, msks, _ = make_folder(tmp_path / "raw", n=4)
    (msks / "c01_mask.png").unlink()
    Image.new("L", (96, 64)).save(msks / "extra_mask.png")
    with pytest.raises(PrepareError) as e: prepare_dataset(imgs, msks, tmp_path / "data", "x", mask_suffix="_mask")
    msg = str(e.value)
    assert "c01.png: image without a mask" in msg and "extra_mask.png: mask without an image" in msg
    assert not (tmp_path / "data" / "x").exists()                    # nothing written


def test_size_mismatch_and_unreadable_are_named(tmp_path, cleanup_names):
    imgs, msks, _ = make_folder(tmp_path / "raw", n=4)
    Image.new("L", (50, 50)).save(msks / "c02_mask.png")
    (imgs / "c03.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(PrepareError) as e: prepare_dataset(imgs, msks, tmp_path / "data", "x", mask_suffix="_mask")
    msg = str(e.value)
    assert "c02_mask.png: mask is 50x50 (WxH) but its image c02.png is 96x64" in msg
    assert "c03.png: cannot read image" in msg


def test_prompts_from_csv(tmp_path, cleanup_names):
    imgs, msks, truth = make_folder(tmp_path / "raw", n=5)
    with open(tmp_path / "p.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["image", "p1", "p2"])
        for s in truth: w.writerow([s + ".png", f"lesion {s}", json.dumps([f"a {s}", f"b {s}"])])
    out = prepare_dataset(imgs, msks, tmp_path / "data", "csvset", mask_suffix="_mask", prompts_csv=tmp_path / "p.csv")
    recs = sum((load_annotations(out / "anns" / f"{sp}.json") for sp in ("train", "val", "test")), [])
    for r in recs:
        s = Path(r["img_name"]).stem
        assert r["prompts"] == {"p0": "", "p1": f"lesion {s}", "p2": [f"a {s}", f"b {s}"]}
    with open(tmp_path / "q.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["image", "p1"]); w.writerow(["c00.png", "x"])
    with pytest.raises(PrepareError, match="c01.png: no row in"):
        prepare_dataset(imgs, msks, tmp_path / "data", "csvset2", mask_suffix="_mask", prompts_csv=tmp_path / "q.csv")


def test_same_folder_with_suffix_and_refusals(tmp_path, cleanup_names):
    d = tmp_path / "both"; d.mkdir()
    imgs, msks, _ = make_folder(tmp_path / "raw", n=4)
    for p in list(imgs.iterdir()) + list(msks.iterdir()): (d / p.name).write_bytes(p.read_bytes())
    assert [(a.name, b.name) for a, b in pair_files(d, d, "_mask")][:1] == [("c00.png", "c00_mask.png")]
    with pytest.raises(ValueError, match="give mask_suffix"): pair_files(d, d)
    out = prepare_dataset(d, d, tmp_path / "data", "same", mask_suffix="_mask", split=(0.5, 0.25, 0.25))
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        prepare_dataset(d, d, tmp_path / "data", "same", mask_suffix="_mask")
    assert prepare_dataset(d, d, tmp_path / "data", "same", mask_suffix="_mask", overwrite=True) == out
    with pytest.raises(ValueError, match="other than the generated"): prepare_dataset(d, d, tmp_path / "data", "synthetic", mask_suffix="_mask")


def test_words_and_templates():
    m = np.zeros((90, 90), bool); m[5:20, 5:20] = True; m[60:80, 60:85] = True
    w = describe_mask(m)
    assert (w["n"], w["count"], w["size"], w["position"]) == (2, "two", "medium", "bottom right, top left")
    big = np.zeros((10, 10), bool); big[1:9, 1:9] = True
    assert describe_mask(big)["size"] == "large"
    p = make_prompts(w, "cyst", descriptions=["a sac of fluid"])
    assert p["p4"] == f"two medium {w['shape']} cysts" and p["p8"] == [f"two medium {w['shape']} cysts which is a sac of fluid located in bottom right, top left of the image"]
    with pytest.raises(ValueError, match="unknown field"): make_prompts(w, "cyst", templates=["{color} {name}"])


def test_command(tmp_path, cleanup_names, capsys):
    imgs, msks, _ = make_folder(tmp_path / "raw", n=6, suffix="")
    out = main([str(imgs), str(msks), "--out", str(tmp_path / "data"), "--name", "cmd", "--template", "{size} {name}", "--seed", "2"])
    assert "validated" in capsys.readouterr().out
    assert load_annotations(out / "anns" / "train.json")[0]["prompts"]["p1"] == "small cmd"
    ok = subprocess.run([sys.executable, "-m", "vlsm_adapter.prepare", str(imgs), str(msks), "--out", str(tmp_path / "d3"), "--name", "cmd3"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "validated" in ok.stdout and ok.stderr.strip() == "", ok.stderr   # the console script exits 0
    r = subprocess.run([sys.executable, "-m", "vlsm_adapter.prepare", str(imgs), str(tmp_path / "nope"), "--out", str(tmp_path / "d2"), "--name", "z"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "masks folder" in r.stderr and "does not exist" in r.stderr


@needs_clinicdb
def test_real_clinicdb_images(tmp_path, cleanup_names):
    out = prepare_dataset(CLINIC / "images", CLINIC / "masks", tmp_path / "data", "myclinic", class_name="polyp",
                          descriptions=["a projecting growth of tissue"], mode="symlink")
    rep = validate("myclinic", root=tmp_path / "data", decode=True)
    assert rep.ok and rep.counts == {"train": 84, "val": 18, "test": 18}
    ds = MedVLSMDataset("myclinic", "test", root=tmp_path / "data", prompt="p5")
    assert ds.load_image(0).size == (384, 288) and ds.load_mask(0).shape == (288, 384)
    # our size/count words against MedVLSM's own p5 of the same images
    theirs = {r["img_name"]: r["prompts"]["p5"].split() for sp in ("train", "val", "test")
              for r in load_annotations(CLINIC / "anns" / f"{sp}.json")}
    ours = {r["img_name"]: r["prompts"]["p4"].split() for sp in ("train", "val", "test")
            for r in load_annotations(out / "anns" / f"{sp}.json")}
    assert set(ours) == set(theirs)
    agree_size = np.mean([ours[k][1] == theirs[k][1] for k in ours])
    agree_count = np.mean([ours[k][0] == theirs[k][0] for k in ours])
    assert agree_size >= 0.95 and agree_count >= 0.9, (agree_size, agree_count)


def test_training_finds_the_prepared_dataset(tmp_path, cleanup_names):
    from vlsm_adapter.train import fit, TrainConfig
    imgs, msks, _ = make_folder(tmp_path / "raw", n=8, size=(64, 48))
    prepare_dataset(imgs, msks, tmp_path / "data", "trainme", mask_suffix="_mask", split=(0.5, 0.25, 0.25))
    r = fit(TrainConfig(dataset="trainme", data_root=str(tmp_path / "data"), model="tiny", method="shallow", variant="v",
                        batch_size=4, max_epochs=1, image_size=64, progress=False, out_dir=str(tmp_path / "run")))
    assert r.best_epoch == 1 and len(r.history) == 1
    assert (tmp_path / "run" / "best" / "adapter_config.json").is_file()
