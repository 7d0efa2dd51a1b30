"""Tests of vlsm_adapter.data beyond the notebook: the real MedVLSM annotation files, the real ClinicDB subset end to
end, every kind of broken input, prompt sampling, the synthetic dataset and the collator."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlsm_adapter.data import (DATASETS, PAPER_NAMES, DatasetError, MedVLSMDataset, PromptCollator, SyntheticDataset,
                               all_prompts, choose_prompt, data_root, dataset_dir, get_dataset, item_rng, load_annotations,
                               image_to_tensor, mask_to_bool, mask_to_tensor, prompt_keys, resolve_dataset, validate, write_medvlsm)
from vlsm_adapter.utils import shared_path

ANNS = shared_path("data", "medvlsm_anns")
DATA = shared_path("data")
HAVE_CLINICDB = DATA is not None and (DATA / "clinicdb_polyp" / "anns").is_dir()
needs_anns = pytest.mark.skipif(ANNS is None, reason="shared/data/medvlsm_anns not found (the shared folder beside the project)")
needs_clinicdb = pytest.mark.skipif(not HAVE_CLINICDB, reason="shared/data/clinicdb_polyp not found (the shared folder beside the project)")


@pytest.fixture(scope="module")
def tok():
    "CLIP's tokenizer, offline (vlsm_adapter.clipseg when it exists, else the same recipe here)."
    try:
        from vlsm_adapter.clipseg import clip_tokenizer
        return clip_tokenizer()
    except ImportError:
        pass
    import gzip, importlib.metadata as md
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    try: files = md.files("open_clip_torch") or []
    except md.PackageNotFoundError: pytest.skip("open_clip_torch (for CLIP's BPE file) is not installed: run make install")
    p = [f for f in files if f.name == "bpe_simple_vocab_16e6.txt.gz"][0].locate()
    merges = gzip.open(p).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    bs = list(bytes_to_unicode().values())
    vocab = bs + [v + "</w>" for v in bs] + ["".join(x.split()) for x in merges] + ["<|startoftext|>", "<|endoftext|>"]
    t = CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=[tuple(x.split()) for x in merges])
    t.model_max_length = 77
    return t


# ---------------------------------------------------------------- registry and data root
def test_registry():
    assert DATASETS == {"kvasir": "kvasir_polyp", "bkai": "bkai_polyp", "clinicdb": "clinicdb_polyp", "isic16": "isic",
                        "dfu": "dfu", "camus": "camus", "busi": "busi", "chexlocalize": "chexlocalize"}
    for s, f in DATASETS.items():
        assert resolve_dataset(s) == resolve_dataset(f) == resolve_dataset(PAPER_NAMES[s]) == f
    with pytest.raises(ValueError, match="known datasets: kvasir"): resolve_dataset("nope")
    with pytest.raises(ValueError, match="get_dataset"): resolve_dataset("synthetic")


def test_paper_names():
    t = shared_path("paper", "table1.csv")
    if t is None: pytest.skip("shared/paper/table1.csv not found")
    import pandas as pd
    assert set(PAPER_NAMES.values()) == set(pd.read_csv(t).dataset)


def test_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("VLSM_DATA", raising=False)
    assert data_root() == Path("data") and data_root(tmp_path) == tmp_path
    monkeypatch.setenv("VLSM_DATA", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(FileNotFoundError) as e: dataset_dir("dfu")
    msg = str(e.value)
    for part in (str(tmp_path.resolve() / "dfu"), "Known datasets", "anns/{train,val,test}.json", "MedVLSM", "images/", "masks/"):
        assert part in msg, part


# ---------------------------------------------------------------- the real annotation files
N_KEYS = {"kvasir_polyp": 9, "bkai_polyp": 9, "clinicdb_polyp": 9, "isic": 9, "dfu": 9, "camus": 7, "busi": 6, "chexlocalize": 6}


@needs_anns
@pytest.mark.parametrize("folder", sorted(N_KEYS))
def test_real_annotation_files(folder):
    files = sorted((ANNS / folder).glob("*.json"))
    expected = {"camus": {"test", "val"}, "kvasir_polyp": {"train", "val", "test", "testB"}}.get(folder, {"train", "val", "test"})
    assert {f.stem for f in files} == expected
    n = N_KEYS[folder]
    for f in files:
        recs = load_annotations(f, folder, f.stem)
        print(folder, f.stem, len(recs), "records")
        assert len(recs) == len(json.loads(f.read_text())) > 0
        for r in recs:
            p = r["prompts"]
            assert prompt_keys(p) == [f"p{i}" for i in range(n + 1)] and p["p0"] == ""
            assert all(isinstance(t, str) and t for t in all_prompts(p))
            if n == 9:
                assert all(isinstance(p[f"p{i}"], str) for i in range(1, 7))
                assert {len(p[k]) for k in ("p7", "p8", "p9")} == ({1} if p["p1"] == "no polyp" else {5})
            if folder == "camus":
                assert {len(p[k]) for k in prompt_keys(p)[1:]} == {2} and "/" in r["mask_name"]
            if folder == "chexlocalize": assert all(isinstance(v, str) for v in p.values())
            if folder == "busi" and "_normal" not in r["img_name"]:
                assert {len(p[f"p{i}"]) for i in range(2, 7)} == {2}


@needs_anns
def test_real_counts():
    counts = {(f.parent.name, f.stem): len(load_annotations(f)) for f in ANNS.glob("*/*.json")}
    assert counts[("busi", "train")] == 624 and counts[("camus", "test")] == 600 and counts[("dfu", "train")] == 1600
    assert counts[("kvasir_polyp", "testB")] == 100 and counts[("chexlocalize", "val")] == 446
    assert sum("_normal" in r["img_name"] for r in load_annotations(ANNS / "busi" / "train.json")) == 107


# ---------------------------------------------------------------- the real ClinicDB subset
@needs_clinicdb
def test_clinicdb_end_to_end(tok):
    assert [len(get_dataset("clinicdb", s, root=DATA)) for s in ("train", "val", "test")] == [80, 20, 20]
    ds = MedVLSMDataset("clinicdb", "val", root=DATA)
    b = next(iter(DataLoader(ds, batch_size=6, collate_fn=PromptCollator(tok))))
    assert b["pixel_values"].shape == (6, 3, 352, 352) and b["pixel_values"].dtype == torch.float32
    assert b["mask"].shape == (6, 352, 352) and b["mask"].dtype == torch.float32
    assert set(b["mask"].unique().tolist()) == {0.0, 1.0}
    assert b["input_ids"].dtype == torch.long and b["input_ids"].shape == b["attention_mask"].shape
    assert b["orig_size"] == [(288, 384)] * 6 and b["index"].tolist() == list(range(6))
    assert b["img_name"] == [r["img_name"] for r in ds.records[:6]]
    assert ds.load_mask(0).dtype == bool and ds.load_mask(0).shape == (288, 384)
    assert ds.load_image(0).mode == "RGB" and ds.load_image(0).size == (384, 288)
    # the normalisation, against an independent computation
    x = torch.from_numpy(np.asarray(ds.load_image(0).resize((352, 352), Image.BILINEAR), np.float32) / 255).permute(2, 0, 1)
    ref = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(b["pixel_values"][0], ref, atol=1e-5, rtol=1e-5)
    rep = validate("clinicdb", root=DATA, decode=True)
    assert rep.ok and rep.counts == {"train": 80, "val": 20, "test": 20}


# ---------------------------------------------------------------- prompts
def test_prompt_sampling():
    p = {"p0": "", "p1": "a", "p2": "b", "p3": ["c1", "c2", "c3"]}
    draws = [choose_prompt(p, "random", item_rng(0, 0, i)) for i in range(600)]
    assert set(draws) == {"a", "b", "c1", "c2", "c3"}          # never p0, every variant
    assert choose_prompt(p, "p3") == "c1" and choose_prompt(p, "p0") == ""
    assert {choose_prompt(p, "p3", item_rng(0, 0, i), variant="random") for i in range(60)} == {"c1", "c2", "c3"}
    with pytest.raises(KeyError, match="p4"): choose_prompt(p, "p4")


def test_dataset_prompts_reproducible():
    ds = SyntheticDataset(60)
    e0 = [ds.pick_prompt(i) for i in range(60)]
    assert e0 == [SyntheticDataset(60).pick_prompt(i) for i in range(60)]   # same seed, same epoch
    assert e0 == [ds[i]["prompt"] for i in range(60)]
    ds.set_epoch(1)
    e1 = [ds[i]["prompt"] for i in range(60)]
    assert sum(a != b for a, b in zip(e0, e1)) > 30                        # a new epoch, new draws
    ds.set_epoch(0)
    assert [ds.pick_prompt(i) for i in reversed(range(60))][::-1] == e0   # independent of access order
    assert e0 != [SyntheticDataset(60, seed=1).pick_prompt(i) for i in range(60)]
    fixed = SyntheticDataset(6, prompt="p4")
    assert [fixed[i]["prompt"] for i in range(6)] == [fixed.prompts(i)["p4"][0] for i in range(6)]
    with pytest.raises(DatasetError, match="synthetic/train record 0"): SyntheticDataset(3, prompt="p7")
    with pytest.raises(ValueError, match="'random' or a prompt key"): SyntheticDataset(3, prompt="first")


# ---------------------------------------------------------------- synthetic
def test_synthetic():
    ds = SyntheticDataset(12, split="train")
    a, b = ds[3], ds[4]                                                     # image 1, two of its shapes
    assert a["img_name"] == b["img_name"] == "synthetic_00001.png" and a["mask_name"] != b["mask_name"]
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and a["prompt"] != b["prompt"]
    assert not torch.equal(a["mask"], b["mask"]) and not (ds.load_mask(3) & ds.load_mask(4)).any()
    assert a["orig_size"] == (240, 320) and set(a["mask"].unique().tolist()) == {0.0, 1.0}
    assert a["pixel_values"].shape == (3, 352, 352) and a["mask"].shape == (352, 352)
    c = SyntheticDataset(12, split="train")[3]
    assert torch.equal(c["pixel_values"], a["pixel_values"]) and torch.equal(c["mask"], a["mask"]) and c["prompt"] == a["prompt"]
    assert not torch.equal(SyntheticDataset(12, split="val")[3]["pixel_values"], a["pixel_values"])
    for i in range(12):                                                     # the mask is the named shape
        r, m = ds.records[i], ds.load_mask(i)
        assert r["color"] in ds.pick_prompt(i) and 0.02 < m.mean() < 0.2
        assert np.abs(np.asarray(ds.load_image(i), np.float32)[m].mean(0) - {"red": (215, 40, 40), "green": (40, 170, 60),
                      "blue": (40, 90, 225), "yellow": (235, 205, 40)}[r["color"]]).max() < 25
    assert [len(get_dataset("synthetic", s)) for s in ("train", "val", "test")] == [256, 64, 64]
    assert len(get_dataset("synthetic", "val", n=7)) == 7


@pytest.mark.parametrize("name", ["synthetic", "synthetic-us"])
def test_synthetic_resized_cache_exact(name):
    "Items from the in-memory resized cache are the very tensors `image_to_tensor` / `mask_to_tensor` give on the render."
    for size in (160, 96):
        ds = get_dataset(name, "train", n=9, size=size, seed=5)
        for _ in range(2):                                                  # the first pass fills the cache, the second reads it
            for i in range(len(ds)):
                it, (img, lab) = ds[i], ds.rendered(i // ds.shapes_per_image)
                assert torch.equal(it["pixel_values"], image_to_tensor(Image.fromarray(img), size))
                assert torch.equal(it["mask"], mask_to_tensor(lab == ds.records[i]["target"] + 1, size))
                assert it["orig_size"] == img.shape[:2]
    ds.size = 64                                                            # a new size is a new cache entry, not a stale one
    assert ds[0]["pixel_values"].shape == (3, 64, 64) and ds[0]["mask"].shape == (64, 64)


# ---------------------------------------------------------------- transforms
@pytest.mark.parametrize("mode", ["L", "1", "RGB", "P", "RGBA", "JPEG"])
def test_mask_modes(mode, tmp_path):
    truth = np.zeros((30, 50), bool); truth[5:20, 10:40] = True
    u8 = truth.astype(np.uint8) * 255
    if mode == "P":
        im = Image.fromarray(truth.astype(np.uint8), "P"); im.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    elif mode == "JPEG":
        Image.fromarray(u8).save(tmp_path / "m.jpg", quality=70); im = Image.open(tmp_path / "m.jpg")
        assert len(np.unique(np.asarray(im))) > 2
    elif mode == "1": im = Image.fromarray(truth)
    elif mode == "L": im = Image.fromarray(u8)
    else: im = Image.fromarray(u8).convert(mode)
    assert (mask_to_bool(im) == truth).all()
    t = mask_to_tensor(mask_to_bool(im), 64)
    assert t.dtype == torch.float32 and set(t.unique().tolist()) == {0.0, 1.0}


# ---------------------------------------------------------------- collator
def test_collator_long_prompts(tok):
    ds = SyntheticDataset(3)
    items = [ds[0], {**ds[1], "prompt": "polyp which is a projecting growth of tissue " * 20}, {**ds[2], "prompt": ""}]
    b = PromptCollator(tok)(items)
    assert b["input_ids"].shape == (3, 77)
    for i in range(3):
        n = int(b["attention_mask"][i].sum())
        assert b["input_ids"][i, 0] == tok.bos_token_id and b["input_ids"][i, n - 1] == tok.eos_token_id
    assert int(b["attention_mask"][1].sum()) == 77 and int(b["attention_mask"][2].sum()) == 2
    assert b["input_ids"][0, :int(b["attention_mask"][0].sum())].tolist() == tok(ds.pick_prompt(0))["input_ids"]
    short = PromptCollator(tok)([ds[0], ds[1]])                             # padding is per batch
    assert short["input_ids"].shape[1] < 20 and short["index"].dtype == torch.long


@needs_anns
def test_collator_real_long_prompts(tok):
    texts = [t for f in ANNS.glob("chexlocalize/*.json") for r in load_annotations(f) for t in all_prompts(r["prompts"])]
    longest = max(texts, key=len)
    assert len(tok(longest)["input_ids"]) > 77                              # real prompts exceed CLIP's context
    b = PromptCollator(tok)([{**SyntheticDataset(1)[0], "prompt": longest}])
    assert b["input_ids"].shape == (1, 77) and b["input_ids"][0, -1] == tok.eos_token_id


# ---------------------------------------------------------------- broken inputs
def make(root: Path, folder="busi", splits=("train", "val", "test"), n=6, **kw) -> Path:
    for s in splits: write_medvlsm(SyntheticDataset(n, split=s), root, folder, prefix=f"{s}_", **kw)
    return root / folder


def _edit(d, fn, split="train"):
    f = d / "anns" / f"{split}.json"
    recs = json.loads(f.read_text()); fn(recs); f.write_text(json.dumps(recs))


def _rec(d, i, split="train"):
    return json.loads((d / "anns" / f"{split}.json").read_text())[i]


def _missing_image(d):
    (d / "images" / "train_synthetic_00001.png").unlink()

def _missing_mask(d):
    (d / "masks" / _rec(d, 3)["mask_name"]).unlink()

def _corrupt_image(d):
    (d / "images" / "train_synthetic_00001.png").write_bytes(b"GIF89a garbage")

def _truncated_image(d):
    p = d / "images" / "train_synthetic_00001.png"; p.write_bytes(p.read_bytes()[:2000])

def _size_mismatch(d):
    p = d / "masks" / _rec(d, 3)["mask_name"]; Image.open(p).resize((64, 48)).save(p)

def _malformed(d):
    _edit(d, lambda r: r[4].pop("img_name"))

def _wrong_type(d):
    _edit(d, lambda r: r[4].update(mask_name=3))

def _escape(d):
    _edit(d, lambda r: r[4].update(mask_name="../../secret.png"))

def _invalid_json(d):
    (d / "anns" / "train.json").write_text('[{"img_name": "a.png",')


@pytest.mark.parametrize("damage,record,needle", [
    (_missing_image, 3, "images/train_synthetic_00001.png"), (_missing_mask, 3, "masks/train_synthetic_00001_"),
    (_corrupt_image, 3, "images/train_synthetic_00001.png"), (_truncated_image, 3, "images/train_synthetic_00001.png"),
    (_size_mismatch, 3, "masks/train_synthetic_00001_"), (_malformed, 4, "anns/train.json"),
    (_wrong_type, 4, "anns/train.json"), (_escape, 4, "anns/train.json"), (_invalid_json, None, "anns/train.json")])
def test_bad_input_raises(tmp_path, damage, record, needle):
    d = make(tmp_path); damage(d)
    with pytest.raises(DatasetError) as e:
        ds = MedVLSMDataset("busi", "train", root=tmp_path)
        for i in range(len(ds)): ds[i]
    msg = str(e.value)
    assert "busi/train" in msg and needle in msg and str(d) in msg, msg
    if record is not None: assert f"record {record}" in msg, msg
    assert isinstance(e.value, ValueError) and e.value.problems
    # validate finds the same problem (decode=True for data that only breaks when decoded)
    rep = validate("busi", root=tmp_path, decode=damage is _truncated_image, raise_=False)
    assert rep and all(p.split == "train" for p in rep)
    if record is not None: assert record in {p.index for p in rep}


def test_unknown_prompt_key_and_missing_split(tmp_path):
    make(tmp_path, folder="camus", splits=("val", "test"))
    with pytest.raises(DatasetError, match=r"camus/val record 0: prompt 'p9' not in this record"):
        MedVLSMDataset("camus", "val", root=tmp_path, prompt="p9")
    with pytest.raises(FileNotFoundError, match="splits available: test, val"): MedVLSMDataset("camus", "train", root=tmp_path)
    ds = MedVLSMDataset("camus", "val", root=tmp_path)                       # CAMUS: val lives in train/ sub-folders
    assert ds.image_path(0).parent == tmp_path / "camus" / "images" / "train" and ds[0]["orig_size"] == (240, 320)


def test_validate_reports_everything(tmp_path):
    d = make(tmp_path, mask_ext=".jpg")
    assert validate("busi", root=tmp_path).ok
    _missing_image(d); _escape(d); _size_mismatch(d)
    _edit(d, lambda r: r[0]["prompts"].pop("p1"), split="test")
    rep = validate("busi", root=tmp_path, raise_=False)
    assert sorted({(p.split, p.index) for p in rep}) == [("test", 0), ("train", 3), ("train", 4), ("train", 5)]
    with pytest.raises(DatasetError) as e: validate("busi", root=tmp_path)
    assert len(e.value.problems) == len(rep) and "test record 0" in str(e.value) and "train record 5" in str(e.value)


def test_dataloader_workers_match():
    "Prompts and pixels do not depend on which worker loads an item (the RNG is per (seed, epoch, index))."
    ds = SyntheticDataset(12, size=64)
    ds.set_epoch(3)
    a = list(DataLoader(ds, batch_size=4, num_workers=0, collate_fn=lambda x: x))
    b = list(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda x: x))
    for xa, xb in zip(sum(a, []), sum(b, [])):
        assert xa["prompt"] == xb["prompt"] and torch.equal(xa["pixel_values"], xb["pixel_values"])
        assert torch.equal(xa["mask"], xb["mask"])


def test_synthetic_shapes_option():
    two = SyntheticDataset(8, shapes=2)
    assert two.records[0]["img_name"] == two.records[1]["img_name"] != two.records[2]["img_name"]
    assert not (two.load_mask(0) & two.load_mask(1)).any() and two.load_mask(0).any() and two.load_mask(1).any()
    assert len({r["img_name"] for r in SyntheticDataset(4, shapes=1).records}) == 4
    with pytest.raises(ValueError, match="shapes must be"): SyntheticDataset(3, shapes=0)
