#!/usr/bin/env python
"""Pretrain the stand-in base `tiny-pretrained`: the tiny CLIPSeg learns to segment the object a prompt names.

Writes vlsm_adapter/assets/tiny_pretrained.safetensors (the weights `load_clipseg("tiny-pretrained")` loads) and
tiny_pretrained_log.json beside it (the recipe and the curves that 01_clipseg plots). The packaged files come from

    .venv/bin/python tools/pretrain_tiny.py --out /tmp/base/tiny_pretrained.safetensors    # ~13 min, one thread
    .venv/bin/python tools/pretrain_tiny.py --init /tmp/base/tiny_pretrained.safetensors \
        --steps 1000 --lr 3e-4 --absent-weight 2                                            # ~3 min more

(seeded; one torch thread on 2 CPU cores). The second command continues stage 2 for 1,000 steps at a lower
learning rate with an extra BCE term (weight 2) on the absent-object rows, whose masks are empty: measured on the
96 held-out scenes of tests/test_standin.py, absent objects predicted empty went from 86.5 % to 93.8 %, Dice with the
right prompt from 85.7 to 86.3 and the swap score from 5.3 to 1.8. The log keeps both runs' curves (`continued_from`
holds the first run's recipe).

A miniature of how CLIPSeg got its base, in two stages:

1. *The words* (a stand-in for CLIP's text pretraining, ~15 s): the text encoder, its token embedding included,
   learns to tell the prompts apart: a linear read-out of the conditional embedding must give the colour and the
   kind each prompt names (or "none" when it names no colour / no kind).
2. *Referring segmentation* (CLIPSeg's own training): scenes of two or three coloured shapes (`ReferringScenes`),
   every image in a batch with all of its prompts (each object named by colour, kind or both, plus one absent
   object whose mask is empty), Dice+BCE on the masks. The text encoder stays frozen here, as CLIP's does in
   CLIPSeg; measured: when it trains too, the conditional embedding collapses to a constant within a few hundred
   steps and the model never leaves the prompt-blind plateau (Dice with the right prompt = Dice with another
   object's prompt, as DESIGN notes for plain training). The vision encoder and decoder learn from scratch, with one
   auxiliary loss: a linear head on the last extracted vision layer predicts each patch's colour and kind (the
   head is thrown away). Without it the grounding stalls (right 55.7 / swap 40.0 Dice at step 1000); with it the
   swap score falls below 8 by step 1000. 30 % of the scenes are shown in grey (objects then named by kind only),
   so that the base knows shapes apart from their colour. Measured, 4,000 steps each: colour scenes only gave
   grounding Dice 94.6 / swap 0.01 / absent objects empty 99 %, but dense VL adapters on the target domain
   (synthetic-us, lr 3e-3, 768 records) then reached validation Dice 31.4 after 8 epochs; with 30 % grey scenes,
   87.2 / 3.3 / 84 % and 55.7 after 8 epochs. The packaged base is the second: it is the one adapters can move.
"""
import argparse, json, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vlsm_adapter.clipseg import (load_clipseg, ReferringScenes, referring_prompt, grounding_scores, text_embed_inputs,
                                  encoder_layer_forward, conditional_embedding, decode, tiny_pretrained_path,
                                  TOKEN_EMBEDDING, STANDIN_SIZE, _load_tiny_pretrained)
from vlsm_adapter.model import VLSMAdapter
from vlsm_adapter.data import SHAPE_COLORS, SHAPE_KINDS
from vlsm_adapter.metrics import DiceBCELoss
from vlsm_adapter.utils import atomic_path, atomic_write_text

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--steps", type=int, default=4000, help="referring-segmentation steps")
ap.add_argument("--text-steps", type=int, default=300)
ap.add_argument("--images", type=int, default=8, help="images per batch (each with all its prompts: ~30 rows)")
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--aux", type=float, default=1.0, help="weight of the per-patch colour/kind loss")
ap.add_argument("--n-train", type=int, default=2000)
ap.add_argument("--n-val", type=int, default=128)
ap.add_argument("--size", type=int, default=STANDIN_SIZE)
ap.add_argument("--eval-every", type=int, default=250)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--grey", type=float, default=0.3, help="share of scenes shown in grey (objects named by kind only)")
ap.add_argument("--absent-weight", type=float, default=0.0,
                help="extra BCE weight on the absent-object rows (their masks are empty)")
ap.add_argument("--init", default=None, help="continue from this asset (e.g. the packaged one; stage 1 is skipped "
                "and the curves of its log, beside it, are kept)")
ap.add_argument("--out", default=str(tiny_pretrained_path()))
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
COLORS = list(SHAPE_COLORS)

t_start = time.time()
base, tok = load_clipseg("tiny")
if a.init is not None: _load_tiny_pretrained(base, a.init)
model = VLSMAdapter(base, "e2e")
emb = base.clip.text_model.embeddings.token_embedding.weight
emb0 = emb.detach().clone()
text_params = list(base.clip.text_model.parameters()) + list(base.clip.text_projection.parameters())

def text_cond(ids, am):
    t, mask = text_embed_inputs(base, ids, am)
    for layer in base.clip.text_model.encoder.layers: t = encoder_layer_forward(layer, t, mask, is_causal=True)
    return conditional_embedding(base, t, ids)

# ---- stage 1: the words ------------------------------------------------------------------------------------------
heads = torch.nn.ModuleList([torch.nn.Linear(base.config.projection_dim, len(COLORS) + 1),
                             torch.nn.Linear(base.config.projection_dim, len(SHAPE_KINDS) + 1)])
opt = torch.optim.AdamW([dict(params=[p for p in text_params if p is not emb] + list(heads.parameters()), weight_decay=1e-3),
                         dict(params=[emb], weight_decay=0.0)], lr=1e-3)   # no decay: unused token rows stay as they were
