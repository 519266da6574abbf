//! Whether `-A` names a Python app, which interpreter serves it, and how the app's own
//! configuration fills in what the command line leaves unsaid (`celery worker` reads the
//! app's `conf`; its flags win).
//!
//! `-A NAME` is a Python app when the first component of `NAME` is a module or regular
//! package in the current directory or on `$PYTHONPATH` (`NAME.py`, `NAME/__init__.py`) —
//! the places `celery -A` looks first — or when `--python` is given, which says so
//! explicitly (an app installed in the virtualenv's site-packages). Otherwise `-A` is
//! accepted for compatibility and the built-in Rust tasks are served, as before. The check
//! costs no interpreter start.

use crate::runtime::zygote::AppReport;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The interpreter for a Python app: `--python PATH`, else `$CELERIAC_PYTHON`, else
/// `python3` on `PATH` (so an activated virtualenv's is used).
pub(crate) fn interpreter(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CELERIAC_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Whether `app` (as `-A` gives it) names a Python module or package found from `cwd` or
/// `$PYTHONPATH`.
pub(crate) fn is_python_app(app: &str, cwd: &Path) -> bool {
    let first = app.split([':', '.']).next().unwrap_or_default().trim();
    if first.is_empty() || !first.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return false;
    }
    let mut dirs = vec![cwd.to_path_buf()];
    if let Some(pp) = std::env::var_os("PYTHONPATH") {
        dirs.extend(std::env::split_paths(&pp).filter(|d| !d.as_os_str().is_empty()));
    }
    dirs.iter().any(|d| {
        d.join(format!("{first}.py")).is_file() || d.join(first).join("__init__.py").is_file()
    })
}

/// `broker_transport_options` celeriac implements as kombu does, or that do not change the
/// wire; anything else set to a non-default value is refused at start, since a worker
/// that read the queues differently from its producers would lose messages silently.
const TRANSPORT_OPTIONS_HONOURED: &[&str] = &[
    "visibility_timeout",
    "fanout_prefix",
    "fanout_patterns",
    "max_connections",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "health_check_interval",
    "retry_on_timeout",
    "polling_interval",
    "unacked_restore_limit",
    "master_name",
    "sentinel_kwargs",
];

/// Check the app's transport options: the ones that change key names or queue order must
/// have kombu's default values. Returns the visibility timeout, when the app sets one.
pub(crate) fn transport_options(report: &AppReport) -> Result<Option<f64>> {
    use serde_json::{Value, json};
    let opts = &report.broker_transport_options;
    for (k, v) in opts {
        if TRANSPORT_OPTIONS_HONOURED.contains(&k.as_str()) {
            continue;
        }
        let default = match k.as_str() {
            "priority_steps" => json!([0, 3, 6, 9]),
            "sep" => json!("\u{6}\u{16}"),
            "global_keyprefix" => json!(""),
            "queue_order_strategy" => json!("priority"),
            _ => Value::Null,
        };
        if *v != default {
            bail!(
                "the app's broker_transport_options[{k:?}] = {v} is not supported by celeriac \
                 (it would read the queues differently from the app's producers); supported: \
                 {} and kombu's defaults of priority_steps, sep, global_keyprefix, \
                 queue_order_strategy",
                TRANSPORT_OPTIONS_HONOURED.join(", ")
            );
        }
    }
    Ok(opts.get("visibility_timeout").and_then(Value::as_f64))
}

/// What a Python app says its broker and result backend are.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct AppUrls {
    /// `broker_url`.
    pub(crate) broker_url: Option<String>,
    /// `result_backend`.
    pub(crate) result_backend: Option<String>,
}

/// Imports the app as `celery -A` does (current directory first on `sys.path`) and prints its
/// URLs on a private copy of stdout, so that what the app prints while it imports goes to
/// stderr instead of into the answer.
const APP_URLS_PY: &str = r#"
import json, os, sys
out = os.dup(1)
os.dup2(2, 1)
sys.path.insert(0, os.getcwd())
from celery.app.utils import find_app
conf = find_app(sys.argv[1]).conf
os.write(out, json.dumps({"broker_url": conf.broker_url,
                          "result_backend": conf.result_backend}).encode())
"#;

/// The broker and backend of the Python app `app`, for the operator commands (`purge`,
/// `inspect`, `control`, ...), which, as `celery -A APP <command>` does, talk to the broker
/// the app configures when no `-b` is given. This imports the app once, with `python`.
pub(crate) fn app_urls(app: &str, python: &Path) -> Result<AppUrls> {
    let out = std::process::Command::new(python)
        .args(["-c", APP_URLS_PY, app])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "cannot run {} to read the broker of the app {app:?} (set $CELERIAC_PYTHON, \
                 or give -b)",
                python.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "the app {app:?} did not import, so its broker is unknown (give -b, or fix the \
             app):\n{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let urls: AppUrls = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "reading the broker of the app {app:?}: unexpected answer {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(AppUrls {
        broker_url: urls
            .broker_url
            .map(|u| redis_url("broker_url", &u))
            .transpose()?,
        // A backend that is not Redis (or none) leaves the CLI's default, the broker.
        result_backend: urls
            .result_backend
            .filter(|u| redis_url("result_backend", u).is_ok()),
    })
}

/// A broker or backend URL celeriac can serve, or a clear refusal naming the setting.
pub(crate) fn redis_url(setting: &str, url: &str) -> Result<String> {
    let scheme = url.split("://").next().unwrap_or_default();
    if matches!(
        scheme,
        "redis" | "rediss" | "sentinel" | "redis+socket" | "unix"
    ) {
        Ok(url.to_string())
    } else {
        bail!(
            "the app's {setting} is {}: celeriac serves Redis (redis://, rediss://, sentinel://) only",
            celeriac::url::redact(url)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_or_package_in_the_current_directory_is_a_python_app() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shared_tasks.py"), "").unwrap();
        std::fs::create_dir(dir.path().join("proj")).unwrap();
        std::fs::write(dir.path().join("proj").join("__init__.py"), "").unwrap();
        std::fs::create_dir(dir.path().join("notapkg")).unwrap();
        assert!(is_python_app("shared_tasks", dir.path()));
        assert!(is_python_app("shared_tasks:app", dir.path()));
        assert!(is_python_app("proj.celery", dir.path()));
        assert!(
            !is_python_app("notapkg", dir.path()),
            "a namespace dir is not an app"
        );
        assert!(!is_python_app("missing", dir.path()));
    }

    #[test]
    fn non_redis_brokers_are_refused_by_name() {
        let e = redis_url("broker_url", "amqp://guest:pw@localhost//").unwrap_err();
        assert!(e.to_string().contains("broker_url"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        assert!(redis_url("broker_url", "redis://h:6379/0").is_ok());
    }
}
