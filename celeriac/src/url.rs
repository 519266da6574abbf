//! Broker and backend URLs: parsing into redis-rs connection info, the database number
//! (part of every fanout channel name), Redis Sentinel groups, and redaction for logs and
//! `inspect conf`.
//!
//! Accepted forms: `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS),
//! `unix:///path`, and kombu's Sentinel form
//! `sentinel://host:port;sentinel://host:port/db?master_name=mymaster` (a password in any
//! part authenticates to the master; `sentinel_password=` in the query authenticates to the
//! sentinels).
//!
//! TLS (`rediss://`) takes kombu's query options: `ssl_ca_certs=<PEM file>` (trust this CA
//! instead of the system store), `ssl_certfile=`/`ssl_keyfile=` (client certificate), and
//! `ssl_cert_reqs=none` (do not verify the server; for tests only).

use redis::IntoConnectionInfo;

/// Why a URL was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// redis-rs could not parse it.
    #[error("invalid Redis URL {url}: {source}")]
    Invalid {
        /// The redacted URL.
        url: String,
        /// The parse error.
        source: redis::RedisError,
    },
    /// A Sentinel URL without `master_name`.
    #[error("Sentinel URL {0} needs ?master_name=<name> (kombu's transport option master_name)")]
    NoMasterName(String),
}

/// Where the Redis is.
#[derive(Debug, Clone)]
pub enum Target {
    /// One server.
    Direct,
    /// A Sentinel group: ask the sentinels where the master is, on every (re)connect.
    Sentinel {
        /// Sentinel addresses.
        sentinels: Vec<(String, u16)>,
        /// The monitored master's name.
        master: String,
        /// Password for the sentinels themselves.
        sentinel_password: Option<String>,
    },
}

/// TLS files from the URL's query.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA bundle (PEM).
    pub ca_certs: Option<std::path::PathBuf>,
    /// Client certificate (PEM).
    pub certfile: Option<std::path::PathBuf>,
    /// Client key (PEM).
    pub keyfile: Option<std::path::PathBuf>,
}

/// A parsed Redis URL.
#[derive(Debug, Clone)]
pub struct RedisUrl {
    /// The URL as given (may contain a password; never log it, use [`RedisUrl::redacted`]).
    pub raw: String,
    /// redis-rs connection info (for Sentinel: db, credentials and TLS of the master; the
    /// address is resolved at connect time).
    pub info: redis::ConnectionInfo,
    /// Direct or Sentinel.
    pub target: Target,
    /// TLS files, when given.
    pub tls: TlsFiles,
}

/// `%2F` → `/` and the like (kombu unquotes query values).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Take kombu's `ssl_*` options out of a URL's query (redis-rs does not know them);
/// `ssl_cert_reqs=none` becomes redis-rs's `#insecure`.
fn split_tls(url: &str) -> (String, TlsFiles) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), TlsFiles::default());
    };
    let mut tls = TlsFiles::default();
    let mut keep = Vec::new();
    let mut insecure = false;
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("ssl_ca_certs", v)) => tls.ca_certs = Some(percent_decode(v).into()),
            Some(("ssl_certfile", v)) => tls.certfile = Some(percent_decode(v).into()),
            Some(("ssl_keyfile", v)) => tls.keyfile = Some(percent_decode(v).into()),
            Some(("ssl_cert_reqs", v)) => {
                insecure = v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("cert_none")
            }
            _ => keep.push(kv),
        }
    }
    let mut out = base.to_string();
    if !keep.is_empty() {
        out = format!("{out}?{}", keep.join("&"));
    }
    if insecure {
        out.push_str("#insecure");
    }
    (out, tls)
}

