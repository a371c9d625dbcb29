#!/usr/bin/env bash
# Tuned DCGAN against the tuned MLP GAN on MNIST, at equal training time (docs/families.md).
#
#   bash bench/gans_equal_time.sh [SECONDS_PER_TRIAL=120] [TRIALS=12] [RUNS_DIR=runs/gans-equal-time]
#
# 1. Both families are tuned side by side (one process and one torch thread each), TRIALS TPE
#    trials each, every trial training for SECONDS_PER_TRIAL of wall-clock time (--trial-seconds),
#    scored at the end by FID at the study's N (10000 on MNIST).
# 2. The study that finished first (its detectors stop more trials early) resumes with more
#    trials until it has used as much wall-clock time as the other, so both get equal training
#    time per trial and equal time in all.
# Each study prints its best configuration and metrics; the last lines compare the two.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TRIAL=${1:-120}
TRIALS=${2:-12}
RUNS=${3:-runs/gans-equal-time}
DATA=${MNIST_DIR:-../shared/data/mnist}
GENTUNE=${GENTUNE:-.venv/bin/gentune}
export OMP_NUM_THREADS=1
mkdir -p "$RUNS"

tune() {  # family, trials, extra args...
  local m=$1 n=$2; shift 2
  "$GENTUNE" tune --model "$m" --dataset mnist --data-dir "$DATA" --trials "$n" \
    --trial-seconds "$SECONDS_PER_TRIAL" --steps 1000000 --evals 0 \
    --study "eq$SECONDS_PER_TRIAL-$m" --runs-dir "$RUNS" --no-report "$@"
}

declare -A took
for m in gan-mlp dcgan; do
  ( start=$(date +%s); tune "$m" "$TRIALS" > "$RUNS/$m.log" 2>&1
    echo $(( $(date +%s) - start )) > "$RUNS/$m.seconds" ) &
done
wait
for m in gan-mlp dcgan; do took[$m]=$(cat "$RUNS/$m.seconds"); done
echo "first phase: gan-mlp ${took[gan-mlp]} s, dcgan ${took[dcgan]} s"

short=gan-mlp; long=dcgan
[ "${took[gan-mlp]}" -gt "${took[dcgan]}" ] && { short=dcgan; long=gan-mlp; }
left=$(( took[$long] - took[$short] ))
if [ "$left" -gt "$SECONDS_PER_TRIAL" ]; then
  echo "$short continues for $left s more (more trials) to match $long's time"
  tune "$short" 1000 --timeout "$left" > "$RUNS/$short-more.log" 2>&1
fi
for m in gan-mlp dcgan; do
  logs=("$RUNS/$m.log"); [ -f "$RUNS/$m-more.log" ] && logs+=("$RUNS/$m-more.log")
  echo "$m: $(grep -h 'complete:' "${logs[@]}" | tail -n 1 | sed 's/.*best/best/; s/, elapsed.*//')"
done
