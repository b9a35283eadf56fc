#!/usr/bin/env bash
# Set up the peer benchmarks: Debian's redis-server and beanstalkd, and a venv with the
# peer clients (benchmarks/peers/requirements.txt) plus jobqueue itself (editable).
#
#   bash benchmarks/peers/setup.sh            # venv at $BENCH_VENV, default <repo>/.bench-venv
#
# Idempotent: installed packages are left alone; the venv is reused and refreshed.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.bench-venv}"
PY="${PYTHON:-python3}"

# 1. Servers from Debian's packages.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v beanstalkd >/dev/null 2>&1 || missing+=(beanstalkd)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup: redis-server and beanstalkd already installed"
elif [ "$(id -u)" != 0 ]; then
    echo "setup: SKIP installing ${missing[*]}: not root (install them yourself; their peers are skipped until then)"
elif ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: SKIP installing ${missing[*]}: no apt-get here (their peers are skipped)"
else
    echo "setup: installing ${missing[*]} with apt-get"
    if ! apt-get update -q >/dev/null; then
        echo "setup: SKIP: apt-get update failed (the peers needing ${missing[*]} are skipped)"
    elif ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
        echo "setup: SKIP: apt-get install ${missing[*]} failed (those peers are skipped)"
    fi
    # Debian starts the packaged services where an init system runs; the benchmarks start
    # their own servers on free loopback ports, so the packaged ones are not needed.
fi
command -v redis-server >/dev/null 2>&1 && echo "setup: $(redis-server --version | head -n 1)"
command -v beanstalkd >/dev/null 2>&1 && echo "setup: $(beanstalkd -v 2>&1 | head -n 1)"

# 2. The benchmark venv.
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating venv $VENV"
    "$PY" -m venv "$VENV" || { echo "setup: FAILED to create venv $VENV"; exit 1; }
fi
# Keep git from listing the venv (Python 3.13+ venvs do this themselves).
[ -f "$VENV/.gitignore" ] || echo '*' > "$VENV/.gitignore"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
echo "setup: installing peer clients and jobqueue into $VENV"
PIPLOG="$(mktemp)"
if ! "$VENV/bin/python" -m pip install -q --upgrade -r "$HERE/requirements.txt" -e "$ROOT" \
        >"$PIPLOG" 2>&1; then
    tail -n 30 "$PIPLOG"
    rm -f "$PIPLOG"
    echo "setup: FAILED: pip install"
    exit 1
fi
rm -f "$PIPLOG"
"$VENV/bin/python" -m pip list 2>/dev/null \
    | grep -iE '^(taskiq|taskiq-redis|dramatiq|saq|greenstalk|redis|jobqueue|trio) ' || true
echo "setup: done. Run: cd $ROOT && $VENV/bin/python -m benchmarks.peers.run_all"
