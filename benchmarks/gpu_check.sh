#!/usr/bin/env bash
# The GPU check of issue 16 (fast decoding, automatic batch size, channels-last, torch.compile): one script for a lent
# GPU (an H200), about 5 minutes, never more than 8 (each step has its own timeout). No network: models are random-init.
#
# What the device machine has: python3 with torch, torchvision, timm, pillow, numpy, jaxtyping, safetensors, regex,
# tqdm, huggingface_hub (its image). What it lacks: open_clip_torch (and its ftfy, wcwidth), polars, tyro; biobench
# itself is not installed. The script installs nothing: it runs biobench from src/ (PYTHONPATH; extraction needs no
# polars). With no open_clip it uses timm's vit_base_patch16_224 (the same ViT-B/16, timm's transform: resize 248
# bicubic, crop 224). For open_clip's ViT-B/16, as the issue names it, carry its three pure-Python wheels:
#
#   here, once, in the repository root:
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
#   then, with the `run` tool:
#     run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#   or without the wheels:
#     run(command="bash benchmarks/gpu_check.sh", timeout_s=540)
#
# Steps (output in $OUT, or ./gpu_check_out where OUT is unset):
#   1. gpu_check.py: nvjpeg vs PIL pixels, fast vs exact features, a mixed/corrupt batch, real out-of-memory back-off,
#      channels-last on a ResNet-50 (PASS/FAIL lines; gpu_check.json).
#   2. embed.py --device cuda: forward-only, PIL DataLoader, exact and fast paths on 8192 JPEGs of 500x375,
#      batch_size auto (embed_cuda.json: fast_over_forward is the issue's target, >= 0.85).
#   3. the same with --compile (embed_cuda_compile.json), on fewer images.
# Everything is also in gpu_check.log. Exit status: that of step 1 (the correctness checks).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl 2>&1 | tee -a "$LOG"
  export PYTHONPATH="$PWD/src:/tmp/gpu-check-site"
else
  export PYTHONPATH="$PWD/src"
fi

{
  echo "== $(date -u) $(nvidia-smi -L 2>/dev/null | head -1)"
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
  "$PY" -c "import biobench.embed, biobench.backbones" || echo "!! biobench's extraction modules do not import (a package missing above?)"
} 2>&1 | tee -a "$LOG"

if "$PY" -c "import open_clip" 2>/dev/null; then MODEL="open-clip:ViT-B-16"; else MODEL="timm:vit_base_patch16_224"; fi
echo "== model: $MODEL (random init)" | tee -a "$LOG"

echo "== 1. correctness checks" | tee -a "$LOG"
timeout 180 "$PY" benchmarks/gpu_check.py --model "$MODEL" 2>&1 | tee -a "$LOG" | tee "$OUT/gpu_check.txt"
status=${PIPESTATUS[0]}
tail -n 1 "$OUT/gpu_check.txt" >"$OUT/gpu_check.json"

echo "== 2. benchmark" | tee -a "$LOG"
timeout 120 "$PY" benchmarks/embed.py --device cuda --model "$MODEL" --n-images 8192 2>&1 | tee -a "$LOG" | tail -n 1 >"$OUT/embed_cuda.json"

echo "== 3. benchmark with torch.compile" | tee -a "$LOG"
timeout 150 "$PY" benchmarks/embed.py --device cuda --model "$MODEL" --n-images 4096 --compile 2>&1 | tee -a "$LOG" | tail -n 1 >"$OUT/embed_cuda_compile.json"

echo "== done $(date -u); correctness exit status $status" | tee -a "$LOG"
cat "$OUT/embed_cuda.json" "$OUT/embed_cuda_compile.json"
exit "$status"
