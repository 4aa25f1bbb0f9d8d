#!/usr/bin/env bash
# The dashboard tests drive a real headless Chromium (Playwright with the system binary:
# Playwright's own browser download is not used). Install Debian's `chromium` when it is
# missing and we can (root on Debian/Ubuntu); otherwise say how, in one line.
set -u
found() { command -v chromium >/dev/null 2>&1 || [ -x "${ANTENNA_CHROMIUM:-/nonexistent}" ]; }
found && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the dashboard tests (apt-get, about 30 s)"
  export DEBIAN_FRONTEND=noninteractive
  if { apt-get update -qq && apt-get install -y -qq chromium; } >/tmp/antenna-chromium-install.log 2>&1 && found; then
    exit 0
  fi
  echo "error: 'apt-get install chromium' failed (see /tmp/antenna-chromium-install.log); install Chromium and retry, or set ANTENNA_CHROMIUM=/path/to/chromium" >&2
  exit 1
fi
echo "error: Chromium is needed for the dashboard tests: install it (Debian/Ubuntu: 'sudo apt-get install chromium', macOS: 'brew install --cask chromium') or set ANTENNA_CHROMIUM=/path/to/chromium" >&2
exit 1
