//! Security and the production profile (issue 6, items 7 and 8).
//!
//! Every Redis here but the TLS one and the bare ACL check runs `deploy/redis.conf` itself:
//! the test copies the file, drops only the host-specific lines (bind address, port, dir,
//! log and pid files, systemd supervision) and includes the rest, so the password, the
//! renamed-away FLUSHALL/FLUSHDB/KEYS/CONFIG, AOF and `noeviction` are exactly what
//! operators deploy.
//! The ACL test enables the `celeriac` user documented in that file, verbatim. The TLS test
//! makes a CA and a server certificate with the `openssl` CLI at test time.

use redis::Commands;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tests::{
    CeleriacWorker, Proc, RedisServer, assert_celery_ping_answered, celeriac, celeriac_bin,
    celery_cli, free_port, py, wait_for_pong, wait_until, which, workspace_root,
};

const T: Duration = Duration::from_secs(60);

/// Directives of `deploy/redis.conf` that name this host's addresses and paths; the test
/// supplies its own (loopback, a free port, a temp dir, no log or pid file).
const HOST_SPECIFIC: &[&str] = &[
    "bind",
    "port",
    "dir",
    "logfile",
    "pidfile",
    "daemonize",
    "supervised",
];

/// The ACL password placeholder in `deploy/redis.conf`'s documented `celeriac` user.
const ACL_PLACEHOLDER: &str = ">CHANGE-ME-celeriac-password";

/// JWQL's worker line (without `-D`), as `deploy/celeriac-worker.service` runs it.
const JWQL_LINE: &str = "-A shared_tasks worker -E -linfo -Ofair -c1 --max-tasks-per-child=1 --prefetch-multiplier 1 --acks-late";

fn read_deploy(name: &str) -> String {
    let path = workspace_root().join("deploy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Non-comment lines of the profile as (directive, rest of the line).
fn directives(conf: &str) -> Vec<(String, String)> {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (d, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (d.to_ascii_lowercase(), rest.trim().to_string())
        })
        .collect()
}

/// The `celeriac` ACL user documented (commented out) in `deploy/redis.conf`, enabled with
/// `password`.
fn documented_acl_user(password: &str) -> String {
    let conf = read_deploy("redis.conf");
    let rules = conf
        .lines()
        .find_map(|l| l.strip_prefix("# user celeriac "))
        .expect("deploy/redis.conf documents the ACL user as a `# user celeriac ...` line");
    assert!(
        rules.contains(ACL_PLACEHOLDER),
        "the documented ACL user has the {ACL_PLACEHOLDER} placeholder: {rules}"
    );
    format!(
        "user celeriac {}",
        rules.replace(ACL_PLACEHOLDER, &format!(">{password}"))
    )
}

fn unique_secret(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

/// A private redis-server running `deploy/redis.conf` (plus `extra_lines`), with the admin
/// password replaced by a fresh one.
struct Profile {
    server: RedisServer,
    admin_password: String,
}

impl Profile {
    fn start(extra_lines: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conf: Vec<String> = read_deploy("redis.conf")
            .lines()
            .filter(|l| {
                let d = l.split_whitespace().next().unwrap_or("");
                !HOST_SPECIFIC.iter().any(|h| d.eq_ignore_ascii_case(h))
            })
            .map(str::to_string)
            .collect();
        conf.extend(extra_lines.iter().cloned());
        let path = dir.path().join("redis-under-test.conf");
        std::fs::write(&path, conf.join("\n") + "\n").expect("write the test profile");
        let admin_password = unique_secret("admin");
        let path = path.to_str().expect("utf-8 temp path").to_string();
        // Later options win: the included profile overrides the harness defaults (no AOF,
        // no snapshots), and only the admin password is set after it.
        let server = RedisServer::start_in(
            dir,
            None,
            &["--include", &path, "--requirepass", &admin_password],
        );
        Profile {
            server,
            admin_password,
        }
    }

    fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}/0", self.server.port)
    }

    /// `redis://:<admin password>@...`: the `default` user, as with a plain `requirepass`.
    fn admin_url(&self) -> String {
        self.url_as("", &self.admin_password)
    }

    fn admin(&self) -> redis::Connection {
        connect(&self.admin_url())
    }
}

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("redis url")
        .get_connection()
        .unwrap_or_else(|e| panic!("connect to {}: {e}", celeriac::url::redact(url)))
}

/// Run `celeriac <args>` against `url`, asserting success; returns stdout.
/// `celeriac call shared_tasks.add` through `url` answers `a + b`.
fn assert_cli_adds(url: &str, a: i64, b: i64) {
    let args = format!("[{a}, {b}]");
    let out = cli(url, &["call", "shared_tasks.add", "-a", &args, "--wait"]);
    assert_eq!(out.trim(), (a + b).to_string());
}

