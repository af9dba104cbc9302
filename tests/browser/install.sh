#!/usr/bin/env bash
# Installs the headless browser the viewer test drives: Debian's `chromium` package (no browser download of its
# own, no Playwright). Idempotent: does nothing when chromium is already on PATH. Needs root (CI runs as root)
# or passwordless sudo. The test drives Chromium over the DevTools protocol on a pipe, so nothing else is needed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "tests/browser/install.sh: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
