#!/usr/bin/env bash
# One accelerator check, under 8 minutes on a machine with a GPU; writes its numbers to a folder.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # on a GPU machine (jax with CUDA)
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]  # on CPU, tiny sizes: checks the script
#
# Stages (each under its own time limit, so that one slow stage cannot eat the others):
#   1. the machine: nvidia-smi, jax's devices;
#   2. the 4th-order training step: data only, mollifier (FFT and direct) and the competent
#      nested forward-mode autodiff baseline, float32 and float64, at 128^2 and 256^2
#      (benchmarks/fourth_order_step.py; ratios in its tables);
#   3. the largest grid that trains and batch throughput (benchmarks/scale.py: XLA memory plan
#      for growing 2-D/3-D grids in a 100 GiB budget, steps run below 20 GiB; fit loop vs
#      fit_batch problems per second);
#   4. the FFT biharmonic against a minimal spectral one (benchmarks/fft_biharmonic.py);
#   5. the accelerator-relevant tests: the FFT path, sharding/halo exchange, compile counts,
#      the propagator (pytest, no xdist).
# Every stage's output goes to OUT_DIR/<stage>.log (and .json/.md where the script writes
# them); OUT_DIR/summary.txt lists each stage's exit status and seconds. Record the numbers
# in docs/benchmarks.md whenever this runs on a GPU.
set -u

DRY=0
if [ "${1:-}" = "--dry-run" ]; then
    DRY=1
    shift
fi
OUT="${1:-gpu_check_out}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

if [ "$DRY" = 1 ]; then
    export JAX_PLATFORMS=cpu
    SIZES="16"; ROUNDS=1; SCALE_ARGS="--quick --batches 1 4 --steps 5 --budget-gb 0.5 --run-gb 0.1"
    BIH_ARGS="--quick"; STEP=300; SCALE=300; TESTS=300
else
    # time limits that add up to 460 s (under 8 minutes with the start-up)
    SIZES="128 256"; ROUNDS=5; SCALE_ARGS="--budget-gb 100 --run-gb 20 --batches 1 16 64 256"
    BIH_ARGS="--n 1024"; STEP=80; SCALE=110; TESTS=120
fi

stage() {  # stage NAME LIMIT_SECONDS COMMAND...
    local name="$1" limit="$2"
    shift 2
    local start end rc
    start=$(date +%s)
    echo "== $name: $*" | tee "$OUT/$name.log"
    timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
    rc=$?
    end=$(date +%s)
    printf '%-24s exit %-4s %5ss\n' "$name" "$rc" "$((end - start))" | tee -a "$SUMMARY"
}

stage machine 30 bash -c "nvidia-smi || echo 'no nvidia-smi'; $PY -c 'import jax; print(jax.__version__, jax.devices())'"
# shellcheck disable=SC2086
stage fourth_order_f32 "$STEP" "$PY" benchmarks/fourth_order_step.py --dtype float32 \
    --sizes $SIZES --rounds "$ROUNDS" --budget 0.5 \
    --methods mollifier-fft mollifier-direct "autodiff (fwd, interior)" \
    --json "$OUT/fourth_order_f32.json" --markdown "$OUT/fourth_order_f32.md"
# shellcheck disable=SC2086
stage fourth_order_f64 "$STEP" "$PY" benchmarks/fourth_order_step.py --dtype float64 \
    --sizes $SIZES --rounds "$ROUNDS" --budget 0.5 \
    --methods mollifier-fft mollifier-direct "autodiff (fwd, interior)" \
    --json "$OUT/fourth_order_f64.json" --markdown "$OUT/fourth_order_f64.md"
# shellcheck disable=SC2086
stage scale "$SCALE" "$PY" benchmarks/scale.py $SCALE_ARGS --json "$OUT/scale.json"
# shellcheck disable=SC2086
stage fft_biharmonic 40 "$PY" benchmarks/fft_biharmonic.py $BIH_ARGS
stage tests "$TESTS" "$PY" -m pytest -q -p no:cacheprovider -n 0 \
    tests/test_combination.py tests/test_compiles.py tests/solver/test_propagator.py \
    tests/solver/test_sharding.py

echo "numbers in $OUT (summary: $SUMMARY)"
