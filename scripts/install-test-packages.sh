#!/usr/bin/env bash
# Debian packages used only by the test suite: Chromium, to open the HTML report in a real headless browser.
# Installed as root (apt-get); without root the browser test skips with a message.  Idempotent.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "installing Debian test packages: chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
else
  echo "note: chromium is not installed and this is not root; the report's browser test will be skipped" >&2
fi
