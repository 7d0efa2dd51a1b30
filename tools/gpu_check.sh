#!/usr/bin/env bash
# The GPU check, in one run of at most ~8 minutes (issue 13): environment, `python -m vlsm_adapter.bench` at batch 32
# with fp16 and with bf16 for every method (plus the official-path ratios), a short CUDA mixed-precision training
# through `fit` on the synthetic data, a resume of that run on CUDA, and the CUDA-only tests.
#
#   tools/gpu_check.sh              # on the GPU machine (results and logs in $OUT, default runs/gpu_check)
#   tools/gpu_check.sh --dry-run    # anywhere: CPU, tiny model, batch 2, 160 px, one step, bf16 only (checks the script)
#
# Installing: the GPU image already has torch, transformers, accelerate, safetensors, scipy, pandas, pillow and pytest.
# Missing wheels can be carried in .whl/ (installed with --no-index into /tmp/site). CLIP's BPE merges file (for the
# offline tokenizer) is looked up in .whl/ or .gpu/ (copy it there: `python -c "from vlsm_adapter.clipseg import
# find_clip_bpe; print(find_clip_bpe())"` says where it is here), else in an installed open_clip_torch.
# Carry those folders with the run (they are git-ignored: add `/.gpu/` and `/.whl/` to .git/info/exclude).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || echo "WARNING: installing .whl/ failed"
fi
for f in .whl/bpe_simple_vocab_16e6.txt.gz .gpu/bpe_simple_vocab_16e6.txt.gz; do
  [ -z "${VLSM_CLIP_BPE:-}" ] && [ -f "$f" ] && export VLSM_CLIP_BPE="$PWD/$f"
done
FAIL=0
step() {   # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, note failures, go on
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; local rc=${PIPESTATUS[0]}
  [ "$rc" -ne 0 ] && { echo "!!! $name failed (exit $rc)"; FAIL=1; }
  return 0
}
if [ $DRY = 1 ]; then
  BENCH="--device cpu --model tiny --batch 2 --steps 1 --warmup 1 --image-size 160"; PRECS="bf16"; TRAIN_PREC=bf16; DEV=cpu
else
  BENCH="--device cuda --batch 32 --steps 5 --warmup 2"; PRECS="fp16 bf16"; TRAIN_PREC=fp16; DEV=cuda
fi

step env 60 $PY - <<'EOF'
import platform, torch, transformers
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
from vlsm_adapter.clipseg import find_clip_bpe; print("BPE", find_clip_bpe())
EOF

for prec in $PRECS; do
  extra=""; [ "$prec" != "${PRECS%% *}" ] && extra="--no-gains"     # the shortcut gains once (first precision)
  lowp=bf16; [ "$prec" = bf16 ] && [ $DRY = 0 ] && lowp=fp16
  step "bench_$prec" 210 $PY -m vlsm_adapter.bench $BENCH --precision "$prec" --low-precision "$lowp" $extra --data "" \
    --out "$OUT/bench_$prec.json"
done

step train_resume 150 $PY - "$DEV" "$TRAIN_PREC" "$OUT/run" "$DRY" <<'EOF'
import sys, math, shutil
from pathlib import Path
import torch
from vlsm_adapter.train import fit, TrainConfig, SUMMARY
dev, prec, out, dry = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
shutil.rmtree(out, ignore_errors=True)
assert (dev == "cuda") == torch.cuda.is_available(), f"device {dev} but cuda available={torch.cuda.is_available()}"
kw = dict(dataset="synthetic", model="tiny-pretrained", method="dense", variant="vl", precision=prec,
          synthetic_n=16 if dry else 64, batch_size=8 if dry else 32, image_size=160 if dry else 224, progress=False, out_dir=out)
r1 = fit(TrainConfig(max_epochs=2, **kw))
print(r1.history.round(4).to_string(index=False))
(Path(out) / SUMMARY).unlink()                     # as if the run had been killed after epoch 2
r2 = fit(TrainConfig(max_epochs=3, **kw))          # resume it on the same device, up to epoch 3
print(r2.history.round(4).to_string(index=False))
h = r2.history
assert r2.resumed_from_epoch == 2, r2.resumed_from_epoch
assert len(h) == 3 and all(map(math.isfinite, h.train_loss)) and all(map(math.isfinite, h.val_loss)), h
print(f"OK: {prec} training on {dev}, resumed from epoch {r2.resumed_from_epoch}, val Dice {h.val_dice.iloc[-1]:.2f}")
EOF

step cuda_tests 120 $PY -m pytest -q -rs tests/test_metrics.py tests/test_speed.py -k "cuda or official_path or bf16"

echo "=== done $(date -u +%H:%M:%S); logs and JSON in $OUT"; ls -l "$OUT"
exit $FAIL
