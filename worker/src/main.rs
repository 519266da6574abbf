//! `celeriac`: the worker and operator CLI ([`celeriac_worker::main`]) serving the built-in
//! tasks of `shared_tasks`.

use std::process::ExitCode;

fn main() -> ExitCode {
    celeriac_worker::main(shared_tasks::registry())
}