/// The Rust client (the CLI) and a Python client both get results through `url`.
fn assert_both_clients_add(url: &str) {
    assert_cli_adds(url, 2, 3);
    assert_eq!(
        py(url, url, "print(add.delay(20, 22).get(timeout=30))", T).trim(),
        "42"
    );
}

fn cli(url: &str, args: &[&str]) -> String {
    let out = celeriac(args, &[("CELERY_BROKER_URL", url)], T);
    assert!(
        out.success,
        "celeriac {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.code, out.stdout, out.stderr
    );
    out.stdout
}

/// The worker arguments of the systemd unit's `ExecStart=` (after `worker`), with its
/// pid file moved to `pidfile`.
fn unit_worker_args(pidfile: &Path) -> Vec<String> {
    let unit = read_deploy("celeriac-worker.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart= line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "worker")
        .expect("ExecStart runs `celeriac ... worker ...`");
    let mut args: Vec<String> = words[at + 1..].iter().map(|s| s.to_string()).collect();
    let p = args
        .iter()
        .position(|a| a == "--pidfile")
        .expect("ExecStart passes --pidfile");
    args[p + 1] = pidfile.display().to_string();
    args
}

fn meta_status(c: &mut redis::Connection, task_id: &str) -> Option<String> {
    let raw: Option<String> = c.get(format!("celery-task-meta-{task_id}")).ok()?;
    let v: Value = serde_json::from_str(&raw?).ok()?;
    v["status"].as_str().map(str::to_string)
}

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}:\n{info}"))
        .trim()
        .to_string()
}

