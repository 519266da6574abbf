//! How a process names what it reports on: its own host, and the servers it talks to.
//!
//! Both the task library (`celeriac`) and the lock library (`locks`) put a host name on the
//! wire — Celery's `celery@<host>` node names and `gen<pid>@<host>` origins, a lock
//! holder's host — and both print Redis URLs in errors and logs. They know nothing of each
//! other, so the one definition of each lives here, at the bottom of the graph, with no
//! dependencies: a worker and a lock taken in the same process always agree on the host,
//! and a password never reaches a log by one crate's path while the other hides it.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// This machine's host name, as Python's `socket.gethostname()` gives it (the kernel's
/// node name from `/proc/sys/kernel/hostname`), else `$HOSTNAME`, else `localhost`.
///
/// Celery builds `celery@<host>` and `gen<pid>@<host>` from the same value, so names built
/// from this one match what a Python worker on the same host would say.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// What stands in for a hidden password: Celery's mask for `inspect conf` and its banner.
pub const MASK: &str = "********";

/// `url` with every password replaced by [`MASK`], for errors, logs and `inspect conf`.
///
/// Hidden: the password of the user-info part (`redis://:pw@host`, `redis://user:pw@host`;
/// a lone `redis://pw@host` is a password in redis-rs and kombu), and the value of any
/// query parameter whose name says it is one, in any case (`?password=`, redis-rs's
/// `?pass=`, kombu's `sentinel_password=`). A Sentinel URL (`sentinel://a;sentinel://b`)
/// is redacted part by part. The user name stays, as in Celery's masked URLs.
pub fn redact_url(url: &str) -> String {
    if url.contains(';') {
        return url.split(';').map(redact_url).collect::<Vec<_>>().join(";");
    }
    // The query first, so that the user-info step below never mistakes an '@' in a query
    // value for the end of the user info.
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("pass") => {
                        format!("{k}={MASK}")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
        None => url.to_string(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    // The user info ends at the last '@': a password holding a '?' or '/' that was not
    // percent-encoded is still hidden whole (hiding too much beats showing a secret).
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url;
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{MASK}@{host}"),
        None => format!("{scheme}://{MASK}@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_the_user_info_are_hidden_and_the_user_kept() {
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6390/0"),
            "redis://:********@127.0.0.1:6390/0"
        );
        assert_eq!(
            redact_url("redis://bob:s3cret@h/1"),
            "redis://bob:********@h/1"
        );
        assert_eq!(redact_url("redis://s3cret@h/1"), "redis://********@h/1");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }

    #[test]
    fn passwords_in_the_query_are_hidden_whatever_their_case() {
        assert_eq!(
            redact_url("redis://h:6379/0?password=s3cret"),
            "redis://h:6379/0?password=********"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=2&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=2&pass=********"
        );
        assert_eq!(
            redact_url("redis://:a@h/0?protocol=resp3&Password=b"),
            "redis://:********@h/0?protocol=resp3&Password=********"
        );
        let all = redact_url("rediss://u:one@h/0?password=two&ssl_cert_reqs=required");
        assert!(!all.contains("one") && !all.contains("two"), "{all}");
        assert!(all.ends_with("ssl_cert_reqs=required"), "{all}");
    }

    #[test]
    fn an_at_in_a_query_value_or_a_question_mark_in_a_password_leaks_nothing() {
        assert_eq!(
            redact_url("redis://h/0?password=p@ss"),
            "redis://h/0?password=********"
        );
        assert_eq!(redact_url("redis://:pa?ss@h/0"), "redis://:********@h/0");
    }

    #[test]
    fn every_part_of_a_sentinel_url_is_redacted() {
        let s = redact_url(
            "sentinel://:pw@h1:26379;sentinel://h2:26379/0?master_name=m&sentinel_password=x",
        );
        assert_eq!(
            s,
            "sentinel://:********@h1:26379;sentinel://h2:26379/0?master_name=m&sentinel_password=********"
        );
    }

    #[test]
    fn the_host_name_is_never_empty() {
        assert!(!hostname().is_empty());
    }
}
