#!/usr/bin/env bash
# Build the `celeriac` binary as a Python wheel (maturin `bin` bindings) into target/wheels/:
#
#   scripts/wheel.sh                 build target/wheels/celeriac-<version>-<tags>.whl
#   scripts/wheel.sh --install VENV  also install it into that virtualenv (its bin/ then
#                                    holds `celeriac` next to `celery`)
#
# maturin (pinned in scripts/requirements-wheel.txt) is installed into .venv-build/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_into=""
case "${1:-}" in
  --install) install_into=${2:?--install needs a virtualenv directory} ;;
  "") ;;
  *) echo "usage: scripts/wheel.sh [--install VENV]" >&2; exit 2 ;;
esac

make_venv .venv-build scripts/requirements-wheel.txt
step "building the celeriac wheel (release)"
rm -rf target/wheels
.venv-build/bin/maturin build --quiet --release --locked -m worker/Cargo.toml -o target/wheels >&2
wheel=$(ls target/wheels/celeriac-*.whl)
echo "$wheel"
if [ -n "$install_into" ]; then
  step "installing $wheel into $install_into"
  "$install_into/bin/pip" install -q --force-reinstall --no-deps "$wheel"
fi
