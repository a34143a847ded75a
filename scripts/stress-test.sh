#!/usr/bin/env bash
# Runs the README's test command RUNS times in a row (default 5) while another process keeps
# every core busy, and reports each run's result and duration. Exits non-zero if any run
# failed. The load stops when the script ends, however it ends.
#
#   scripts/stress-test.sh [RUNS]
#
# The suite runs with .venv/bin/pytest (made with the README's command if it is missing);
# PYTEST=/path/to/pytest picks another one. Set PROMPTSHIP_TEST_POSTGRES_URL to run the
# PostgreSQL half too, as CI does. Each run's output goes to $LOGS/run-N.log.
set -uo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-5}"
case "$RUNS" in
    '' | *[!0-9]* | 0)
        echo "usage: scripts/stress-test.sh [RUNS]  (RUNS: a whole number of runs, 1 or more)" >&2
        exit 2
        ;;
esac
PYTEST="${PYTEST:-.venv/bin/pytest}"
LOGS="${LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/promptship-stress.XXXXXX")}"
mkdir -p "$LOGS"

if [ ! -x "$PYTEST" ]; then
    echo "no $PYTEST: installing with the README's command"
    python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' || exit 1
    PYTEST=.venv/bin/pytest
fi

load=()
suite=""
stop() {
    if [ -n "$suite" ]; then # interrupted mid-run: that run stops too
        kill "$suite" 2>/dev/null
        wait "$suite" 2>/dev/null
        suite=""
    fi
    if [ "${#load[@]}" -gt 0 ]; then
        kill "${load[@]}" 2>/dev/null
        wait "${load[@]}" 2>/dev/null
        load=()
    fi
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cores="$(nproc)"
if command -v stress-ng >/dev/null; then
    stress-ng --cpu "$cores" --quiet &
    load+=("$!")
else
    for _ in $(seq "$cores"); do
        yes >/dev/null &
        load+=("$!")
    done
fi
echo "load: $cores busy process(es) at normal priority; $RUNS run(s) of $PYTEST; logs in $LOGS"

failed=0
for run in $(seq "$RUNS"); do
    started="$(date +%s)"
    "$PYTEST" >"$LOGS/run-$run.log" 2>&1 &
    suite=$!
    wait "$suite"
    code=$?
    suite=""
    seconds=$(($(date +%s) - started))
    summary="$(grep -E '(passed|failed|error).* in [0-9.]+s' "$LOGS/run-$run.log" | tail -1 | tr -d '=')"
    if [ "$code" -eq 0 ]; then
        result=passed
    else
        result="FAILED (exit $code)"
        failed=$((failed + 1))
    fi
    printf 'run %d/%d: %s in %dm%02ds —%s\n' "$run" "$RUNS" "$result" $((seconds / 60)) \
        $((seconds % 60)) "${summary:- no summary line; see $LOGS/run-$run.log}"
done

echo "$((RUNS - failed)) of $RUNS run(s) passed under load"
[ "$failed" -eq 0 ]
