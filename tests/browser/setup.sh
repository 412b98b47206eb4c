#!/usr/bin/env bash
# Installs what tests/test_browser.py needs: Debian `chromium` (apt-get, needs root) and `playwright-core`
# (npm) into $HQG_BROWSER_NODE_DIR (default /tmp/hqg-browser; kept out of the repository).
# Usage: bash tests/browser/setup.sh        (then: make test-browser)
set -euo pipefail
NODE_DIR="${HQG_BROWSER_NODE_DIR:-/tmp/hqg-browser}"
PLAYWRIGHT_VERSION="${HQG_PLAYWRIGHT_VERSION:-1.65.1}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v chromium >/dev/null 2>&1; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
fi
command -v npm >/dev/null 2>&1 || {
  $SUDO apt-get update -q; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm; }
mkdir -p "$NODE_DIR"
if [ ! -d "$NODE_DIR/node_modules/playwright-core" ]; then
  # playwright-core ships no browser: it drives the Debian chromium, so no browser download happens here.
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION")
fi
echo "chromium: $(command -v chromium) ($(chromium --version 2>/dev/null || true))"
echo "playwright-core: $NODE_DIR/node_modules/playwright-core"
