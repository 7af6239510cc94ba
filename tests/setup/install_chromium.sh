#!/bin/sh
# Install the headless browser that tests/test_report_browser.py drives (Debian's chromium).
# Run as root: sh tests/setup/install_chromium.sh   (about 70 s and 590 MB the first time).
# Playwright cannot download its own browser build here; it drives /usr/bin/chromium
# through executable_path instead (Playwright itself comes with pip's [test] extra).
set -eu
if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_chromium.sh: needs root (apt-get install chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
