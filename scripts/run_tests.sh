#!/usr/bin/env bash
# The whole suite: engine tests (engine venv), plugin tests (real QGIS, offscreen), lint.
# Prints one closing line "N passed, N failed" over all parts; fails when any part fails.
# Usage: scripts/run_tests.sh [engine|plugin|lint ...]  (default: all three)
set -uo pipefail
cd "$(dirname "$0")/.."
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(engine plugin lint)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Real model weights and long runs are marked slow: `make test-slow` (or MARKERS=) runs them too.
MARKERS=${MARKERS-not slow}
passed=0 failed=0 status=0
tally() {  # $1: pytest's log; adds its counts
  local line
  line=$(grep -E '(passed|failed|errors?|no tests ran).* in [0-9.]+s' "$1" | tail -1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  f=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$line" | awk '{s += $1} END {print s + 0}')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
}
run_pytest() {  # $1: name, rest: command
  local name=$1; shift
  local log; log=$(mktemp)
  echo "== $name tests"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  tally "$log"
  if [ "$rc" = 5 ]; then echo "$name: no tests collected"; rc=0; fi
  [ "$rc" = 0 ] || { echo "$name tests failed (exit $rc)"; status=1; }
}
for part in "${parts[@]}"; do
  case $part in
    engine) run_pytest engine .venv/bin/python -m pytest tests/engine tests/contract -q -p no:cacheprovider -m "$MARKERS" ;;
    plugin) QT_QPA_PLATFORM=offscreen run_pytest plugin .venv-qgis/bin/python -m pytest tests/plugin -q -p no:cacheprovider -m "$MARKERS" ;;
    lint)
      echo "== lint"
      if .venv/bin/ruff check engine topt_qgis tests resources scripts bench; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
done
echo
echo "$passed passed, $failed failed"
exit $status
