#!/usr/bin/env bash
# Create .venv with the project and its test tools. Idempotent: a no-op when
# pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "install.sh: $*"; }

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "install.sh: Python >= 3.11 is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        say "installing python3-venv"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        rm -rf .venv && "$PYTHON" -m venv .venv
    fi
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    say "installing the project and its test tools into .venv"
    mkdir -p .venv/log
    if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e '.[dev]'; } \
            > .venv/log/pip.log 2>&1; then
        tail -40 .venv/log/pip.log >&2
        echo "install.sh: pip install failed (full log: .venv/log/pip.log)" >&2
        exit 1
    fi
    .venv/bin/python -c 'import pfcon.entrypoints.http.app, pfconclient, swiftclient' 
    rm -f .venv/.installed-* && touch "$stamp"
fi

# python-pfconclient 4.0.0 (pfcon 6's client) cannot share .venv with 3.3.0: its own venv,
# driven from the tests through tests/integration/pfconclient4_driver.py (JSON in and out).
PFCONCLIENT4=.venv-pfconclient4
if [ ! -x "$PFCONCLIENT4/bin/python" ] || ! "$PFCONCLIENT4/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("python-pfconclient") != "4.0.0")' 2>/dev/null; then
    say "installing python-pfconclient 4.0.0 into $PFCONCLIENT4"
    rm -rf "$PFCONCLIENT4" && "$PYTHON" -m venv "$PFCONCLIENT4" && mkdir -p .venv/log
    if ! "$PFCONCLIENT4/bin/python" -m pip install -q 'python-pfconclient==4.0.0' > .venv/log/pfconclient4.log 2>&1; then
        tail -20 .venv/log/pfconclient4.log >&2
        echo "install.sh: pip install python-pfconclient==4.0.0 failed" >&2
        exit 1
    fi
fi
