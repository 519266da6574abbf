#!/usr/bin/env bash
# All checks, on a fresh machine: installs what the tests need (redis-server, chromium,
# the Python venv with pinned celery/redis/flower), then fmt, clippy -D warnings, doc,
# and every test against a real redis-server and real Python Celery.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis_server
ensure_chromium
ensure_venv
ensure_venv_celery55

export CELERIAC_PYTHON="$PWD/.venv/bin/python"
export CELERIAC_PYTHON_CELERY55="$PWD/.venv-celery55/bin/python"
export PATH="$PWD/.venv/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
step "build binaries"
cargo build --locked --workspace --bins --examples
export CELERIAC_BIN="$PWD/target/debug/celeriac"
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "$@"
  # nextest does not run doctests
  cargo test --locked --workspace --doc --quiet
else
  cargo test --locked --workspace --no-fail-fast "$@"
fi
step "all checks passed"
