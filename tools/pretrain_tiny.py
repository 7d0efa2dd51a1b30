#!/usr/bin/env python
"""Pretrain the tiny CLIPSeg end to end on synthetic shapes: a stand-in for CLIPSeg's own pretraining.

Produces vlsm_adapter/assets/tiny_pretrained.safetensors, which `load_clipseg("tiny-pretrained")` loads on top of the
seeded random "tiny" model. The token embedding stays frozen at its seeded random init (so it is not stored: 3.2M of
the 3.6M parameters); training prompts are p1 ("red circle"), images 224 px.

The packaged file is the best checkpoint (step 300, validation Dice 40.5) of

    .venv/bin/python tools/pretrain_tiny.py --steps 1500 --eval-every 50 --stop-after 300    # ~10 min on 2 quiet cores

What it learned, honestly: where the shapes are, not yet which one the prompt names (its Dice with the right prompt
equals its Dice with any prompt). Learning to follow the text from random weights takes far longer than a CPU
quickstart allows (CLIPSeg's own decoder training ran 20k steps at batch 64 on top of a pretrained CLIP).
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
ap.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (the schedule still spans --steps)")
ap.add_argument("--grouped", action="store_true", help="each image with all its prompts in one batch")
ap.add_argument("--absent", action="store_true", help="add a prompt per image naming a colour it lacks (empty mask)")
a = ap.parse_args()

torch.manual_seed(0)
base, tok = load_clipseg("tiny")
model = VLSMAdapter(base, "e2e")
base.clip.text_model.embeddings.token_embedding.weight.requires_grad_(False)
tr = get_dataset("synthetic", "train", n=a.n_train, prompt="p1", seed=1000, size=a.image_size)
va = get_dataset("synthetic", "val", n=96, prompt="p1", seed=1000, size=a.image_size)
va_all = get_dataset("synthetic", "val", n=96, prompt="random", seed=1000, size=a.image_size)
col = PromptCollator(tok)

class WithAbsent(torch.utils.data.Dataset):
    "Adds, per image, one record whose prompt names the colour that is NOT in the image (empty mask)."
    def __init__(self, ds):
        from vlsm_adapter.data import SHAPE_COLORS, SHAPE_KINDS
        self.ds, self.k, self.colors, self.kinds = ds, ds.shapes_per_image, list(SHAPE_COLORS), SHAPE_KINDS
        self.shapes_per_image = self.k + 1
    def __len__(self): return len(self.ds) // self.k * (self.k + 1)
    def __getitem__(self, i):
        j, t = divmod(i, self.k + 1)
        if t < self.k: return self.ds[j * self.k + t]
        it = dict(self.ds[j * self.k])
        present = {self.ds.records[j * self.k + u]["color"] for u in range(self.k)}
        absent = [c for c in self.colors if c not in present][0]
        it["prompt"] = f"{absent} {self.kinds[j % len(self.kinds)]}"
        it["mask"] = torch.zeros_like(it["mask"])
        return it
if a.absent: tr = WithAbsent(tr)
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
    # every image with all of its prompts in the same batch: the prompt-blind "all shapes" answer is then penalised
    # within each batch, which makes the network learn to read the text far sooner than random batches do
    if a.grouped:
        k = tr.shapes_per_image
        imgs = torch.randperm(len(tr) // k, generator=torch.Generator().manual_seed(step)).tolist()
        loader = DataLoader(tr, batch_size=a.batch_size - a.batch_size % k, collate_fn=col,
                            sampler=[j * k + t for j in imgs for t in range(k)])
    else:
        loader = DataLoader(tr, batch_size=a.batch_size, shuffle=True, collate_fn=col, generator=torch.Generator().manual_seed(step))
    for b in loader:
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
        if step >= min(a.steps, a.stop_after or a.steps): break
    if a.stop_after and step >= a.stop_after: break
print("best val Dice (p1)", best)
