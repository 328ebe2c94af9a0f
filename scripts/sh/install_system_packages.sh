#!/usr/bin/env bash
# System packages the test suite drives for real: headless Chromium (the console's browser tests) and the
# Secret Service (gnome-keyring under a private D-Bus session, for keyring). Installs only what is missing,
# only where apt-get and root are available; elsewhere it says what is missing and exits 0, and the tests
# that need the part skip with that reason.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v gnome-keyring-daemon >/dev/null 2>&1 || need+=(gnome-keyring)
command -v dbus-run-session >/dev/null 2>&1 || need+=(dbus)
command -v dbus-launch >/dev/null 2>&1 || need+=(dbus-x11)
command -v secret-tool >/dev/null 2>&1 || need+=(libsecret-tools)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "acts: missing system packages: ${need[*]} (install them to run the browser and keyring tests)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
