#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine (run as root, or with sudo available).
# Installs the system libraries vcell links against, and the Python venv used by interop tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_pkgs=()
# build-essential: the C compiler the linker step and the C parts of zstd need
for p in build-essential libhdf5-dev pkg-config zstd tmux python3-venv python3-pip; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
# python3-venv may be satisfied by a non-Debian python3 that already ships venv.
if [ ${#need_pkgs[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  for p in "${need_pkgs[@]}"; do
    if [ "$p" = python3-venv ] || [ "$p" = python3-pip ]; then
      python3 -m venv --help >/dev/null 2>&1 && continue
    fi
    $SUDO apt-get install -y -qq "$p" >/dev/null
  done
fi

# Rust toolchain: use the machine's if present, otherwise rustup (stable, minimal profile).
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    $SUDO apt-get install -y -qq curl ca-certificates >/dev/null
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# Python venv with anndata, for the interop tests (tests/interop_anndata.rs). Kept out of git.
VENV=".venv-interop"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import anndata" >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "anndata==0.12.*" "h5py" "numpy" "scipy" "pandas"
fi
echo "setup: ok (libhdf5 $(pkg-config --modversion hdf5 2>/dev/null || echo '?'), venv $VENV)"
