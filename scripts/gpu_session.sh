#!/usr/bin/env bash
# One command on the GPU machine: install, versions, build, cluster occupancy, GPU tests,
# (sanitizer), benchmark, then a short summary printed LAST. Run it from anywhere; it works in the repository root.
#
#   bash scripts/gpu_session.sh                          # everything (at most ~9.5 minutes)
#   BENCH_ARGS="--quick" bash scripts/gpu_session.sh     # a 1-2 minute benchmark instead
#   SKIP_TESTS=1 bash scripts/gpu_session.sh             # benchmark only
#
# Knobs (environment variables):
#   BENCH_ARGS       extra options of `liquidref bench` (e.g. "--quick", "--shapes llama2-70b")
#   SKIP_TESTS=1     leave out the GPU property tests
#   SKIP_BENCH=1     leave out the benchmark
#   SANITIZE=1       add a compute-sanitizer memcheck of every backend on a small shape,
#                    memcheck and synccheck of the Hopper kernel's sanitizer cases
#                    (tests/gpu/test_hopper.py -k sanitizer_case), racecheck of those without
#                    clusters and of the cluster split's racecheck build (a cluster exchange
#                    through an mbarrier never finishes under racecheck), racecheck of
#                    tests/gpu/test_hopper_mutants.py RACECHECK_MUTANT (it must report a
#                    hazard), and racecheck of scripts/racecheck_probe.py (what racecheck sees
#                    of a bulk-copy ring and of a cluster-barrier exchange)
#   SESSION_SECONDS  the whole session's budget (default 540; the device allows 600 per command):
#                    the benchmark gets what is left, at most BENCH_SECONDS (default 360)
#   TEST_SECONDS     time limit of the GPU tests (default 240; less when the session budget is short)
#   CLUSTER_PROBE_SECONDS  time limit of each cluster mode of the racecheck probe (default 45)
#   CLUSTER_CASES_SECONDS  time limit of the racecheck of the cluster split's racecheck build
#                    and of that of RACECHECK_MUTANT (default 100 each; neither has run yet)
#   PYTHON           the interpreter (default python3, the one that holds torch on the device)
#   OUT              output folder (the device sets it; default liquidref-out/session)
#
# Files under $OUT (6 at most): summary.txt, session.log, gpu-tests.log,
# bench/bench.json, bench/bench.txt, bench/bench.png.
# A failing step does not stop the later ones. If the install fails, the later steps run from
# the source tree (PYTHONPATH). Exit status: 0 when every step that ran passed, else 1.

set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

OUT="${OUT:-$PWD/liquidref-out/session}"
PY="${PYTHON:-python3}"
SESSION_SECONDS="${SESSION_SECONDS:-540}"
BENCH_SECONDS="${BENCH_SECONDS:-360}"
TEST_SECONDS="${TEST_SECONDS:-240}"
CLUSTER_PROBE_SECONDS="${CLUSTER_PROBE_SECONDS:-45}"
CLUSTER_CASES_SECONDS="${CLUSTER_CASES_SECONDS:-100}"
BENCH_ARGS="${BENCH_ARGS:-}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

mkdir -p "$OUT/bench"
rm -f "$OUT/summary.txt" "$OUT/session.log" "$OUT/gpu-tests.log" "$OUT"/bench/bench.*
LOG="$OUT/session.log"
: >"$LOG"

STEPS=()   # one "name|status|seconds|detail" per step
FAILED=0

say() { echo "$@" | tee -a "$LOG"; }

