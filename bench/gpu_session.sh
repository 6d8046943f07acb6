#!/usr/bin/env bash
# The prepared GPU session of issue 4: bench/stage_speed.py at AV-MNIST size (70,000 pairs, 1x28x28 +
# 1x112x112, batch 512, the reference's MaskNet factor 2), TF32 then bf16. Pass --cli to first run the default
# pipeline through the CLI on CUDA. Run from the repository root: PYTHONPATH=. bash bench/gpu_session.sh
set -u
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG=${OUT:-gpu-logs}; mkdir -p "$LOG"
WORK=$(mktemp -d)
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ "${1:-}" = "--cli" ]; then
  start=$(date +%s)
  for stage in prepare train fit-masks distill eval; do
    python3 -m mstcli "$stage" -S common.run=gpu 2>&1 | tail -n 3 || exit 1
  done
  echo "CLI pipeline on AV-Digits (quick preset): $(( $(date +%s) - start )) s"
fi
python3 bench/stage_speed.py --n 70000 --spec-size 112 --batch-size 512 --factor 2 --epochs 3 \
  --workdir "$WORK/tf32" 2>&1 | tee "$LOG/speed_tf32.txt"
python3 bench/stage_speed.py --features "$WORK/tf32/features.h5" --batch-size 512 --factor 2 --epochs 3 \
  -S common.precision=bf16 --workdir "$WORK/bf16" 2>&1 | tee "$LOG/speed_bf16.txt"
