#!/usr/bin/env bash
# Set up gentune in ./.venv (idempotent), with the report extra (tune writes report.html).
# With --test, also what the tests and .ci/run need: every extra, pytest, selenium, ruff and
# mypy, Debian's chromium + chromium-driver for the browser test, and Debian's postgresql for
# the parallel-worker tests.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch is pinned to 2.13.0 in pyproject.toml: the CPU build on this kind of machine
# (an unpinned torch would pull a multi-GB CUDA build).
extras=report
[ "$want_test" = 1 ] && extras=all,test
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"

if [ "$want_test" = 1 ]; then
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  # PostgreSQL server binaries for tests/test_parallel.py (a throw-away server per test run)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
    || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "note: ${need[*]} not installed; the browser and PostgreSQL tests will be skipped" >&2
    fi
  fi
fi
