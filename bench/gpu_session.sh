#!/usr/bin/env bash
# One prepared GPU session for the speed issues (4, 15): everything prints its figures and ends with JSON lines,
# logs go to $OUT (the device tool brings that folder back). Run from the repository root:
#   PYTHONPATH=. bash bench/gpu_session.sh            # stage_speed tf32 + bf16 (both students), then full_run
#   PYTHONPATH=. bash bench/gpu_session.sh --quick    # stage_speed tf32, image student only
# 1. bench/stage_speed.py at AV-MNIST size (70,000 pairs, 1x28x28 + 1x112x112, batch 512, MaskNet factor 2),
#    seconds per epoch of S1, S2, S3 (bank / recompute) and the student alone, plus S3/student interleaved;
# 2. bench/full_run.py: the whole pipeline at that size with the full preset's schedule, measured end to end
#    (20/20/20 epochs scaled to 100/100/100 unless FULL=1, which runs the 100/100/100 itself).
set -u
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG=${OUT:-gpu-logs}; mkdir -p "$LOG"
WORK=$(mktemp -d)
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 bench/stage_speed.py --n 70000 --spec-size 112 --batch-size 512 --factor 2 --epochs 3 \
  --workdir "$WORK/tf32" 2>&1 | tee "$LOG/speed_tf32_image.txt"
[ "${1:-}" = "--quick" ] && exit 0
python3 bench/stage_speed.py --features "$WORK/tf32/features.h5" --batch-size 512 --factor 2 --epochs 3 \
  -S common.precision=bf16 --workdir "$WORK/bf16" 2>&1 | tee "$LOG/speed_bf16_image.txt"
python3 bench/stage_speed.py --features "$WORK/tf32/features.h5" --batch-size 512 --factor 2 --epochs 3 \
  --student audio --workdir "$WORK/tf32a" 2>&1 | tee "$LOG/speed_tf32_audio.txt"
if [ "${FULL:-0}" = "1" ]; then
  python3 bench/full_run.py --n 70000 --spec-size 112 --synthetic --no-report --workdir "$WORK/full" \
    2>&1 | tee "$LOG/full_run.txt"
else
  python3 bench/full_run.py --n 70000 --spec-size 112 --synthetic --no-report --epochs 20 20 20 \
    --scale-to 100 100 100 --workdir "$WORK/full" 2>&1 | tee "$LOG/full_run_20.txt"
fi
