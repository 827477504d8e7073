#!/usr/bin/env bash
# Train and evaluate the shipped model zoo with the project's own code.
#   scripts/train_zoo.sh cpu  OUTDIR [DATA]   # the CPU zoo (RECIPE=fast: FastNet w32, fp32, 15 epochs x 49k images;
#                                             # RECIPE=previous: the earlier ResNet-18 w16 previews), one model after
#                                             # another, each resumable (RESUME=1) from STATE (default OUTDIR/runs)
#   scripts/train_zoo.sh gpu  OUTDIR [DATA]   # one GPU, one chunk of at most CHUNK_S seconds (default 510):
#                                             # the five trainings run at once (preset gpu12: width 32, 8 epochs,
#                                             # batch 512, PGD-10, bf16, channels-last, data on the device), then
#                                             # the finished models are evaluated at once (PGD-20, reference AutoAttack)
#   scripts/train_zoo.sh eval OUTDIR [DATA]   # evaluate the trained models in OUTDIR on the CPU, each step skipped
#                                             # when its numbers are already in the card, AutoAttack resumable
#                                             # (chunks kept in STATE/aa): clean (all 10,000) and PGD-20 (N_PGD,
#                                             # 2000), reference AutoAttack (N_AA, 1000), mCA and mAUROC (1000
#                                             # each: N_CORRUPT, N_OOD), the reference embedding (N_REF, 1000);
#                                             # with INSTALL=1, once all are evaluated, installs them in
#                                             # checkpoints/ (scripts/zoo_install.py: replaces the models there);
#                                             # with WATCH=SECONDS it runs again every SECONDS while a model is
#                                             # still untrained (exit 3), so it can run beside `cpu` from the start
#   scripts/train_zoo.sh status OUTDIR        # where the cpu and eval runs stand (scripts/zoo_status.py: epochs,
#                                             # core-hours and the pace, each metric, AutoAttack's finished chunks);
#                                             # reads files only; exit 0 when every model is trained and evaluated
# cpu: each run resumes from STATE/<method>/ when re-invoked with RESUME=1.
# gpu: always resumes; invoke it again until it exits 0 (exit 3: more chunks needed). A chunk stops the
#      trainings with SIGTERM before its deadline (state saved within a step), leaves EVAL_S seconds for
#      evaluation, and prints one status line per model. docs/GPU_RUN.md has the plan and its estimates.
# Environment: PYTHON (python3), METHODS (default: backend.train.registry.ZOO), for cpu: THREADS, RECIPE, WIDTH, EPOCHS,
#   CPU_BF16, STATE,
#   RESUME; for eval: THREADS (2, per process), AA_WORKERS (1; N: N processes share the reference AutoAttack's
#   chunks, the extra N-1 with --no-write), WATCH, INSTALL; for gpu: CHUNK_S, EVAL_S (150), PRESET (gpu12),
#   DEVICE (cuda), N_PGD (2000), N_AA (1000; 0 = no AutoAttack), STATE (OUTDIR/runs), EXTRA (more
#   backend.train flags).
#   `PRESET=smoke DEVICE=cpu ... gpu OUT synthetic` is the CPU dry run the test suite makes of this script.
set -euo pipefail
mode=${1:?cpu, eval, status or gpu}; out=${2:?output folder}; data=${3:-}
py=${PYTHON:-python3}
data_arg=(); [ -n "$data" ] && data_arg=(--data "$data")
methods=${METHODS:-$("$py" -c 'from backend.train.registry import ZOO; print(*ZOO)')}
# has METHOD KEY: OUT/METHOD's card holds a measured metrics[KEY]
has() { [ -f "$out/$1/card.json" ] && "$py" - "$out/$1/card.json" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])).get("metrics", {})
sys.exit(0 if m.get(sys.argv[2]) is not None else 1)
PY
}