# timed_out EXIT_CODE: the exit status of a command that `timeout` stopped (TERM, then KILL)
timed_out() { [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; }

# finish_step NAME EXIT_CODE START_SECONDS [DETAIL]
finish_step() {
  local status="ok"
  if [ "$2" -ne 0 ]; then
    status="FAILED (exit $2)"
    timed_out "$2" && status="FAILED (timed out)"
    FAILED=1
  fi
  STEPS+=("$1|$status|$((SECONDS - $3))|${4:-}")
}

skip_step() { STEPS+=("$1|skipped|0|$2"); }

# with_timeout SECONDS COMMAND...: SIGTERM after SECONDS, SIGKILL 15 s later (when `timeout` exists)
with_timeout() {
  local seconds="$1"
  shift
  if command -v timeout >/dev/null 2>&1; then
    timeout -k 15 "$seconds" "$@"
  else
    "$@"
  fi
}

# logged FILE SECONDS COMMAND...: run with a time limit, output to the terminal and FILE;
# returns the command's exit status and leaves its last output line in LAST_LINE
STEP_OUTPUT="$(mktemp)"
trap 'rm -f "$STEP_OUTPUT"' EXIT
logged() {
  local file="$1" seconds="$2" rc
  shift 2
  with_timeout "$seconds" "$@" 2>&1 | tee "$STEP_OUTPUT"
  rc=$?
  cat "$STEP_OUTPUT" >>"$file"
  LAST_LINE="$(grep -v '^[[:space:]]*$' "$STEP_OUTPUT" | tail -n 1 | tr -d '\r' | cut -c 1-150)"
  return $rc
}

# --- 1. install ------------------------------------------------------------------------------
say "=== install (pip install --no-deps --no-build-isolation -e .)"
start=$SECONDS
with_timeout 120 "$PY" -m pip install --no-deps --no-build-isolation -q -e . >>"$LOG" 2>&1
rc=$?
detail=""
if [ $rc -ne 0 ]; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  detail="pip failed (session.log); later steps run with PYTHONPATH=$PWD"
  say "install failed: $detail"
fi
finish_step install $rc $start "$detail"

# --- 2. device and versions ------------------------------------------------------------------
say "=== device and versions"
if command -v nvidia-smi >/dev/null 2>&1; then
  DEVICE="$(nvidia-smi -L 2>&1 | head -n 4 | tr '\n' ';')"
else
  DEVICE="nvidia-smi not found"
fi
say "$DEVICE"
with_timeout 60 "$PY" - <<'PYTHON' 2>&1 | tee -a "$LOG"
import platform
print("python", platform.python_version())
for name in ("torch", "cupy", "numpy", "numba", "hypothesis", "triton"):
    try:
        print(name, __import__(name).__version__)
    except Exception as error:  # report, never stop the session
        print(name, "unavailable:", error)
try:
    import torch
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("torch sees", p.name, "sm_%d%d" % (p.major, p.minor), p.multi_processor_count, "SMs,",
              getattr(p, "L2_cache_size", "?"), "bytes of L2, CUDA", torch.version.cuda)
    else:
        print("torch sees no CUDA device")
except Exception as error:
    print("torch device query failed:", error)
PYTHON

# --- 3. build: compile every kernel once, check each backend at each M -----------------------
say "=== build (python -m gpu.bench --build-only)"
start=$SECONDS
logged "$LOG" 180 "$PY" -m gpu.bench --build-only
rc=$?
finish_step build $rc $start "$LAST_LINE"
HUNG=""
if timed_out "$rc"; then
  HUNG="the build timed out (a kernel that never finishes?); later GPU steps skipped"
  say "$HUNG"
fi

# --- 3b. cluster occupancy: information for the summary, never a failed step --------------------
OCCUPANCY="not queried"
if [ -z "$HUNG" ]; then
  say "=== cluster occupancy (scripts/cluster_occupancy.py)"
  if logged "$LOG" 90 "$PY" scripts/cluster_occupancy.py; then
    OCCUPANCY="$LAST_LINE"
  else
    OCCUPANCY="the query failed (session.log): $LAST_LINE"
  fi
fi

# --- 4. GPU property tests -------------------------------------------------------------------
if [ "${SKIP_TESTS:-0}" = "1" ]; then
  skip_step tests "SKIP_TESTS=1"
elif [ -n "$HUNG" ]; then
  skip_step tests "$HUNG"
elif [ $((SESSION_SECONDS - SECONDS - 60)) -lt 30 ]; then
  skip_step tests "only $((SESSION_SECONDS - SECONDS)) s left of SESSION_SECONDS=${SESSION_SECONDS}"
else
  limit=$((SESSION_SECONDS - SECONDS - 60))
  [ "$limit" -gt "$TEST_SECONDS" ] && limit=$TEST_SECONDS
  say "=== GPU tests (pytest -m gpu tests/gpu -x -q, CI hypothesis profile, ${limit} s limit)"
  start=$SECONDS
  CI=1 logged "$OUT/gpu-tests.log" "$limit" "$PY" -m pytest -m gpu tests/gpu -x -q -p no:cacheprovider
  rc=$?
  counts="$(grep -E '[0-9]+ (passed|failed|error|errors|skipped|deselected)' "$OUT/gpu-tests.log" | tail -n 1 | tr -d '=' | sed 's/^ *//')"
  [ $rc -eq 5 ] && counts="no tests collected"
  if [ $rc -eq 0 ] && ! echo "$counts" | grep -q passed; then
    rc=1 # every GPU test skipped: the GPU was not usable from the tests
    counts="no test passed: $counts"
  fi
  finish_step tests $rc $start "$counts"
fi

# --- 5. compute-sanitizer (optional) ---------------------------------------------------------
if [ "${SANITIZE:-0}" = "1" ] && [ -n "$HUNG" ]; then
  skip_step sanitize "$HUNG"
elif [ "${SANITIZE:-0}" = "1" ]; then
  SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
  if [ -z "$SANITIZER" ]; then
    skip_step sanitize "compute-sanitizer not found"
  else
    say "=== compute-sanitizer memcheck (every backend, N=128 K=512, M 5,16,64)"
    start=$SECONDS
    logged "$LOG" 300 "$SANITIZER" --tool memcheck --error-exitcode 99 --print-limit 20 \
      "$PY" -m gpu.bench --build-only --shapes 128x512 --m 5,16,64
    rc=$?
    finish_step sanitize $rc $start "$(grep -E 'ERROR SUMMARY' "$STEP_OUTPUT" | tail -n 1)"
    # racecheck on the smallest bulk-copy ring, correct and racy, with raw and with tensor copies
    # (scripts/racecheck_probe.py): what racecheck can judge of the kernel's ring; then the DSMEM
    # exchange ordered by the cluster barrier, correct and racy: whether racecheck sees remote
    # shared-memory stores at all (CLUSTER_PROBE_SECONDS each; one that does not finish is
    # reported, not failed).
    # The step fails only if a correct probe sums wrong, or a correct ring probe does not run.
    # (The probe's mbarrier cluster modes are not run here: cluster_st_async and
    # cluster_st_remote never finish under racecheck, H100 2026-12-07.)
    say "=== compute-sanitizer racecheck of scripts/racecheck_probe.py (correct, early, tensor, tensor_early, cluster_barrier_exchange(_racy))"
    start=$SECONDS
    detail=""
    rc=0
    for mode in correct early tensor tensor_early cluster_barrier_exchange cluster_barrier_exchange_racy; do
      limit=60
      case "$mode" in cluster_*) limit=$CLUSTER_PROBE_SECONDS ;; esac
      logged "$LOG" "$limit" "$SANITIZER" --tool racecheck "$PY" scripts/racecheck_probe.py "$mode"
      mode_rc=$?
      case "$mode" in
        correct | tensor) [ "$mode_rc" -ne 0 ] && rc=$mode_rc ;;
        cluster_barrier_exchange) [ "$mode_rc" -eq 1 ] && rc=$mode_rc ;;
      esac
      summary="$(grep -oE 'RACECHECK SUMMARY: .*' "$STEP_OUTPUT" | tail -n 1 | cut -c 20-)"
      timed_out "$mode_rc" && summary="did not finish in ${limit} s"
      detail+="$mode: $summary "
    done
    finish_step racecheck $rc $start "$detail"
    # the Hopper kernel's own cases: split-K, a partial token group, a half row tile, one and two
    # load warps, LiquidGEMM and ExCP (each cluster split also in its racecheck build), plain and
    # programmatic launches, a ring that wraps. racecheck: the cases without clusters (the
    # workspace splits) and the cluster splits' racecheck build (partials as plain remote stores
    # ordered by the cluster barrier), since a kernel whose cluster CTAs exchange data through an
    # mbarrier never finishes under racecheck (CUDA 13.0; scripts/racecheck_probe.py
    # cluster_st_async and cluster_st_remote); it does not see the TMA copies' writes either.
    # Last, the racecheck build with a read that races (tests/gpu/test_hopper_mutants.py
    # RACECHECK_MUTANT): racecheck must report a hazard there, or the step fails.
    say "=== compute-sanitizer memcheck and synccheck of tests/gpu/test_hopper.py -k sanitizer_case, racecheck of its workspace and barrier_exchange cases and of RACECHECK_MUTANT"
    start=$SECONDS
    detail=""
    rc=0
    for run in "memcheck|tests/gpu/test_hopper.py|sanitizer_case" "synccheck|tests/gpu/test_hopper.py|sanitizer_case" \
      "racecheck|tests/gpu/test_hopper.py|sanitizer_case and workspace" \
      "racecheck|tests/gpu/test_hopper.py|sanitizer_case and barrier_exchange" \
      "racecheck|tests/gpu/test_hopper_mutants.py|racecheck_mutant"; do
      IFS='|' read -r tool file cases <<<"$run"
      limit=200
      case "$cases" in *barrier_exchange | racecheck_mutant) limit=$CLUSTER_CASES_SECONDS ;; esac
      logged "$LOG" "$limit" "$SANITIZER" --tool "$tool" --error-exitcode 99 \
        "$PY" -m pytest -q -x -p no:cacheprovider "$file" -k "$cases"
      tool_rc=$?
      summary="$(grep -oE '(ERROR|RACECHECK) SUMMARY: .*' "$STEP_OUTPUT" | tail -n 1 | sed -E 's/^[A-Z]+ SUMMARY: //')"
      timed_out "$tool_rc" && summary="did not finish in $limit s"
      label="$tool"
      case "$cases" in
        *workspace) label="racecheck workspace" ;;
        *barrier_exchange) label="racecheck barrier_exchange" ;;
        racecheck_mutant)
          label="racecheck mutant (needs a hazard)"
          # racecheck exits 99 on the hazards this run needs: it passes when racecheck reports
          # at least one and the test itself passed (the bytes stay right), else it fails
          if ! timed_out "$tool_rc"; then
            tool_rc=1
            tests_line="$(grep -v '^=========' "$STEP_OUTPUT" | grep -E '[0-9]+ (passed|failed|errors?)' | tail -n 1)"
            if [[ "$summary" =~ ^[1-9][0-9]*\ hazard ]] && [[ "$tests_line" =~ [0-9]+\ passed ]] &&
              ! [[ "$tests_line" =~ [0-9]+\ (failed|error) ]]; then
              tool_rc=0
            fi
          fi ;;
      esac
      [ "$tool_rc" -ne 0 ] && rc=$tool_rc
      detail+="$label: $summary "
    done
    finish_step cases $rc $start "$detail"
  fi
