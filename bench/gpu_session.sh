#!/usr/bin/env bash
# One prepared GPU session for the speed figures: every step prints its table, and writes its figures as JSON into
# $OUT (the device tool brings that folder back) next to its log. Run from the repository root (`python -m mstcli`
# finds the package there, installed or not):
#   bash bench/gpu_session.sh            # mst bench stages tf32 + bf16 (both students), then mst bench full-run
#   bash bench/gpu_session.sh --quick    # mst bench stages tf32, image student only
# 1. `mst bench stages` at AV-MNIST size (70,000 pairs, 1x28x28 + 1x112x112, batch 512, MaskNet factor 2),
#    seconds per epoch of S1, S2, S3 (bank / recompute) and the student alone, plus S3/student interleaved;
# 2. `mst bench full-run`: the whole pipeline at that size with the full preset's schedule, measured end to end
#    (20/20/20 epochs scaled to 100/100/100 unless FULL=1, which runs the 100/100/100 itself).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG=${OUT:-gpu-logs}; mkdir -p "$LOG"
WORK=$(mktemp -d)
MST="python3 -m mstcli"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
$MST bench stages --n 70000 --spec-size 112 --batch-size 512 --factor 2 --epochs 3 \
  --workdir "$WORK/tf32" --out "$LOG/speed_tf32_image.json" 2>&1 | tee "$LOG/speed_tf32_image.txt"
[ "${1:-}" = "--quick" ] && exit 0
$MST bench stages --features "$WORK/tf32/features.h5" --batch-size 512 --factor 2 --epochs 3 \
  -S common.precision=bf16 --workdir "$WORK/bf16" --out "$LOG/speed_bf16_image.json" \
  2>&1 | tee "$LOG/speed_bf16_image.txt"
$MST bench stages --features "$WORK/tf32/features.h5" --batch-size 512 --factor 2 --epochs 3 \
  --student audio --workdir "$WORK/tf32a" --out "$LOG/speed_tf32_audio.json" 2>&1 | tee "$LOG/speed_tf32_audio.txt"
if [ "${FULL:-0}" = "1" ]; then
  $MST bench full-run --n 70000 --spec-size 112 --synthetic --no-report --workdir "$WORK/full" \
    --out "$LOG/full_run.json" 2>&1 | tee "$LOG/full_run.txt"
else
  $MST bench full-run --n 70000 --spec-size 112 --synthetic --no-report --epochs 20 20 20 \
    --scale-to 100 100 100 --workdir "$WORK/full" --out "$LOG/full_run_20.json" 2>&1 | tee "$LOG/full_run_20.txt"
fi