if [ "$mode" = cpu ]; then
  # RECIPE=fast (default; README "Training recipe", chosen with bench/cpu_recipe.py and bench/train_throughput.py):
  #   FastNet width WIDTH (32), fp32, cosine lr after a half-epoch warm-up, PGD-2 (step 5/255) for the attacked
  #   methods; EPOCHS (default 15, the epochs of Wong et al.'s fast AT) x all 49,000 images for every method; runs
  #   resume from STATE. CPU_BF16=1 trains in bf16: 2x faster on a CPU with native bf16 (AVX512-BF16), 16x slower
  #   on one without (AVX2); one zoo keeps one precision (a resumed run refuses another). (Label smoothing, EMA and
  #   the one-cycle schedule did not help at the bench's budget: EXTRA_FAST adds such flags to every method, e.g.
  #   "--ema 0.999".)
  # RECIPE=previous: what trained the ResNet-18 width-16 previews shipped until issue 24 (5 epochs, PGD-3).
  recipe=${RECIPE:-fast}; state=${STATE:-$out/runs}
  resume=(); [ "${RESUME:-0}" = 1 ] && resume=(--resume)
  for m in $methods; do
    case $recipe in
      fast)
        # shellcheck disable=SC2206  # EXTRA_FAST is a list of flags
        bf16=(); [ "${CPU_BF16:-0}" = 1 ] && bf16=(--cpu-bf16)
        common=(--arch fastnet --width "${WIDTH:-32}" --epochs "${EPOCHS:-15}" --batch-size 128 --lr 0.1
                --schedule cosine --warmup-epochs 0.5 "${bf16[@]}" ${EXTRA_FAST:-})
        attack=(--attack-steps 2 --step-size 5/255)
        ce_opts=() ;;
      previous)
        common=(--width 16 --epochs "${EPOCHS:-5}" --batch-size 128 --schedule cosine --warmup-epochs 0.5)
        attack=(--attack-steps 3 --step-size 3/255)
        ce_opts=() ;;
      *) echo "RECIPE must be fast or previous, got '$recipe'" >&2; exit 2 ;;
    esac
    case $m in
      ce)      extra=("${ce_opts[@]}") ;;
      pgd_at)  extra=("${attack[@]}" "${ce_opts[@]}") ;;
      trades)  extra=("${attack[@]}" "${ce_opts[@]}") ;;
      supcon)  extra=(--probe-epochs 3) ;;
      rsupcon) extra=("${attack[@]}" --probe-epochs 3) ;;
      *)       extra=() ;;
    esac
    "$py" -m backend.train --method "$m" --preset short --subset 0 "${common[@]}" \
      --val-robust-n 200 --threads "${THREADS:-1}" "${extra[@]}" "${data_arg[@]}" "${resume[@]}" \
      --state-dir "$state/$m" --out "$out/$m" --events "$out/$m.events.jsonl" --no-progress
  done
  exit 0
fi
if [ "$mode" = status ]; then
  # shellcheck disable=SC2086  # methods is a list
  exec "$py" "$(dirname "$0")/zoo_status.py" "$out" --state "${STATE:-$out/runs}" --n-aa "${N_AA:-1000}" --methods $methods
fi
if [ "$mode" = eval ] && [ -n "${WATCH:-}" ]; then
  # evaluate what is trained, wait, again: until every model is evaluated (0) or a run fails (its status)
  while true; do
    rc=0; WATCH="" bash "$0" eval "$out" "$data" || rc=$?
    [ "$rc" = 3 ] || exit "$rc"
    echo "zoo eval: a model is not trained yet; again in $WATCH s"
    sleep "$WATCH"
  done
