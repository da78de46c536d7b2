#!/usr/bin/env bash
# Install the Debian packages the integration tests need, if any is missing.
# Idempotent and quick when everything is there. Needs root (or passwordless sudo) to install.
set -euo pipefail

# package:binary pairs; the binary tells whether the package is already installed.
wanted=(
  "prometheus:prometheus"
  "prometheus-alertmanager:prometheus-alertmanager"
  "redis-server:redis-server"
  "redis-tools:redis-cli"
  # The Node.js app of tests/integration/test_service_e2e.py (its npm packages: `npm ci` there).
  "nodejs:node"
  "npm:npm"
)

missing=()
for pair in "${wanted[@]}"; do
  pkg=${pair%%:*}
  bin=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "install-system-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-system-deps: installing ${missing[*]}" >&2
# Packages must not try to start their services here (no init system in containers/CI).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