rng, log = np.random.default_rng(a.seed), dict(recipe=vars(a), text=[], pretrain=[])
if a.init is not None:     # a continuation: stage 1 was done by the run that made `init`; keep its curves and recipe
    prev = json.loads(Path(a.init).with_name(Path(a.init).stem + "_log.json").read_text())
    log.update(text=prev["text"], pretrain=prev["pretrain"], continued_from=prev["recipe"],
               continued_at_step=prev["pretrain"][-1]["step"])
    emb0 = load_clipseg("tiny")[0].clip.text_model.embeddings.token_embedding.weight.detach().clone()
for step in range(a.text_steps if a.init is None else 0):
    P, yc, yk = [], [], []
    for _ in range(128):
        c, k, how = COLORS[rng.integers(4)], SHAPE_KINDS[rng.integers(3)], ("both", "colour", "kind")[rng.integers(3)]
        P.append(referring_prompt(how, c if how != "kind" else None, k if how != "colour" else None, rng))
        yc.append(COLORS.index(c) if how != "kind" else len(COLORS)); yk.append(SHAPE_KINDS.index(k) if how != "colour" else len(SHAPE_KINDS))
    enc = tok(P, padding=True, return_tensors="pt")
    cond = text_cond(enc["input_ids"], enc["attention_mask"])
    loss = F.cross_entropy(heads[0](cond), torch.tensor(yc)) + F.cross_entropy(heads[1](cond), torch.tensor(yk))
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 50 == 0 or step == a.text_steps - 1:
        log["text"].append(dict(step=step, loss=loss.item())); print("words", log["text"][-1], flush=True)

# ---- stage 2: referring segmentation, text encoder frozen ----------------------------------------------------------
for p in text_params: p.requires_grad_(False)
train = ReferringScenes(a.n_train, "train", a.size, seed=7, grey=a.grey)
val = ReferringScenes(a.n_val, "val", a.size, seed=7)
print(f"scenes rendered in {time.time() - t_start:.0f}s", flush=True)
aux = torch.nn.Linear(base.config.vision_config.hidden_size, len(COLORS) + 1 + len(SHAPE_KINDS) + 1)
params = [p for p in model.parameters() if p.requires_grad] + list(aux.parameters())
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-3)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.05)
loss_fn, patch = DiceBCELoss(), base.config.vision_config.patch_size
colour_of = torch.full((len(train), 4), len(COLORS)); kind_of = torch.full((len(train), 4), len(SHAPE_KINDS))
for j, lay in enumerate(train.layouts):
    for t, sh in enumerate(lay):
        colour_of[j, t + 1] = COLORS.index(sh["color"]) if sh["color"] else len(COLORS); kind_of[j, t + 1] = SHAPE_KINDS.index(sh["kind"])

def patch_targets(images):
    "Per patch: the colour and kind of the object covering > 40 % of it (else 'none')."
    lab = train.labels[images].long()
    frac = F.avg_pool2d(F.one_hot(lab, 4).permute(0, 3, 1, 2).float(), patch).flatten(2)    # (B, 4, patches)
    obj = torch.where(frac.max(1).values > 0.4, frac.argmax(1), torch.zeros_like(frac.argmax(1)))
    return colour_of[images[:, None], obj], kind_of[images[:, None], obj]

best, t0 = None, time.time()
step0 = step = 0 if a.init is None else log["continued_at_step"]
end = step0 + a.steps
while step < end:
    order = rng.permutation(len(train))
    for s in range(0, len(order) - a.images + 1, a.images):
        b = train.batch(order[s:s + a.images], rng, tok)
        acts = model._vision(b["pixel_values"])
        with torch.no_grad():
            t, _ = model._text(b["input_ids"], b["attention_mask"])
            cond = conditional_embedding(base, t, b["input_ids"])
        logits = decode(base, acts, cond)
        loss = loss_fn(logits, b["mask"])
        if a.absent_weight:
            gone = b["target"] < 0
            loss = loss + a.absent_weight * F.binary_cross_entropy_with_logits(logits[gone], torch.zeros_like(logits[gone]))
        yc, yk = patch_targets(b["image"])
        z = aux(acts[-1][:, 1:])
        loss = loss + a.aux * (F.cross_entropy(z[..., :len(COLORS) + 1].flatten(0, 1), yc.flatten())
                               + F.cross_entropy(z[..., len(COLORS) + 1:].flatten(0, 1), yk.flatten()))
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 0.5); opt.step(); sched.step(); step += 1
        if step % a.eval_every == 0 or step == end:
            g = grounding_scores(base, tok, val, seed=123)
            log["pretrain"].append(dict(step=step, loss=loss.item(), time_s=time.time() - t0, **g))
            print(log["pretrain"][-1], flush=True)
        if step >= end: break

# ---- the asset: every weight but the token embedding, whose changed rows are stored alone ----------------------
rows = ((emb.detach() != emb0).any(1)).nonzero().flatten()
state = {n: p.detach().contiguous() for n, p in base.named_parameters() if n != TOKEN_EMBEDDING}
state[TOKEN_EMBEDDING + ".rows"] = rows.contiguous()
state[TOKEN_EMBEDDING + ".values"] = emb.detach()[rows].contiguous()
log["final"] = log["pretrain"][-1]
log["total_time_s"] = time.time() - t_start
out = Path(a.out)
with atomic_path(out) as tmp: save_file(state, str(tmp), metadata={"recipe": json.dumps(vars(a))})
atomic_write_text(out.with_name(out.stem + "_log.json"), json.dumps(log, indent=1))
print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB; {len(rows)} token rows changed) in {log['total_time_s'] / 60:.1f} min")
