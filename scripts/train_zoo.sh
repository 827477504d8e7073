#!/usr/bin/env bash
# Train and evaluate the shipped model zoo with the project's own code.
#   scripts/train_zoo.sh cpu  OUTDIR [DATA]   # CPU preview (width 16, all 49k images x 5 epochs, PGD-3, cosine;
#                                             # about 3 h of one core for all five, rsupcon half of it)
#   scripts/train_zoo.sh gpu  OUTDIR [DATA]   # GPU (width 32, PGD-10, 30 epochs; about 30 min on one H100)
# Each run resumes from runs/<id>/ when re-invoked with the same arguments (RESUME=1), so a long GPU run
# can be split into chunks of under ten minutes. Evaluation is separate: python -m backend.evaluate writes
# the test metrics into each card (see docs/GPU_RUN.md). The interpreter is python3 (PYTHON overrides it).
set -euo pipefail
mode=${1:?cpu or gpu}; out=${2:?output folder}; data=${3:-}
data_arg=(); [ -n "$data" ] && data_arg=(--data "$data")
resume=(); [ "${RESUME:-0}" = 1 ] && resume=(--resume)
methods=${METHODS:-"rsupcon pgd_at ce trades supcon"}
for m in $methods; do
  if [ "$mode" = cpu ]; then
    # Same budget for every method: all 49,000 training images, 5 epochs, cosine lr with a half-epoch warm-up.
    case $m in
      ce)      extra=() ;;
      pgd_at)  extra=(--attack-steps 3 --step-size 3/255) ;;
      trades)  extra=(--attack-steps 3 --step-size 3/255) ;;
      supcon)  extra=(--probe-epochs 3) ;;
      rsupcon) extra=(--attack-steps 3 --step-size 3/255 --probe-epochs 3) ;;
    esac
    "${PYTHON:-python3}" -m backend.train --method "$m" --preset short --subset 0 --epochs ${EPOCHS:-5} --width 16 --batch-size 128 \
      --schedule cosine --warmup-epochs 0.5 \
      --val-robust-n 200 --threads "${THREADS:-1}" "${extra[@]}" "${data_arg[@]}" "${resume[@]}" \
      --out "$out/$m" --events "$out/$m.events.jsonl" --no-progress
  else
    "${PYTHON:-python3}" -m backend.train --method "$m" --preset full --device cuda "${data_arg[@]}" "${resume[@]}" \
      --out "$out/$m" --events "$out/$m.events.jsonl" --no-progress
  fi
done
