"""Model tests on the full rd64-refined architecture (slower than the notebook's tiny-model checks)."""
import json, warnings
import pytest, torch

from vlsm_adapter.clipseg import load_clipseg, clip_tokenizer, module_summary, clipseg_forward, stock_logits
from vlsm_adapter.model import VLSMAdapter, identity_check, one_step_check, load_vlsm_adapter, METHODS, VARIANTS

GOLDEN = {("shallow", "v"): 2_363_136, ("shallow", "vl"): 3_939_072, ("shallow", "vlc"): 4_201_984,
          ("dense", "v"): 1_784_448, ("dense", "vl"): 2_974_464, ("dense", "vlc"): 3_237_376}


@pytest.fixture(scope="module")
def full():
    return load_clipseg("random")


def test_tokenizer_matches_clip_ids():
    tok = clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    long = tok(["word " * 200], truncation=True, max_length=77).input_ids[0]
    assert len(long) == 77 and long[-1] == 49407


def test_full_architecture_counts(full):
    model, _ = full
    assert module_summary(model) == {"vision encoder": 85_799_424, "text encoder": 63_165_952,
                                     "projections": 655_360, "logit_scale": 1, "decoder": 1_127_009,
                                     "total": 150_747_746}
    for (method, variant), n in GOLDEN.items():
        c = VLSMAdapter(model, method, variant).count_parameters()
        assert c["trainable"] == n, (method, variant, c)
        assert c["total"] == 150_747_746 + n
    assert VLSMAdapter(model, "e2e").count_parameters()["trainable"] == 150_747_746
    assert VLSMAdapter(model, "decoder").count_parameters()["trainable"] == 1_127_009


def test_identity_adapters_reproduce_stock_full_size(full):
    model, tok = full
    configs = [("dense", "v", "official"), ("dense", "vl", "official"), ("dense", "vlc", "official"),
               ("shallow", "v", "official"), ("shallow", "vlc", "delta")]
    errs = identity_check(model, tok, configs)
    # random full-size weights give logits of a few hundred; 1e-5 relative to that scale is ~1e-3 absolute
    for cfg, err in errs.items():
        assert err <= 1e-5, (cfg, err)


def test_official_shallow_text_is_not_identity(full):
    model, tok = full
    ids = tok(["a polyp", "a skin lesion on the arm"], padding=True, return_tensors="pt")
    px = torch.randn(2, 3, 352, 352)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = stock_logits(model, px, ids.input_ids, ids.attention_mask)
        out = VLSMAdapter(model, "shallow", "vl", init="zero")(px, ids.input_ids, ids.attention_mask)
    assert (out - ref).abs().max() > 1e-2


@pytest.mark.parametrize("method,variant", [(m, v) for m in METHODS for v in (VARIANTS if m in ("shallow", "dense") else (None,))])
def test_one_step_only_trainable_change(method, variant):
    base, tok = load_clipseg("tiny")
    m = VLSMAdapter(base, method, variant)
    ids = tok(["a red circle", "a blue square"], padding=True, return_tensors="pt")
    r = one_step_check(m, torch.randn(2, 3, 352, 352), ids.input_ids, ids.attention_mask)
    assert r["frozen_changed"] == []
    if method == "e2e":   # CLIP's image-embedding head does not feed the segmentation output
        unused = ("clipseg.clip.vision_model.encoder.layers.4.", "clipseg.clip.vision_model.post_layernorm",
                  "clipseg.clip.visual_projection", "clipseg.clip.logit_scale")
        assert all(n.startswith(unused) for n in r["no_grad"]), r["no_grad"]
    else:
        assert r["no_grad"] == [] and r["unchanged"] == []


def test_save_load_roundtrip_and_mismatch(tmp_path):
    base, tok = load_clipseg("tiny")
    m = VLSMAdapter(base, "shallow", "vlc")
    for p in m.parameters():
        if p.requires_grad: p.data.normal_(0, 0.05)
    m.save_adapter(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["method"] == "shallow" and cfg["variant"] == "vlc" and cfg["adapter_dim"] == 512
    fresh, _ = load_vlsm_adapter(tmp_path / "a")
    ids = tok(["a red circle"], return_tensors="pt")
    px = torch.randn(1, 3, 352, 352)
    sd_fresh, sd_m = fresh.state_dict(), m.state_dict()          # the weights: bit for bit
    assert sd_fresh.keys() == sd_m.keys() and all(torch.equal(sd_fresh[k], sd_m[k]) for k in sd_m)
    with torch.no_grad():   # two float forwards: equal up to rounding (not bit-reproducible on a busy machine)
        torch.testing.assert_close(fresh(px, ids.input_ids), m(px, ids.input_ids), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="method: file has 'shallow'"):
        VLSMAdapter(base, "dense", "vlc").load_adapter(tmp_path / "a")
    # a corrupted weight file (wrong shapes) is refused, naming the file
    bad = VLSMAdapter(base, "shallow", "vlc", adapter_dim=16)
    bad.save_adapter(tmp_path / "b")
    (tmp_path / "b" / "adapter_config.json").write_text((tmp_path / "a" / "adapter_config.json").read_text())
    with pytest.raises(ValueError, match="(?s)disagrees with the configuration stored in .*adapter_dim"):   # its metadata says 16
        VLSMAdapter(base, "shallow", "vlc").load_adapter(tmp_path / "b")


def test_hub_id_offline_fails_with_choices():
    try:
        load_clipseg("CIDAS/clipseg-rd64-refined")
    except RuntimeError as e:
        assert "'random'" in str(e) and "'tiny'" in str(e) and "save_pretrained" in str(e)
    else:
        pytest.skip("the hub model is reachable or cached here; the offline error path cannot be exercised")


def test_local_folder_roundtrip(tmp_path):
    base, tok = load_clipseg("tiny")
    base.save_pretrained(tmp_path); tok.save_pretrained(tmp_path)
    m2, tok2 = load_clipseg(tmp_path)
    ids = tok2(["a blue square"], return_tensors="pt")
    px = torch.randn(1, 3, 352, 352)
    sd2, sd = m2.state_dict(), base.state_dict()                 # the weights: bit for bit
    assert sd2.keys() == sd.keys() and all(torch.equal(sd2[k], sd[k]) for k in sd)
    with torch.no_grad():   # two float forwards: equal up to rounding (not bit-reproducible on a busy machine)
        torch.testing.assert_close(clipseg_forward(m2, px, ids.input_ids), clipseg_forward(base, px, ids.input_ids),
                                   rtol=0, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_clipseg(tmp_path.parent if not (tmp_path.parent / "config.json").exists() else tmp_path / "x")
