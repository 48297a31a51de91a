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