impl RedisUrl {
    /// Parse a URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.starts_with("sentinel://") {
            return Self::parse_sentinel(url);
        }
        let (plain, tls) = split_tls(url);
        let info = plain
            .as_str()
            .into_connection_info()
            .map_err(|source| UrlError::Invalid {
                url: redact(url),
                source,
            })?;
        Ok(RedisUrl {
            raw: url.to_string(),
            info,
            target: Target::Direct,
            tls,
        })
    }

    fn parse_sentinel(url: &str) -> Result<Self, UrlError> {
        let (hosts_part, query) = url.split_once('?').unwrap_or((url, ""));
        let param = |k: &str| {
            query.split('&').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        let master = param("master_name").ok_or_else(|| UrlError::NoMasterName(redact(url)))?;
        let mut sentinels = Vec::new();
        let mut first_info: Option<redis::ConnectionInfo> = None;
        for part in hosts_part.split(';').filter(|p| !p.is_empty()) {
            let as_redis = part.replacen("sentinel://", "redis://", 1);
            let info =
                as_redis
                    .as_str()
                    .into_connection_info()
                    .map_err(|source| UrlError::Invalid {
                        url: redact(url),
                        source,
                    })?;
            if let redis::ConnectionAddr::Tcp(h, p) = info.addr() {
                sentinels.push((h.clone(), *p));
            }
            let keep = first_info.as_ref().is_none_or(|f| {
                f.redis_settings().password().is_none()
                    && info.redis_settings().password().is_some()
            });
            if keep {
                first_info = Some(info);
            }
        }
        let info = first_info.ok_or_else(|| UrlError::NoMasterName(redact(url)))?;
        Ok(RedisUrl {
            raw: url.to_string(),
            info,
            target: Target::Sentinel {
                sentinels,
                master,
                sentinel_password: param("sentinel_password"),
            },
            tls: TlsFiles::default(),
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

    /// A redis-rs client for the server this URL names now (for Sentinel: the current master).
    pub async fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.target {
            Target::Direct => self.open(self.info.clone()),
            Target::Sentinel {
                sentinels,
                master,
                sentinel_password,
            } => {
                let mut last_err = None;
                for (host, port) in sentinels {
                    match ask_sentinel(host, *port, master, sentinel_password.as_deref()).await {
                        Ok((mh, mp)) => {
                            let info = self
                                .info
                                .clone()
                                .set_addr(redis::ConnectionAddr::Tcp(mh, mp));
                            return self.open(info);
                        }
                        Err(e) => last_err = Some(e),
                    }
                }
                Err(last_err.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "no sentinel configured"))
                }))
            }
        }
    }
}

impl RedisUrl {
    fn open(&self, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
        install_crypto_provider();
        let t = &self.tls;
        if t.ca_certs.is_none() && t.certfile.is_none() {
            return redis::Client::open(info);
        }
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot read TLS file",
                    format!("{}: {e}", p.display()),
                ))
            })
        };
        let root_cert = t.ca_certs.as_deref().map(read).transpose()?;
        let client_tls = match (&t.certfile, &t.keyfile) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                client_cert: read(c)?,
                client_key: read(k)?,
            }),
            (None, None) => None,
            _ => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "a client certificate needs both ssl_certfile and ssl_keyfile",
                )));
            }
        };
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    }
}

/// rustls needs one process-wide crypto provider; celeriac uses ring.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

async fn ask_sentinel(
    host: &str,
    port: u16,
    master: &str,
    password: Option<&str>,
) -> redis::RedisResult<(String, u16)> {
    let mut info = format!("redis://{host}:{port}")
        .as_str()
        .into_connection_info()?;
    if let Some(pw) = password {
        let settings = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
        .set_response_timeout(Some(std::time::Duration::from_secs(2)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut conn)
        .await?;
    addr.ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Io, "sentinel does not know the master"))
    })
}

/// `url` with every password hidden (user info, password-like query parameters, each part
/// of a Sentinel URL), masked as Celery masks `broker_url`.
pub use naming::redact_url as redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kombu_ssl_options_are_understood() {
        let u = RedisUrl::parse(
            "rediss://:pw@127.0.0.1:6380/2?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
        )
        .unwrap();
        assert_eq!(
            u.tls.ca_certs.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(u.db(), 2);
        assert!(matches!(
            u.info.addr(),
            redis::ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        ));
        let u = RedisUrl::parse("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none").unwrap();
        assert!(matches!(
            u.info.addr(),
            redis::ConnectionAddr::TcpTls { insecure: true, .. }
        ));
    }

    #[test]
    fn ssl_paths_are_unquoted_like_kombu() {
        let u = RedisUrl::parse("rediss://h:6380/0?ssl_ca_certs=%2Fetc%2Fredis%20ca.pem").unwrap();
        assert_eq!(
            u.tls.ca_certs.as_deref(),
            Some(std::path::Path::new("/etc/redis ca.pem"))
        );
    }

    #[test]
    fn db_comes_from_the_path() {
        assert_eq!(RedisUrl::parse("redis://127.0.0.1:6379/4").unwrap().db(), 4);
        assert_eq!(RedisUrl::parse("redis://127.0.0.1:6379").unwrap().db(), 0);
    }

    #[test]
    fn sentinel_urls_list_every_sentinel_and_need_a_master_name() {
        let u = RedisUrl::parse(
            "sentinel://:pw@127.0.0.1:26379;sentinel://127.0.0.1:26380/2?master_name=mymaster",
        )
        .unwrap();
        let Target::Sentinel {
            sentinels, master, ..
        } = &u.target
        else {
            panic!()
        };
        assert_eq!(sentinels.len(), 2);
        assert_eq!(master, "mymaster");
        assert_eq!(u.info.redis_settings().password(), Some("pw"));
        assert!(RedisUrl::parse("sentinel://127.0.0.1:26379").is_err());
    }
}
