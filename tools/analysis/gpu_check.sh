#!/usr/bin/env bash
# The GPU rows the README lacks, on a CUDA machine, in under 8 minutes:
#   1. the tests that need CUDA (those marked 'needs CUDA', selected with -k cuda);
#   2. benchmark_step.py on the shipped FGD X101 -> R50 config (random teacher, batch 2 at
#      800x1333): the fp32 teacher, 'auto' (bf16 or fp16 + channels-last) and the other reduced
#      precision, the student under --amp;
#   3. benchmark_losses.py --device cuda: the eager losses, then the compiled ones (Triton).
# Each part has its own time limit; logs and a summary (gpu_rows.md: the machine line, each
# part's status, the tables) go to DIR. Without CUDA every part is skipped, and it says so.
#
#   tools/analysis/gpu_check.sh [DIR]      # DIR: default $OUT, else work_dirs/gpu_check
set -u
cd "$(dirname "$0")/../.."
DIR=${1:-${OUT:-work_dirs/gpu_check}}
mkdir -p "$DIR"
SUMMARY=$DIR/gpu_rows.md
CONFIG=configs/fgd/fgd_retinanet_x101-64x4d-fpn_retinanet_r50-fpn_2x_coco.py
PY=${PYTHON:-python3}

if $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    DEVICE=cuda
else
    DEVICE=cpu
fi
MACHINE=$($PY -c "from mmdistill.engine.machine import machine_info, machine_line; \
print(machine_line(machine_info('$DEVICE')))")
{
    echo "# GPU check, $(date -u +%Y-%m-%d)"
    echo
    echo "Machine: $MACHINE"
    echo
} > "$SUMMARY"

if [ "$DEVICE" != cuda ]; then
    MSG="SKIPPED: no CUDA device (torch.cuda.is_available() is False): the CUDA tests, the GPU step benchmark and the GPU loss benchmark need one; the GPU rows stay not measured"
    echo "$MSG" | tee -a "$SUMMARY"
    exit 0
fi

FAILED=0
# part NAME LIMIT_S COMMAND...: run with a time limit, log to DIR/NAME.log, summarise.
part() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$DIR/$name.log" 2>&1
    local rc=$?
    local status=ok
    if [ $rc -eq 124 ]; then status="TIMED OUT after ${limit}s"; FAILED=1
    elif [ $rc -ne 0 ]; then status="FAILED (exit $rc)"; FAILED=1; fi
    {
        echo "## $name: $status, $((SECONDS - start)) s"
        echo
        echo '```'
        echo "$*"
        echo '```'
        echo
        grep -E '^(\| |[0-9]+ (passed|failed|skipped)|.* passed|.* failed|SKIPPED|MISMATCH|ratios|Machine|Memory)' \
            "$DIR/$name.log" || tail -n 20 "$DIR/$name.log"
        echo
    } >> "$SUMMARY"
    echo "   $status"
}

CUDA_TESTS=$(grep -rl "needs CUDA" tests --include='*.py' | sort)
part cuda_tests 60 $PY -m pytest -q -rs -k cuda $CUDA_TESTS

AUTO=$($PY -c "from mmdistill.engine.precision import resolve_precision; \
print(resolve_precision('auto', 'cuda').autocast)")
OTHER=$([ "$AUTO" = bf16 ] && echo fp16 || echo bf16)
STEP=(tools/analysis/benchmark_step.py "$CONFIG" --device cuda --random-teacher --repeats 3
      --warmup 1 --batch 2 --shape 800 1333)
part step_auto 100 $PY "${STEP[@]}" --fast-teacher auto
part "step_$OTHER" 100 $PY "${STEP[@]}" --fast-teacher "$OTHER"

part losses_eager 60 $PY tools/analysis/benchmark_losses.py --device cuda --repeats 5 \
    --losses FGD MGD CWD FitNet AT
part losses_compiled 150 $PY tools/analysis/benchmark_losses.py --device cuda --repeats 5 \
    --losses FGD-compiled CWD-compiled AT-compiled

echo "summary: $SUMMARY"
exit $FAILED
