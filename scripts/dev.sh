#!/usr/bin/env bash
# One-step set-up and run. Usage:
#   bash scripts/dev.sh demo   # set up .venv, then the whole pipeline on the synthetic demo world
#   bash scripts/dev.sh test   # set up .venv, then the test suite
# Set-up: a virtual environment in .venv with torch (the CPU build on machines without an NVIDIA
# GPU, the default CUDA build where nvidia-smi works) and gpuseg with its dev extras. It is skipped
# when pyproject.toml has not changed since the last set-up. GPUSEG_TORCH overrides the torch spec.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
stamp=$VENV/.gpuseg-setup
want=$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "set-up: creating $VENV (once; about 2 minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if [ -n "${GPUSEG_TORCH:-}" ]; then
    torch_spec=$GPUSEG_TORCH
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    torch_spec="torch>=2.3"          # GPU workstation: the CUDA build from the package index
  else
    torch_spec="torch==2.13.0"       # CPU-only: the pinned CPU wheel (no multi-GB CUDA download)
  fi
  "$VENV/bin/python" -m pip install -q "$torch_spec"
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
# Headless Chromium for the HTML report's browser test (tests/test_html.py skips without one):
# installed from the Debian packages when missing, apt-get exists and we are root or have
# passwordless sudo. Never fatal; instant when a browser is already on PATH.
install_chromium() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    sudo -n true >/dev/null 2>&1 || return 0
    sudo="sudo -n"
  fi
  echo "set-up: installing chromium for the HTML report test (apt-get, once)" >&2
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends chromium; } >/dev/null 2>&1 \
    || echo "set-up: chromium not installed; the browser test will skip" >&2
}
case "${1:-}" in test | setup) install_chromium || true ;; esac
case "${1:-}" in
  demo) shift; exec "$VENV/bin/gpuseg" run --config configs/demo.yaml --overwrite "$@" ;;
  test)
    shift
    "$VENV/bin/lint-imports" --no-cache  # the layer contract in pyproject.toml (README: Layout)
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  setup) ;;
  *) echo "usage: bash scripts/dev.sh demo|test|setup" >&2; exit 2 ;;
esac
