//! Command tasks: a deployment serves a task name by running a program, configured in TOML
//! (`--config PATH` or `CELERIAC_CONFIG`), without writing Rust:
//!
//! ```toml
//! [tasks."jwql.shared_tasks.shared_tasks.run_calwebb_detector1"]
//! program = "/opt/jwql/bin/python"
//! args = ["run_pipeline.py", "--detector1"]   # fixed arguments, never interpolated
//! cwd = "/opt/jwql/shared_tasks"             # optional
//! env = { CRDS_PATH = "/data/crds" }          # optional
//! ```
//!
//! The task's `{"args": [...], "kwargs": {...}, "id": ...}` goes to the program as JSON on
//! stdin — never through a shell, never into argv. Exit 0: the last non-empty line of stdout
//! is the result (JSON if it parses, else the text). Non-zero exit: FAILURE
//! `subprocess.CalledProcessError(returncode, cmd, stdout_tail, stderr_tail)`, which Python's
//! `get()` re-raises as that exception. The program runs in the task's process group, so time
//! limits and `revoke --terminate` kill it and everything it started. The program does not
//! inherit the worker's Redis URLs (`CELERY_BROKER_URL`, `CELERY_RESULT_BACKEND`,
//! `CELERIAC_LOCK_URL`: they carry passwords); set what it needs in `env`.

use anyhow::{Context, Result, bail};
use celeriac::ExceptionInfo;
use celeriac::task::{Registry, TaskCall, TaskError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How much of stdout/stderr a failure carries.
const TAIL_BYTES: usize = 4096;

/// One command task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandSpec {
    /// Program to run (absolute path, or looked up on PATH).
    pub program: PathBuf,
    /// Fixed arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandConfig {
    /// Task name → command.
    #[serde(default)]
    pub tasks: BTreeMap<String, CommandSpec>,
}

/// Read a config file.
pub(crate) fn load(path: &Path) -> Result<CommandConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading command-task config {}", path.display()))?;
    let cfg: CommandConfig = toml::from_str(&text)
        .with_context(|| format!("parsing command-task config {}", path.display()))?;
    for (name, spec) in &cfg.tasks {
        if spec.program.as_os_str().is_empty() {
            bail!("task {name:?}: program is empty");
        }
    }
    Ok(cfg)
}

/// Register every command task of `cfg` in `registry` (a command task replaces a built-in
/// task of the same name: the deployment's config wins).
pub(crate) fn register(registry: &mut Registry, cfg: CommandConfig) {
    for (name, spec) in cfg.tasks {
        registry.register(&name, move |call: &TaskCall| run(&spec, call));
    }
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Run one command task.
pub(crate) fn run(spec: &CommandSpec, call: &TaskCall) -> Result<Value, TaskError> {
    let mut cmd = Command::new(&spec.program);
    // The program does not inherit the worker's Redis URLs (they carry passwords); a
    // program that needs one gets it explicitly through `env` in the config.
    for var in [
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "CELERIAC_LOCK_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().map_err(|e| TaskError::Exception {
        exc: ExceptionInfo::new(
            "builtins",
            "FileNotFoundError",
            format!("cannot run {}: {e}", spec.program.display()),
        ),
        traceback: None,
    })?;
    let input = serde_json::to_vec(
        &json!({"args": call.args, "kwargs": call.kwargs, "id": call.id, "retries": call.retries}),
    )
    .expect("call serializes");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Feed stdin from a thread so a program that writes a lot before reading cannot deadlock us.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let mut out = Vec::new();
    let _ = stdout.read_to_end(&mut out);
    let err = err_reader.join().unwrap_or_default();
    let _ = feeder.join();
    let status = child
        .wait()
        .map_err(|e| TaskError::exception("builtins", "OSError", e.to_string()))?;
    if status.success() {
        let text = String::from_utf8_lossy(&out);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Ok(serde_json::from_str(last).unwrap_or_else(|_| Value::String(last.to_string())));
    }
    use std::os::unix::process::ExitStatusExt;
    // Python's convention: a negative return code is the signal that killed the process.
    let code = status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0));
    let mut argv = vec![json!(spec.program.display().to_string())];
    argv.extend(spec.args.iter().map(|a| json!(a)));
    Err(TaskError::Exception {
        exc: ExceptionInfo {
            exc_type: "CalledProcessError".into(),
            exc_message: vec![
                json!(code),
                Value::Array(argv),
                json!(tail(&out)),
                json!(tail(&err)),
            ],
            exc_module: "subprocess".into(),
        },
        traceback: Some(format!(
            "Traceback (most recent call last):\nsubprocess.CalledProcessError: Command '{}' returned non-zero exit status {code}.\n{}",
            spec.program.display(),
            tail(&err)
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn arguments_arrive_as_json_on_stdin_not_in_argv() {
        let call = TaskCall {
            args: vec![json!("$(rm -rf /); echo pwned")],
            ..Default::default()
        };
        let v = run(&spec("sh", &["-c", "cat"]), &call).unwrap();
        assert_eq!(v["args"][0], json!("$(rm -rf /); echo pwned"));
    }

    #[test]
    fn non_zero_exit_carries_status_and_stderr_tail() {
        let Err(TaskError::Exception { exc, .. }) = run(
            &spec("sh", &["-c", "echo oops >&2; exit 3"]),
            &TaskCall::default(),
        ) else {
            panic!("expected a failure")
        };
        assert_eq!(
            (exc.exc_module.as_str(), exc.exc_type.as_str()),
            ("subprocess", "CalledProcessError")
        );
        assert_eq!(exc.exc_message[0], json!(3));
        assert_eq!(exc.exc_message[3], json!("oops\n"));
    }

    #[test]
    fn last_stdout_line_is_the_result() {
        let v = run(
            &spec("sh", &["-c", "echo progress; echo '{\"ok\": 1}'"]),
            &TaskCall::default(),
        )
        .unwrap();
        assert_eq!(v, json!({"ok": 1}));
        let v = run(
            &spec("sh", &["-c", "echo plain text"]),
            &TaskCall::default(),
        )
        .unwrap();
        assert_eq!(v, json!("plain text"));
    }

    #[test]
    fn programs_do_not_inherit_redis_urls_unless_configured() {
        let mut s = spec(
            "sh",
            &[
                "-c",
                "echo \"${CELERY_BROKER_URL:-unset}|${CELERIAC_LOCK_URL:-unset}|$X\"",
            ],
        );
        s.env.insert("X".into(), "given".into());
        // The test process may have these set; the program must not see them either way.
        let v = run(&s, &TaskCall::default()).unwrap();
        assert_eq!(v, json!("unset|unset|given"));
    }

    #[test]
    fn config_rejects_unknown_keys() {
        assert!(
            toml::from_str::<CommandConfig>("[tasks.a]\nprogram = \"x\"\nshell = true\n").is_err()
        );
        let cfg: CommandConfig =
            toml::from_str("[tasks.\"a.b\"]\nprogram = \"/bin/true\"\n").unwrap();
        assert!(cfg.tasks.contains_key("a.b"));
    }
}