fi
if [ "$mode" = eval ]; then
  state=${STATE:-$out/runs}; n_aa=${N_AA:-1000}; threads=(--threads "${THREADS:-2}")
  all=0
  for m in $methods; do
    if [ ! -f "$out/$m/card.json" ]; then echo "zoo $m: not trained yet"; all=3; continue; fi
    ev=("$py" -m backend.eval.evaluate --checkpoint "$out/$m" "${data_arg[@]}" --seed 0 "${threads[@]}")
    has "$m" pgd20 || "${ev[@]}" --n-pgd "${N_PGD:-2000}"
    if [ "$n_aa" -gt 0 ] && ! has "$m" autoattack; then
      aa=("${ev[@]}" --autoattack --only-autoattack --n-aa "$n_aa" --aa-state "$state/aa")
      helpers=()  # AA_WORKERS=N: N-1 more processes share the chunks (backend.eval.evaluate --aa-state)
      for _ in $(seq 2 "${AA_WORKERS:-1}"); do "${aa[@]}" --no-write & helpers+=($!); done
      rc=0; "${aa[@]}" || rc=$?
      for h in "${helpers[@]}"; do wait "$h" || true; done
      [ "$rc" = 0 ] || exit "$rc"
    fi
    has "$m" mca || "${ev[@]}" --skip-standard --corruptions --ood --n-corrupt "${N_CORRUPT:-1000}" --n-ood "${N_OOD:-1000}"
    [ -f "$out/$m/reference_embedding.safetensors" ] || \
      "$py" -m backend.eval.references --checkpoint "$out/$m" --n "${N_REF:-1000}" "${data_arg[@]}" "${threads[@]}"
    echo "zoo $m: evaluated"
  done
  if [ "$all" = 0 ] && [ "${INSTALL:-0}" = 1 ]; then
    # scripts/zoo_install.py: checks every model is complete, copies it, writes its name and notes from its card
    # shellcheck disable=SC2086  # methods is a list
    "$py" "$(dirname "$0")/zoo_install.py" "$out" --methods $methods
  fi
  exit $all
fi
[ "$mode" = gpu ] || { echo "mode must be cpu, eval, status or gpu, got '$mode'" >&2; exit 2; }

chunk=${CHUNK_S:-510}; eval_s=${EVAL_S:-150}; preset=${PRESET:-gpu12}; device=${DEVICE:-cuda}
state=${STATE:-$out/runs}
start=$(date +%s); deadline=$((start + chunk))
mkdir -p "$out" "$state"
n_aa=${N_AA:-1000}
aa_arg=(); [ "$n_aa" -gt 0 ] && aa_arg=(--autoattack --n-aa "$n_aa")
evaluated() { has "$1" pgd20 && { [ "$n_aa" = 0 ] || has "$1" autoattack; }; }

# 1. every unfinished training at once; each stops (state saved) eval_s before the deadline
train_for=$((deadline - $(date +%s) - eval_s))
pids=()
for m in $methods; do
  [ -f "$out/$m/card.json" ] && continue
  if [ "$train_for" -le 10 ]; then break; fi
  # several processes share the GPU; their CPU threads share the host's cores
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-3} timeout -s TERM "$train_for" "$py" -m backend.train --method "$m" \
    --preset "$preset" --device "$device" "${data_arg[@]}" --resume --state-dir "$state/$m" ${EXTRA:-} \
    --out "$out/$m" --events "$out/$m.events.jsonl" --no-progress --save-every-min 2 \
    >> "$out/$m.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done  # 124/143: stopped for the next chunk

# 2. evaluate what finished, all at once, while the chunk has time (one cut short is redone next chunk)
left=$((deadline - $(date +%s)))
pids=()
for m in $methods; do
  [ -f "$out/$m/card.json" ] || continue
  evaluated "$m" && continue
  if [ "$left" -le 20 ]; then break; fi
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-3} timeout -s TERM "$left" "$py" -m backend.eval.evaluate --checkpoint "$out/$m" \
    "${data_arg[@]}" --device "$device" --n-pgd "${N_PGD:-2000}" "${aa_arg[@]}" --seed 0 >> "$out/$m.eval.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done

# 3. status: one line per model; exit 0 only when every model is trained and evaluated
all=0
for m in $methods; do
  if evaluated "$m"; then s="evaluated"
  elif [ -f "$out/$m/card.json" ]; then s="trained, not evaluated"; all=3
  else s="training: $(tail -n 1 "$out/$m.events.jsonl" 2>/dev/null | cut -c1-160 || true)"; all=3
  fi
  echo "zoo $m: $s"
done
echo "zoo chunk: $(( $(date +%s) - start )) s of $chunk"
exit $all
