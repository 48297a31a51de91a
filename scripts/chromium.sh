#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the dashboard's browser tests
# (tests/integration/test_dashboard_browser.py). Playwright, from .venv (pyproject's dev
# extras), drives it through executable_path: no browser is downloaded, nothing comes
# from outside Debian's and PyPI's registries.
#
# Usage: scripts/chromium.sh            Idempotent: a no-op when /usr/bin/chromium runs.
set -euo pipefail
ME=chromium.sh
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ] && "$CHROMIUM" --headless --no-sandbox --version >/dev/null 2>&1; then
    log "$("$CHROMIUM" --version 2>/dev/null | head -1) is installed"
    exit 0
fi
log "installing Debian's chromium"
hold_signals
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
release_signals
"$CHROMIUM" --headless --no-sandbox --version >/dev/null 2>&1 || die "$CHROMIUM does not run"
log "$("$CHROMIUM" --version 2>/dev/null | head -1) installed"
