"""Fidelity to the official code, logit for logit.

Each placement's forward is written here once more as a plain formula following the structure of the authors'
`src/models/clipseg_adapter.py` (naamiinepal/vlsm-adapter): `CLIPSegShallowAdapter.forward`,
`CLIPSegDenseAdapter.vision_forward` / `text_forward` / `forward`, and, for the baselines, the stock CLIPSeg forward.
The formula calls only Hugging Face CLIPSeg sub-modules (embeddings, pre-LayerNorm, the encoder layers' layer norms
and MLPs, the final LayerNorm, the text projection, the decoder), computes multi-head attention by hand from each
layer's q/k/v/out projections, and applies every adapter from its own tensors with `F.linear` / `F.relu`. It never
calls into `vlsm_adapter`'s forward helpers (`clipseg_forward`, `encoder_layer_forward`, `conditional_embedding`,
`eot_index`, `decode`, ...), so a misplaced adapter, a wrong order or a wrong end-of-text position shows up as a
difference in the logits.

The base is a random tiny CLIPSeg and every adapter is re-initialised with noticeable random weights (not the
identity), so that each adapter changes the logits far beyond the tolerance.
"""
import copy, math, warnings
import pytest, torch
import torch.nn.functional as F

from vlsm_adapter.clipseg import load_clipseg
from vlsm_adapter.model import VLSMAdapter

PLACEMENTS = [("shallow", "v"), ("shallow", "vl"), ("shallow", "vlc"),
              ("dense", "v"), ("dense", "vl"), ("dense", "vlc"), ("e2e", None), ("decoder", None)]
# max |Δ logit| allowed, relative to the largest |logit| of the formula: float32 (what trains) and float64 (where
# the two computations agree to ~1e-15, so any real difference stands out by many orders of magnitude)
REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


# ---- the formula -------------------------------------------------------------------------------------------------
def adapter_formula(ad, x):
    "The official `Adapter.forward`: x + relu(fc2(relu(fc1(x)))), from our adapter's own tensors."
    return x + F.relu(F.linear(F.relu(F.linear(x, ad.down.weight, ad.down.bias)), ad.up.weight, ad.up.bias))


def attention_formula(sa, x, allowed=None):
    "Multi-head scaled dot-product attention from the layer's q/k/v/out projections; `allowed` (B,1,T,T) bool mask."
    B, T, D = x.shape
    H = sa.num_heads
    split = lambda lin: F.linear(x, lin.weight, lin.bias).view(B, T, H, D // H).transpose(1, 2)
    q, k, v = split(sa.q_proj), split(sa.k_proj), split(sa.v_proj)
    w = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    if allowed is not None: w = w.masked_fill(~allowed, float("-inf"))
    a = (w.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
    return F.linear(a, sa.out_proj.weight, sa.out_proj.bias)


def block_formula(layer, h, allowed=None, attn_ad=None, mlp_ad=None):
    "One CLIP encoder block; dense adapters on the attention and MLP outputs before each residual addition."
    a = attention_formula(layer.self_attn, layer.layer_norm1(h), allowed)
    if attn_ad is not None: a = adapter_formula(attn_ad, a)
    h = h + a
    m = layer.mlp(layer.layer_norm2(h))
    if mlp_ad is not None: m = adapter_formula(mlp_ad, m)
    return h + m


def official_logits(model: VLSMAdapter, px, input_ids, attention_mask, order: str = "official"):
    """Logits (B, H, W) of `model`'s placement written from the official code's structure.
    `order="add_then_cond"` applies the shallow text adapters before the conditioning adapter (the old, wrong order)."""
    base, method = model.clipseg, model.method
    ex = list(base.config.extract_layers)
    B = px.shape[0]
    rows = torch.arange(B)
    dense_v = method == "dense" and model.vision_adapters is not None
    dense_l = method == "dense" and model.text_adapters is not None
    # vision: embeddings + pre-LayerNorm, then every layer, hidden_states[0] = the embeddings
    vm = base.clip.vision_model
    h = vm.pre_layrnorm(vm.embeddings(px, interpolate_pos_encoding=True))
    vision_states = [h]
    for i, layer in enumerate(vm.encoder.layers):
        ad = model.vision_adapters[i] if dense_v and i < len(model.vision_adapters) else None
        h = block_formula(layer, h, None, ad and ad["attn"], ad and ad["mlp"])
        vision_states.append(h)
    acts = [vision_states[i + 1] for i in ex]
    if method == "shallow" and model.vision_adapters is not None:
        acts = [adapter_formula(ad, a) for ad, a in zip(model.vision_adapters, acts)]
    # text: embeddings, causal + padding mask, every layer
    tm = base.clip.text_model
    T = input_ids.shape[1]
    t = tm.embeddings(input_ids=input_ids)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None] & attention_mask.bool()[:, None, None, :]
    text_states = [t]
    for i, layer in enumerate(tm.encoder.layers):
        ad = model.text_adapters[i] if dense_l and i < len(model.text_adapters) else None
        t = block_formula(layer, t, allowed, ad and ad["attn"], ad and ad["mlp"])
        text_states.append(t)
    eot = input_ids.to(torch.int).argmax(-1)        # the official rule: the end-of-text token has the highest id
    cond = base.clip.text_projection(tm.final_layer_norm(t)[rows, eot])
    shallow_l = method == "shallow" and model.text_adapters is not None
    if model.cond_adapter is not None and order == "official": cond = adapter_formula(model.cond_adapter, cond)
    if shallow_l:
        for i, ad in zip(ex, model.text_adapters):
            h_eot = text_states[i + 1][rows, eot]
            cond = cond + (adapter_formula(ad, h_eot) if model.text_shallow == "official"
                           else adapter_formula(ad, h_eot) - h_eot)
    if model.cond_adapter is not None and order == "add_then_cond": cond = adapter_formula(model.cond_adapter, cond)
    logits = base.decoder(acts, cond).logits
    return logits.view(B, *logits.shape[-2:])


# ---- fixtures ----------------------------------------------------------------------------------------------------
def randomise_adapters(model: VLSMAdapter, seed: int = 0):
    "Noticeable random adapter weights: normal(0, 1/sqrt(fan_in)) matrices, normal(0, 0.1) biases."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.startswith("clipseg") or not hasattr(mod, "down"): continue
            for lin in (mod.down, mod.up):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / math.sqrt(lin.in_features))
                lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=g))
    return model


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["float32", "float64"])
def tiny(request):
    base, tok = load_clipseg("tiny", seed=3)
    base.to(request.param)
    g = torch.Generator().manual_seed(1)
    px = torch.randn(2, 3, 352, 352, generator=g).to(request.param)
    ids = tok(["a pink polyp in a colonoscopy image", "skin lesion"], padding=True, return_tensors="pt")
    # the official argmax(input_ids) and HF's first-eos_token_id rule pick the same positions here
    first_eos = (ids.input_ids == tok.eos_token_id).int().argmax(-1)
    assert torch.equal(ids.input_ids.to(torch.int).argmax(-1), first_eos)
    assert ids.attention_mask[1].sum() < ids.attention_mask[0].sum()      # padding is exercised
    return base, px, ids


