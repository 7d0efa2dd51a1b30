#!/usr/bin/env python
"""Pretrain the tiny CLIPSeg end to end on synthetic shapes: the stand-in for CLIPSeg's open-domain pretraining.

Produces vlsm_adapter/assets/tiny_pretrained.safetensors, which `load_clipseg("tiny-pretrained")` loads on top of the
seeded random "tiny" model. The token embedding stays frozen at its seeded random init (so it is not stored: 3.2M of
the 3.6M parameters), and only prompt p1 ("red circle") is used, so that adapters trained afterwards on all the
phrasings p1..p5 have a language shift to adapt to.

    .venv/bin/python tools/pretrain_tiny.py --steps 1500      # ~30-60 min on 2 CPU cores
"""
import argparse, json, time
from pathlib import Path
import torch
from torch.utils.data import DataLoader
from safetensors.torch import save_file

from vlsm_adapter.clipseg import load_clipseg
from vlsm_adapter.model import VLSMAdapter
from vlsm_adapter.data import get_dataset, PromptCollator
from vlsm_adapter.metrics import DiceBCELoss, batch_dice

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=1500)
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--n-train", type=int, default=3072)
ap.add_argument("--eval-every", type=int, default=100)
ap.add_argument("--image-size", type=int, default=224)
ap.add_argument("--out", default="vlsm_adapter/assets/tiny_pretrained.safetensors")
a = ap.parse_args()

torch.manual_seed(0)
base, tok = load_clipseg("tiny")
model = VLSMAdapter(base, "e2e")
base.clip.text_model.embeddings.token_embedding.weight.requires_grad_(False)
tr = get_dataset("synthetic", "train", n=a.n_train, prompt="p1", seed=1000, size=a.image_size)
va = get_dataset("synthetic", "val", n=96, prompt="p1", seed=1000, size=a.image_size)
va_all = get_dataset("synthetic", "val", n=96, prompt="random", seed=1000, size=a.image_size)
col = PromptCollator(tok)
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-3)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.05)
loss_fn = DiceBCELoss()

def val(ds):
    model.eval(); d = []
    with torch.no_grad():
        for b in DataLoader(ds, batch_size=32, collate_fn=col):
            d.append(batch_dice(model(b["pixel_values"], b["input_ids"], b["attention_mask"]), b["mask"]))
    model.train(); return torch.cat(d).mean().item()

step, best, t0, log = 0, -1.0, time.time(), []
while step < a.steps:
    for b in DataLoader(tr, batch_size=a.batch_size, shuffle=True, collate_fn=col, generator=torch.Generator().manual_seed(step)):
        loss = loss_fn(model(b["pixel_values"], b["input_ids"], b["attention_mask"]), b["mask"])
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 0.5); opt.step(); sched.step(); step += 1
        if step % a.eval_every == 0 or step == a.steps:
            d1, dall = val(va), val(va_all)
            log.append(dict(step=step, loss=loss.item(), val_dice_p1=d1, val_dice_all_prompts=dall, time_s=time.time() - t0))
            print(log[-1], flush=True)
            if d1 > best:
                best = d1
                state = {n: p.detach().to(torch.float16).contiguous() for n, p in base.named_parameters()
                         if n != "clip.text_model.embeddings.token_embedding.weight"}
                Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                save_file(state, a.out, metadata={"log": json.dumps(log), "recipe": json.dumps(vars(a))})
        if step >= a.steps: break
print("best val Dice (p1)", best)
