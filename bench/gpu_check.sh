#!/usr/bin/env bash
# The accelerator machine's check for issue 11 (population training), as one bounded script.
#
# Prepare here, in the project root (see ../shared/device/README.md):
#   bash ../shared/device/wheels.sh                    # optuna & co. as wheels, into .whl/
#   grep -qx '/.mnist/' .git/info/exclude || echo '/.mnist/' >> .git/info/exclude
#   mkdir -p .mnist && cp ../shared/data/mnist/*.gz .mnist/    # ../shared does not travel
# Then one device run, carry [".whl", ".mnist"], timeout_s 560:
#   bash bench/gpu_check.sh
# It writes under $OUT: population.txt (bench/population.py on cuda, K up to 1024, its last line
# the JSON figures), study.txt (a 20-trial MNIST study with the population engine and its wall
# time), extractor.txt, env.txt. Each step is bounded by `timeout`, so a hung step still leaves the others' files.
#
# On a CPU (a dry run of the python parts): DEVICE=cpu KS="1 2" STEPS=5 TRIALS=2 STUDY_STEPS=50 \
#   PYTHON=.venv/bin/python DATA_DIR=../shared/data/mnist OUT=/tmp/gpu_check bash bench/gpu_check.sh
set -uo pipefail

OUT=${OUT:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda}
DATA_DIR=${DATA_DIR:-.mnist}
KS=${KS:-"1 8 32 128 512 1024"}
STEPS=${STEPS:-200}
TRIALS=${TRIALS:-20}
STUDY_STEPS=${STUDY_STEPS:-}  # empty: the family's default budget for MNIST
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed" | tee "$OUT/env.txt"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    git log --oneline -1 2>/dev/null
} >"$OUT/env.txt" 2>&1

# 1. Throughput: single model vs the population at each K, interleaved, on the same device.
# shellcheck disable=SC2086  # KS is a list of numbers
timeout 300 "$PYTHON" bench/population.py --device "$DEVICE" --data-dir "$DATA_DIR" \
    --k $KS --steps "$STEPS" --repeats 2 >"$OUT/population.txt" 2>&1
echo "population.py exit $?" >>"$OUT/population.txt"

# 2. The MNIST feature extractor, trained once and cached under GENTUNE_HOME, outside the
# study's timed run (a one-off cost, as on any machine that has run a study before).
export GENTUNE_HOME=${GENTUNE_HOME:-$(mktemp -d)}
timeout 300 "$PYTHON" -c "
import sys, time
from gentune.data import load_dataset
from gentune.metrics.evaluator import Evaluator
t = time.perf_counter()
Evaluator(load_dataset('mnist', data_dir=sys.argv[1]), device=sys.argv[2]).prepare()
print(f'extractor ready in {time.perf_counter() - t:.1f} s')
" "$DATA_DIR" "$DEVICE" >"$OUT/extractor.txt" 2>&1

# 3. A 20-trial MNIST study with the population engine (K measured on this device).
RUNS=$(mktemp -d)
extra=()
[ -n "$STUDY_STEPS" ] && extra+=(--steps "$STUDY_STEPS")
start=$EPOCHREALTIME
timeout "${STUDY_TIMEOUT:-200}" "$PYTHON" -m gentune tune --dataset mnist --data-dir "$DATA_DIR" --population auto \
    --trials "$TRIALS" --device "$DEVICE" --runs-dir "$RUNS" --study gpu_check --no-report \
    "${extra[@]}" >"$OUT/study.txt" 2>&1
code=$?
end=$EPOCHREALTIME
echo "gentune tune exit $code, wall $(awk "BEGIN {printf \"%.1f\", $end - $start}") s" >>"$OUT/study.txt"
timeout 60 "$PYTHON" -m gentune best gpu_check --runs-dir "$RUNS" >>"$OUT/study.txt" 2>&1 || true
tail -n 3 "$OUT/population.txt" "$OUT/study.txt"