fn redis_error(c: &mut redis::Connection, args: &[&str]) -> String {
    match redis::cmd(args[0]).arg(&args[1..]).query::<redis::Value>(c) {
        Ok(v) => panic!("{args:?} was allowed and returned {v:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// deploy/ as written
// ---------------------------------------------------------------------------------------

#[test]
fn the_deploy_files_keep_the_promises_their_comments_make() {
    let conf = read_deploy("redis.conf");
    let d = directives(&conf);
    let one = |name: &str| -> String {
        let v: Vec<&String> = d
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(v.len(), 1, "redis.conf sets {name} exactly once: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("appendonly"), "yes");
    assert_eq!(one("appendfsync"), "everysec");
    assert!(
        !one("save").trim_matches('"').is_empty(),
        "RDB snapshots as well"
    );
    assert_eq!(
        one("maxmemory-policy"),
        "noeviction",
        "a queue never evicts"
    );
    assert_eq!(one("protected-mode"), "yes");
    assert!(one("requirepass").starts_with("CHANGE-ME"));
    assert!(one("tcp-keepalive").parse::<u32>().unwrap() > 0);
    let bind = one("bind");
    assert!(
        !bind
            .split_whitespace()
            .any(|a| a == "*" || a == "0.0.0.0" || a == "::"),
        "binds to chosen addresses, never all of them: {bind}"
    );
    for cmd in ["FLUSHALL", "FLUSHDB", "KEYS", "CONFIG"] {
        assert!(
            d.iter()
                .any(|(k, v)| k == "rename-command" && *v == format!("{cmd} \"\"")),
            "{cmd} renamed away"
        );
    }
    documented_acl_user("x");

    let unit = read_deploy("celeriac-worker.service");
    let keys: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| {
        keys.iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("the unit sets {k}="))
    };
    assert!(
        get("ExecStart").contains(&format!(
            "celeriac {JWQL_LINE} --pidfile {}",
            get("PIDFile")
        )),
        "ExecStart runs JWQL's line with the unit's PIDFile: {}",
        get("ExecStart")
    );
    assert_eq!(get("Restart"), "on-failure");
    assert_eq!(get("KillSignal"), "SIGTERM");
    assert_eq!(get("KillMode"), "mixed");
    assert!(get("EnvironmentFile").starts_with('/'));
    assert!(
        get("TimeoutStopSec").ends_with('h'),
        "hours for a task to finish"
    );
}

// ---------------------------------------------------------------------------------------
// (a) the production profile
// ---------------------------------------------------------------------------------------

#[test]
fn celeriac_works_fully_against_the_production_redis_profile() {
    let p = Profile::start(&[]);
    let url = p.admin_url();
    let mut admin = p.admin();
    // The profile is in force: AOF on, no eviction, the dangerous commands are gone.
    assert_eq!(info_field(&mut admin, "persistence", "aof_enabled"), "1");
    assert_eq!(
        info_field(&mut admin, "memory", "maxmemory_policy"),
        "noeviction"
    );
    for cmd in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["KEYS", "*"],
        &["CONFIG", "GET", "*"],
    ] {
        let e = redis_error(&mut admin, cmd);
        assert!(e.contains("unknown command"), "{cmd:?}: {e}");
    }

    // The worker exactly as the systemd unit starts it.
    let run = tempfile::tempdir().unwrap();
    let pidfile = run.path().join("worker.pid");
    let args = unit_worker_args(&pidfile);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut w = CeleriacWorker::start(&url, &args);
    let pid = std::fs::read_to_string(&pidfile).expect("the worker wrote its pid file");
    assert_eq!(pid.trim(), w.proc_.pid().to_string());

    // Rust and Python clients, both CLIs' remote control.
    assert_both_clients_add(&url);
    let ping = cli(&url, &["inspect", "ping", "--json"]);
    assert!(ping.contains(&w.node), "{ping}");
    assert_celery_ping_answered(&url, &w.node, T);

    // Operator views over a task parked on a queue nobody consumes, then purge it.
    let parked = cli(
        &url,
        &["call", "shared_tasks.add", "-a", "[1, 1]", "-q", "parked"],
    );
    let parked = parked.trim();
    let jobs = cli(&url, &["jobs", "-q", "parked", "--json"]);
    assert!(jobs.contains(parked), "jobs lists the parked task: {jobs}");
    let summary: Value = serde_json::from_str(&cli(&url, &["summary", "--json"])).unwrap();
    assert!(summary.to_string().contains(&w.node), "{summary}");
    let purged = cli(&url, &["purge", "-f", "-Q", "parked"]);
    assert!(purged.contains("purged 1"), "{purged}");
    let jobs = cli(&url, &["jobs", "-q", "parked", "--json"]);
    assert!(!jobs.contains(parked), "purged: {jobs}");

    // A poison message lands in the dead-letter list; the worker carries on.
    let _: i64 = admin.lpush("celery", "not a message").unwrap();
    wait_until(Duration::from_secs(10), "the dead letter", || {
        (admin.llen::<_, usize>("celeriac.dead").ok()? == 1).then_some(())
    });
    let dead = cli(&url, &["dead", "list"]);
    assert!(dead.contains("envelope is not JSON"), "{dead}");
    assert_eq!(
        cli(
            &url,
            &["call", "shared_tasks.add", "-a", "[4, 5]", "--wait"]
        )
        .trim(),
        "9"
    );

    // `systemctl stop`: SIGTERM while a task runs; it finishes, the worker exits 0 and
    // removes its pid file.
    let id = cli(&url, &["call", "shared_tasks.sleep", "-a", "[2]"]);
    let id = id.trim();
    w.proc_
        .wait_for_output(&format!("{id}] received"), Duration::from_secs(10));
    w.proc_.signal(libc::SIGTERM);
    let status = w.proc_.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "warm stop exits 0: {status:?}");
    assert_eq!(meta_status(&mut admin, id).as_deref(), Some("SUCCESS"));
    assert!(!pidfile.exists(), "pid file removed on exit");
}

// ---------------------------------------------------------------------------------------
// (b) passwords
// ---------------------------------------------------------------------------------------

#[test]
fn passwords_never_appear_in_logs_inspect_conf_or_errors() {
    let p = Profile::start(&[]);
    let secret = p.admin_password.clone();
    let url = p.admin_url();
    let redacted = format!("redis://:********@127.0.0.1:{}/0", p.server.port);
    let mut admin = p.admin();
    let mut w = CeleriacWorker::start(&url, &["-ldebug", "-E", "-c1", "--acks-late"]);
    assert_cli_adds(&url, 2, 3);

    // Cut every connection the worker has: it reconnects (and says so in its log).
    for ty in ["normal", "pubsub"] {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", ty])
            .query(&mut admin)
            .unwrap();
    }
    assert_cli_adds(&url, 3, 4);

    let conf = cli(&url, &["inspect", "conf", "--json"]);
    assert!(!conf.contains(&secret), "celeriac inspect conf:\n{conf}");
    let conf: Value = serde_json::from_str(&conf).unwrap();
    assert_eq!(conf[&w.node]["broker_url"], redacted.as_str(), "{conf}");
    assert_eq!(conf[&w.node]["result_backend"], redacted.as_str(), "{conf}");

    let out = celery_cli(&url, &["inspect", "conf", "-d", &w.node], T);
    assert!(
        out.success,
        "celery inspect conf:\n{}\n{}",
        out.stdout, out.stderr
    );
    assert!(
        !out.stdout.contains(&secret) && !out.stderr.contains(&secret),
        "celery inspect conf:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains(&redacted), "{}", out.stdout);

    // A refused password is not echoed back in the error.
    let wrong = unique_secret("wrong");
    let bad_url = p.url_as("", &wrong);
    let out = celeriac(
        &["call", "shared_tasks.add", "-a", "[1, 1]", "--wait"],
        &[("CELERY_BROKER_URL", &bad_url)],
        T,
    );
    assert!(!out.success, "a wrong password is an error");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !said.contains(&wrong),
        "the error echoes the password:\n{said}"
    );
    assert!(
        said.contains("WRONGPASS") || said.to_lowercase().contains("auth"),
        "the error says authentication failed:\n{said}"
    );

    w.proc_.signal(libc::SIGTERM);
    w.proc_.wait_exit(Duration::from_secs(30));
    let log = w.proc_.output();
    assert!(
        log.contains("DEBUG") && log.contains("********"),
        "a debug log naming the redacted URL:\n{log}"
    );
    assert!(
        !log.contains(&secret),
        "the worker logged the password:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// (c) ACL
// ---------------------------------------------------------------------------------------

#[test]
fn the_documented_acl_user_is_all_a_worker_and_its_clients_need() {
    let pw = unique_secret("acl");
    let p = Profile::start(&[documented_acl_user(&pw)]);
    let url = p.url_as("celeriac", &pw);
    let mut admin = p.admin();
    let jwql: Vec<&str> = JWQL_LINE.split_whitespace().skip(3).collect();
    let w = CeleriacWorker::start(&url, &jwql);

    assert_both_clients_add(&url);
    let failed = cli(&url, &["call", "shared_tasks.fail", "-a", "[\"boom\"]"]);
    assert_celery_ping_answered(&url, &w.node, T);
    assert!(cli(&url, &["inspect", "ping"]).contains(&w.node));
    wait_until(Duration::from_secs(10), "the failure to be stored", || {
        (meta_status(&mut admin, failed.trim()).as_deref() == Some("FAILURE")).then_some(())
    });
    let failed_jobs = cli(&url, &["jobs", "--state", "failed", "--json"]);
    assert!(failed_jobs.contains(failed.trim()), "{failed_jobs}");
    cli(&url, &["summary"]);
    cli(&url, &["dead", "list"]);
    cli(&url, &["purge", "-f"]);

    // Nothing was denied along the way (ACL LOG records every refused command, key and
    // channel, even ones a client shrugged off).
    let denials: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    assert!(
        denials.is_empty(),
        "the ACL user was refused something:\n{denials:#?}"
    );

    // ...and everything else is out of reach.
    let mut c = connect(&url);
    for probe in [
        &["GET", "someone-elses-key"][..],
        &["PUBLISH", "other-channel", "x"],
        &["SHUTDOWN"],
        &["SWAPDB", "0", "1"],
        &["EVAL", "return 1", "0"],
        &["SCRIPT", "FLUSH"],
        &["ACL", "LIST"],
    ] {
        let e = redis_error(&mut c, probe);
        assert!(e.to_lowercase().contains("noperm"), "{probe:?}: {e}");
    }
}

#[test]
fn the_documented_acl_alone_denies_flushall_flushdb_keys_and_config() {
    // Without the profile's rename-command lines: the ACL must refuse these by itself.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl-only.conf");
    let pw = unique_secret("acl");
    std::fs::write(&path, documented_acl_user(&pw) + "\n").unwrap();
    let server = RedisServer::start_with(&["--include", path.to_str().unwrap()]);
    let mut c = connect(&format!(
        "redis://celeriac:{pw}@127.0.0.1:{}/0",
        server.port
    ));
    for probe in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["KEYS", "*"],
        &["CONFIG", "GET", "*"],
        &["CONFIG", "SET", "appendonly", "no"],
    ] {
        let e = redis_error(&mut c, probe);
        assert!(e.to_lowercase().contains("noperm"), "{probe:?}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// (d) TLS
// ---------------------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let bin = which("openssl").unwrap_or_else(|| {
        panic!("openssl not found on PATH. Install it with `apt-get install -y openssl`.")
    });
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>.pem`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=celeriac test {name}"),
        ],
    );
    dir.join(pem)
}

/// A server certificate for 127.0.0.1 signed by CA `ca` (`server.pem`, `server.key`).
fn make_server_cert(dir: &Path, ca: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    (dir.join("server.pem"), dir.join("server.key"))
}

#[test]
fn tls_with_a_ca_file_serves_tasks_and_a_wrong_ca_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_ca(certs.path(), "ca");
    let other_ca = make_ca(certs.path(), "other-ca");
    let (cert, key) = make_server_cert(certs.path(), "ca");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let bin = which("redis-server").unwrap_or_else(|| {
        panic!("redis-server not found on PATH. Install it with `apt-get install -y redis-server`.")
    });
    let mut cmd = Command::new(bin);
    cmd.args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(data.path())
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .args(["--tls-auth-clients", "no"]);
    let server = Proc::spawn(cmd);
    wait_for_pong(
        "redis-server to accept TLS",
        &[
            "--tls",
            "--cacert",
            ca.to_str().expect("utf-8 temp path"),
            "-p",
            &port.to_string(),
        ],
    );
    // kombu's spelling, so the same URL serves Python clients and celeriac.
    let url = format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
        ca.display()
    );
    let w = CeleriacWorker::start(&url, &["-c1", "--acks-late"]);
    assert_both_clients_add(&url);
    assert!(cli(&url, &["inspect", "ping"]).contains(&w.node));

    // A CA that did not sign the server's certificate: refused, clearly, at once.
    let wrong = format!(
        "rediss://127.0.0.1:{port}/0?ssl_ca_certs={}",
        other_ca.display()
    );
    let out = celeriac(
        &["call", "shared_tasks.add", "-a", "[1, 1]", "--wait"],
        &[("CELERY_BROKER_URL", &wrong)],
        T,
    );
    assert!(!out.success, "a wrong CA must fail:\n{}", out.stdout);
    assert!(
        out.stderr.contains("certificate"),
        "the error names the certificate problem:\n{}",
        out.stderr
    );
    let mut refused = Command::new(celeriac_bin());
    refused
        .args(["worker", "-c1"])
        .env("CELERY_BROKER_URL", &wrong)
        .env_remove("CELERY_RESULT_BACKEND");
    let mut refused = Proc::spawn(refused);
    let status = refused.wait_exit(Duration::from_secs(20));
    assert!(
        !status.success(),
        "a worker with a wrong CA must exit non-zero"
    );
    assert!(
        refused.output().contains("certificate"),
        "{}",
        refused.output()
    );

    // A CA file that does not exist is named in the error.
    let missing = format!("rediss://127.0.0.1:{port}/0?ssl_ca_certs=/nonexistent/ca.pem");
    let out = celeriac(
        &["call", "shared_tasks.add", "-a", "[1, 1]"],
        &[("CELERY_BROKER_URL", &missing)],
        T,
    );
    assert!(
        !out.success && out.stderr.contains("/nonexistent/ca.pem"),
        "{}",
        out.stderr
    );
    drop(server);
}

// ---------------------------------------------------------------------------------------
// (e) message size
// ---------------------------------------------------------------------------------------

#[test]
fn a_message_over_max_message_size_is_dead_lettered_and_the_worker_keeps_serving() {
    let p = Profile::start(&[]);
    let url = p.admin_url();
    let mut admin = p.admin();
    let mut w = CeleriacWorker::start(&url, &["-c1", "--acks-late", "--max-message-size", "4096"]);
    let mut big = celeriac::protocol::TaskMessage::new(
        "shared_tasks.echo",
        vec!["x".repeat(10_000).into()],
        Default::default(),
    );
    big.headers.argsrepr = Some("('xxx...',)".into());
    let raw = big.to_envelope("celery", 0).encode();
    assert!(raw.len() > 4096);
    let _: i64 = admin.lpush("celery", &raw).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the big message to be dead-lettered",
        || (admin.llen::<_, usize>("celeriac.dead").ok()? == 1).then_some(()),
    );
    let letter: String = admin.lindex("celeriac.dead", 0).unwrap();
    let letter: Value = serde_json::from_str(&letter).unwrap();
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("exceeds the maximum of 4096"),
        "{letter}"
    );
    let kept = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        letter["payload_b64"].as_str().unwrap(),
    )
    .unwrap();
    assert!(kept == raw, "the dead letter keeps the original bytes");
    let listed = cli(&url, &["dead", "list"]);
    assert!(listed.contains("exceeds the maximum"), "{listed}");

    assert_cli_adds(&url, 2, 3);
    assert!(
        w.proc_.child.try_wait().unwrap().is_none(),
        "the worker is still running"
    );
    // It never ran; its sender's get() is woken with the refusal instead of waiting forever.
    assert_eq!(
        meta_status(&mut admin, &big.headers.id).as_deref(),
        Some("FAILURE"),
        "refused, not run"
    );
}
