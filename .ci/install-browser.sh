#!/usr/bin/env bash
# Installs Debian's Chromium for the attention viewer's browser test (tests/test_viewer.py).
# Idempotent: does nothing when /usr/bin/chromium is already there. Playwright's own browser
# download is not used (CI cannot reach it); the playwright Python package comes from the dev extras.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-browser: need root or sudo to apt-get install chromium" >&2; exit 1; }
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
echo "installed: $(/usr/bin/chromium --version)"
