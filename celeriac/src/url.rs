//! Broker and backend URLs: parsing into redis-rs connection info, the database number
//! (part of every fanout channel name), and redaction for logs and `inspect conf`.

use redis::IntoConnectionInfo;

/// Why a URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// redis-rs could not parse it.
    #[error("invalid Redis URL {url}: {source}")]
    Invalid {
        /// The redacted URL.
        url: String,
        /// The parse error.
        source: redis::RedisError,
    },
}

/// A parsed Redis URL.
#[derive(Debug, Clone)]
pub struct RedisUrl {
    /// The URL as given (may contain a password; never log it, use [`RedisUrl::redacted`]).
    pub raw: String,
    /// redis-rs connection info.
    pub info: redis::ConnectionInfo,
}

impl RedisUrl {
    /// Parse `redis://[user:pass@]host[:port][/db]`, `rediss://...` or `unix://...`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let info = url
            .into_connection_info()
            .map_err(|source| UrlError::Invalid {
                url: redact(url),
                source,
            })?;
        Ok(RedisUrl {
            raw: url.to_string(),
            info,
        })
    }

    /// Database number (`/{db}.` in fanout channel names).
    pub fn db(&self) -> i64 {
        self.info.redis_settings().db()
    }

    /// The URL with any password replaced by `********`, as Celery shows `broker_url`.
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }

    /// A redis-rs client for this URL.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.info.clone())
    }
}

/// Replace the password part of a URL with `********` (`redis://:********@host:6379/0`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = auth.split_once(':').map_or("", |(u, _)| u);
    if auth.contains(':') {
        format!("{scheme}://{user}:********@{host}")
    } else {
        // `redis://secret@host` means password-only in redis-rs and kombu.
        format!("{scheme}://********@{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:6390/0"),
            "redis://:********@127.0.0.1:6390/0"
        );
        assert_eq!(redact("redis://bob:s3cret@h/1"), "redis://bob:********@h/1");
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }

    #[test]
    fn db_comes_from_the_path() {
        assert_eq!(RedisUrl::parse("redis://127.0.0.1:6379/4").unwrap().db(), 4);
        assert_eq!(RedisUrl::parse("redis://127.0.0.1:6379").unwrap().db(), 0);
    }
}