def build(base, method, variant, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = VLSMAdapter(base, method, variant, **kw).to(base.dtype)
    return randomise_adapters(m).eval()


def gap(a, b, scale):
    return ((a - b).abs().max() / scale).item()


# ---- the tests ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,variant", PLACEMENTS)
def test_placement_matches_official_formula(tiny, method, variant):
    base, px, ids = tiny
    tol = REL_TOL[px.dtype]
    m = build(base, method, variant)
    with torch.no_grad():
        ours = m(px, ids.input_ids, ids.attention_mask)
        expect = official_logits(m, px, ids.input_ids, ids.attention_mask)
        scale = expect.abs().max()
        err = gap(ours, expect, scale)
        assert err <= tol, f"{method} {variant}: max |Δ logit| = {err:.2e} × {scale:.3g} (tolerance {tol:g})"
        # each group of adapters moves the logits far beyond the tolerance, so a mistake in any of them would show
        for group in ("vision_adapters", "text_adapters", "cond_adapter"):
            mod = getattr(m, group)
            if mod is None: continue
            setattr(m, group, None)
            try: effect = gap(official_logits(m, px, ids.input_ids, ids.attention_mask), expect, scale)
            finally: setattr(m, group, mod)
            assert effect > 100 * tol, f"{method} {variant}: {group} change the logits by only {effect:.1e}"


def test_shallow_delta_option_matches_its_formula(tiny):
    base, px, ids = tiny
    tol = REL_TOL[px.dtype]
    m = build(base, "shallow", "vlc", text_shallow="delta")
    with torch.no_grad():
        expect = official_logits(m, px, ids.input_ids, ids.attention_mask)
        assert gap(m(px, ids.input_ids, ids.attention_mask), expect, expect.abs().max()) <= tol


def test_cached_features_path_matches_formula(tiny):
    base, px, ids = tiny
    tol = REL_TOL[px.dtype]
    m = build(base, "shallow", "vlc")
    with torch.no_grad():
        out = m.forward_features(m.encode_image(px), m.encode_text(ids.input_ids, ids.attention_mask))
        expect = official_logits(m, px, ids.input_ids, ids.attention_mask)
        assert gap(out, expect, expect.abs().max()) <= tol


def test_formula_catches_wrong_vlc_order(tiny):
    "The old order (shallow text adapters added before the conditioning adapter) is far outside the tolerance."
    base, px, ids = tiny
    tol = REL_TOL[px.dtype]
    m = build(base, "shallow", "vlc")
    with torch.no_grad():
        ours = m(px, ids.input_ids, ids.attention_mask)
        expect = official_logits(m, px, ids.input_ids, ids.attention_mask)
        wrong = official_logits(m, px, ids.input_ids, ids.attention_mask, order="add_then_cond")
        scale = expect.abs().max()
        assert gap(ours, expect, scale) <= tol
        assert gap(wrong, expect, scale) > 100 * tol, gap(wrong, expect, scale)
        assert gap(ours, wrong, scale) > 100 * tol


def test_formula_catches_swapped_dense_adapters(tiny):
    "Swapping one block's attention and MLP adapters moves the logits far outside the tolerance."
    base, px, ids = tiny
    tol = REL_TOL[px.dtype]
    m = build(base, "dense", "vl")
    swapped = copy.deepcopy(m)
    blk = swapped.text_adapters[0]
    blk["attn"], blk["mlp"] = blk["mlp"], blk["attn"]
    with torch.no_grad():
        expect = official_logits(m, px, ids.input_ids, ids.attention_mask)
        assert gap(swapped(px, ids.input_ids, ids.attention_mask), expect, expect.abs().max()) > 100 * tol