else
  skip_step sanitize "SANITIZE=1 to run"
fi

# --- 6. benchmark ----------------------------------------------------------------------------
if [ "${SKIP_BENCH:-0}" = "1" ]; then
  skip_step bench "SKIP_BENCH=1"
elif [ -n "$HUNG" ]; then
  skip_step bench "$HUNG"
else
  left=$((SESSION_SECONDS - SECONDS - 40)) # keep time for writing the outputs and the summary
  budget=$((left < BENCH_SECONDS ? left : BENCH_SECONDS))
  if [ "$budget" -lt 60 ]; then
    skip_step bench "only ${left} s left of SESSION_SECONDS=${SESSION_SECONDS}"
  else
    say "=== benchmark (liquidref bench --max-seconds $budget $BENCH_ARGS)"
    start=$SECONDS
    # BENCH_ARGS is split into words on purpose.
    # shellcheck disable=SC2086
    logged "$LOG" $((budget + 45)) "$PY" -m gpu.bench --out "$OUT/bench" --max-seconds "$budget" $BENCH_ARGS
    rc=$?
    detail="$(grep -E '^(INCOMPLETE|CORRECTNESS)' "$OUT/bench/bench.txt" 2>/dev/null | head -n 2 | tr '\n' ' ')"
    [ $rc -ne 0 ] && [ -z "$detail" ] && detail="$LAST_LINE"
    finish_step bench $rc $start "$detail"
  fi
fi

# --- 7. summary, printed last ----------------------------------------------------------------
{
  echo "==================== liquidref GPU session ===================="
  echo "device: $DEVICE"
  echo "date:   $(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS} s"
  echo "$OCCUPANCY"
  printf '%-9s %-20s %5s  %s\n' step status sec detail
  for entry in "${STEPS[@]}"; do
    IFS='|' read -r name status seconds detail <<<"$entry"
    printf '%-9s %-20s %5s  %s\n' "$name" "$status" "$seconds" "$detail"
  done
  if [ -f "$OUT/bench/bench.json" ]; then
    echo
    "$PY" -m gpu.bench --render-summary "$OUT/bench/bench.json" 2>&1
  fi
  echo
  echo "files: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
  if [ "$FAILED" -eq 0 ]; then echo "SESSION PASSED"; else echo "SESSION FAILED (see the steps above)"; fi
} >"$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"
exit "$FAILED"
