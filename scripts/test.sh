#!/usr/bin/env bash
# Hearth's tests: lint (ruff, mypy, ansible-lint), unit tests, then the lab integration tests
# against real hosts (Docker needed). Set HEARTH_SKIP_LAB=1 to run only the first two.
set -euo pipefail
# As root, or it re-runs itself with sudo (keeping the HEARTH_* settings); no sudo needed as root.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "$0: run it as root (sudo is not installed)" >&2; exit 6; }
  mapfile -t hearth_env < <(env | grep '^HEARTH_' || true)
  exec sudo env "${hearth_env[@]}" bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="${HEARTH_HOME:-$HOME/.local/share/hearth}/collections"

echo "==> lint"
ruff check src tests plugins benchmarks
mypy
ansible-lint -q roles playbooks

echo "==> tests"
if [ "${HEARTH_SKIP_LAB:-0}" = "1" ]; then
  pytest -q -n 2 tests/unit
else
  # The unit tests side by side with the two lab groups (tests/integration/conftest.py: GROUPS),
  # each group with its own block of LAB_BLOCK=4 lab ids: lab-a from HEARTH_LAB_ID (default 7),
  # lab-b after it. Each line of output says its group; the slowest tests of each group are
  # listed at its end.
  base="${HEARTH_LAB_ID:-7}"
  # PYTHONUNBUFFERED: each group's progress as it happens (a pipe would hold it to the end)
  group() {
    PYTHONUNBUFFERED=1 HEARTH_TEST_GROUP="$1" HEARTH_LAB_ID="$2" \
      pytest -q -p no:cacheprovider --durations=20 tests/integration 2>&1 | sed -u "s/^/[$1] /"
  }
  (pytest -q -n 2 -p no:cacheprovider tests/unit 2>&1 | sed -u "s/^/[unit] /") &
  unit=$!
  group lab-a "$base" &
  first=$!
  group lab-b "$((base + 4))" &
  second=$!
  status=0
  wait "$unit" || status=$?
  wait "$first" || status=$?
  wait "$second" || status=$?
  exit "$status"
fi
