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

# The stand-alone example crate (examples/own-worker, outside the workspace) shares the
# workspace's target directory, so its dependencies are built once.
OWN_WORKER=(--manifest-path examples/own-worker/Cargo.toml)
step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt "${OWN_WORKER[@]}" -- --check
step "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
CARGO_TARGET_DIR="$PWD/target" cargo clippy --locked "${OWN_WORKER[@]}" -- -D warnings
step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
step "build binaries (debug, and the release binary users run)"
cargo build --locked --workspace --bins --examples
cargo build --locked --release -p celeriac-worker --bin celeriac
CARGO_TARGET_DIR="$PWD/target" cargo build --locked "${OWN_WORKER[@]}"
export CELERIAC_BIN="$PWD/target/debug/celeriac"
export OWN_WORKER_BIN="$PWD/target/debug/own-worker"
# The worker-facing suites again on the release binary: the optimiser changes what a task
# measures (a leaked block nobody reads disappears) and how races fall.
RELEASE_SUITES='test(/^(worker|faults|differential|payload|interop|canvas|python_tasks|typed)::/)'
step "tests (debug binary)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "$@"
  # nextest does not run doctests
  cargo test --locked --workspace --doc --quiet
  step "worker, fault, differential and payload tests (release binary)"
  CELERIAC_BIN="$PWD/target/release/celeriac" \
    cargo nextest run --locked -p tests --no-fail-fast -E "$RELEASE_SUITES" "$@"
else
  cargo test --locked --workspace --no-fail-fast "$@"
  step "worker, fault, differential and payload tests (release binary)"
  for suite in worker faults differential payload interop canvas; do
    CELERIAC_BIN="$PWD/target/release/celeriac" \
      cargo test --locked -p tests --test it --no-fail-fast "$@" -- "$suite::"
  done
fi
# The wheel Python users install (maturin `bin` bindings): built, installed into the test
# venv next to `celery`, and the Python-task tests run again through the installed binary.
step "the celeriac wheel: build, install into .venv, Python-task tests through it"
scripts/wheel.sh --install .venv
if cargo nextest --version >/dev/null 2>&1; then
  CELERIAC_BIN="$PWD/.venv/bin/celeriac" \
    cargo nextest run --locked -p tests --no-fail-fast -E 'test(/^python_tasks::/)' "$@"
else
  CELERIAC_BIN="$PWD/.venv/bin/celeriac" \
    cargo test --locked -p tests --test it --no-fail-fast "$@" -- python_tasks::
fi
step "all checks passed"
