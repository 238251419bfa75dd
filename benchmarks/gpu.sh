#!/usr/bin/env bash
# Mixed-precision benchmark on one GPU, sized for an H200 SXM: about 6.5 minutes, never more than 8.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default: benchmarks/results/amp_h200
#
# Runs from a source checkout without installing it (PYTHONPATH=.) and without network access. Needs a Python
# (PYTHON, default python3) with torch, timm, transformers, lightning, torchmetrics and pyyaml; matplotlib is
# optional (without it, render the plots elsewhere: python benchmarks/amp.py --replot OUT_DIR).
#
# What runs, in this order (amp.json is rewritten after every result):
#   1. base (ViT-B/16 224 px + BERT-base), eager: 5 precisions x B in 32 64 128 256; 3 warm-up steps, then
#      5 repeats of up to 10 steps, fewer for slow cells so that each cell times about 2 s (--cell-seconds).
#   2. loss parity with 32-true: 20 steps per precision at B=32.
#   3. Lightning overhead of the default experiment's model (small) at B=32, bf16-mixed.
#   4. base under torch.compile, bf16-mixed, B in 128 64 256 32 (one static-shape compilation each).
# No cell starts after 330 s of measuring (--time-budget); a compilation started just before that still fits in
# HARD_LIMIT_S, after which whatever amp.json holds is rendered.
#
# The same script checks its own path on a CPU in a few minutes:
#   DEVICE=cpu SIZE=tiny BATCH_SIZES="2 4" COMPILE_BATCH_SIZES=2 OVERHEAD_STEPS=6 OVERHEAD_PRECISION=32-true \
#       PYTHON=.venv/bin/python bash benchmarks/gpu.sh /tmp/amp
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-benchmarks/results/amp_h200}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-base}
BATCH_SIZES=${BATCH_SIZES:-32 64 128 256}
COMPILE_BATCH_SIZES=${COMPILE_BATCH_SIZES:-128 64 256 32}
OVERHEAD_STEPS=${OVERHEAD_STEPS:-30}
OVERHEAD_PRECISION=${OVERHEAD_PRECISION:-bf16-mixed}
HARD_LIMIT_S=${HARD_LIMIT_S:-420}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

stamp() { date +%H:%M:%S; }
echo "[$(stamp)] start: $SIZE on $DEVICE; results in $OUT_DIR"
if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))' || exit 1
fi

# shellcheck disable=SC2086  # the batch-size lists are meant to split into words
timeout --signal=INT --kill-after=20 "$HARD_LIMIT_S" "$PYTHON" benchmarks/amp.py \
    --device "$DEVICE" \
    --size "$SIZE" \
    --precision 32-true tf32 bf16-mixed 16-mixed bf16-true \
    --batch-size $BATCH_SIZES \
    --warmup 3 --steps 10 --repeats 5 --cell-seconds 2 \
    --parity-steps 20 --parity-batch-size ${BATCH_SIZES%% *} \
    --overhead --overhead-size small --overhead-precision "$OVERHEAD_PRECISION" --overhead-batch-size 32 \
    --overhead-steps "$OVERHEAD_STEPS" --overhead-rounds 3 \
    --compile --compile-precision bf16-mixed --compile-batch-size $COMPILE_BATCH_SIZES \
    --time-budget 330 \
    --out "$OUT_DIR"
status=$?
if [ "$status" -ne 0 ]; then
    echo "[$(stamp)] benchmark ended with status $status; rendering what amp.json holds"
    [ -f "$OUT_DIR/amp.json" ] && "$PYTHON" benchmarks/amp.py --replot "$OUT_DIR"
fi
echo "[$(stamp)] done (status $status)"
ls -l "$OUT_DIR"
exit "$status"
