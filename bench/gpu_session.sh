#!/usr/bin/env bash
# One prepared GPU session (issue 4): the CLI pipeline on AV-Digits on CUDA, then bench/stage_speed.py at
# AV-MNIST size with TF32 and with bf16 (and, time permitting, torch.compile). Run from the repository root
# on the GPU machine: PYTHONPATH=. bash bench/gpu_session.sh ; logs go to $OUT (or ./gpu-logs).
set -u
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG=${OUT:-gpu-logs}; mkdir -p "$LOG"
WORK=$(mktemp -d)
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

# 1. the default pipeline through the CLI on the GPU (quick preset, image student)
start=$(date +%s)
for stage in prepare train fit-masks distill eval; do
  python3 -m mstcli "$stage" -S common.run=gpu 2>&1 | tail -n 3 || exit 1
done
echo "CLI pipeline on AV-Digits (quick preset): $(( $(date +%s) - start )) s"

# 2. AV-MNIST size: 70,000 pairs, 1x28x28 + 1x112x112, batch 512, MaskNet factor 2 (the reference's)
python3 bench/stage_speed.py --n 70000 --spec-size 112 --batch-size 512 --factor 2 --epochs 3 \
  --s2-recompute --workdir "$WORK/tf32" 2>&1 | tee "$LOG/speed_tf32.txt"
python3 bench/stage_speed.py --features "$WORK/tf32/features.h5" --batch-size 512 --factor 2 --epochs 3 \
  -S common.precision=bf16 --workdir "$WORK/bf16" 2>&1 | tee "$LOG/speed_bf16.txt"
timeout 200 python3 bench/stage_speed.py --features "$WORK/tf32/features.h5" --batch-size 512 --factor 2 \
  --epochs 4 -S common.precision=bf16 -S common.compile=true --workdir "$WORK/compile" 2>&1 | tee "$LOG/speed_compile.txt"
echo "all done"
