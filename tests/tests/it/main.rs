//! The integration tests: one test binary, one module per topic, each test against a real
//! private `redis-server` and, where a peer is involved, real Python Celery, redis-py,
//! Flower and Chromium (see `tests/src/lib.rs`).

mod canvas;
mod differential;
mod faults;
mod flower;
mod golden;
mod interop;
mod keyguide;
mod locks;
mod operate;
mod own_worker;
mod payload;
mod python_tasks;
mod security;
mod sentinel;
mod typed;
mod worker;
