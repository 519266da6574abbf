//! Parse and validate the arguments of `#[only_one(...)]`.
//!
//! Accepted: `key = "fmt"` (required), `timeout = <secs> | None`, `policy = skip | wait |
//! error` (ident or string), `wait_timeout = <secs>` (only with `policy = wait`),
//! `purpose = "..."`, `watchdog = <bool>`, `fair = <bool>`, `client = <expr>`.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitStr};

/// What the generated code does when the lock is busy (`policy = skip | wait | error`);
/// expanded to the same-named `locks::__private::Policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Skip,
    Wait,
    Error,
}

/// The attribute's arguments after validation, with defaults filled in (what `expand`
/// needs, and nothing it would have to check again).
pub(crate) struct Args {
    pub key: LitStr,
    /// Placeholders used in the key, with the span of the key literal.
    pub key_args: Vec<String>,
    pub timeout_ms: u64,
    pub policy: Policy,
    pub wait_ms: Option<u64>,
    pub purpose: Option<LitStr>,
    pub watchdog: bool,
    pub fair: bool,
    pub client: Option<Expr>,
}

/// Default TTL: long enough that renewal every TTL/3 costs nothing, short enough that a
/// killed holder frees the lock within half a minute (JWQL's TTL-less locks never did).
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 30_000;

pub(crate) fn parse(attr: TokenStream) -> syn::Result<Args> {
    let mut key: Option<LitStr> = None;
    let mut timeout: Option<(u64, Span)> = None;
    let mut policy: Option<(Policy, Span)> = None;
    let mut wait: Option<(u64, Span)> = None;
    let mut purpose: Option<LitStr> = None;
    let mut watchdog: Option<bool> = None;
    let mut fair: Option<bool> = None;
    let mut client: Option<Expr> = None;
    let mut seen: Vec<String> = Vec::new();

    let parser = syn::meta::parser(|meta| {
        let ident = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        if seen.contains(&ident) {
            return Err(meta.error(format!("duplicate `{ident}` argument")));
        }
        let span = meta.path.span();
        match ident.as_str() {
            "key" => {
                let lit: LitStr = meta.value()?.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`key` must be a string literal, e.g. key = \"calibrate:{file}\"",
                    )
                })?;
                key = Some(lit);
            }
            "timeout" => {
                let e: Expr = meta.value()?.parse()?;
                timeout = Some((seconds_or_none(&e, "timeout")?, span));
            }
            "wait_timeout" => {
                let e: Expr = meta.value()?.parse()?;
                let ms = seconds_or_none(&e, "wait_timeout")?;
                wait = Some((ms, e.span()));
            }
            "policy" => {
                let e: Expr = meta.value()?.parse()?;
                let word = match &e {
                    Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()),
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => Some(s.value()),
                    _ => None,
                };
                let p = match word.as_deref() {
                    Some("skip") => Policy::Skip,
                    Some("wait") => Policy::Wait,
                    Some("error") => Policy::Error,
                    _ => {
                        return Err(syn::Error::new(
                            e.span(),
                            "unknown policy: expected `skip`, `wait` or `error`",
                        ));
                    }
                };
                policy = Some((p, e.span()));
            }
            "purpose" => purpose = Some(meta.value()?.parse()?),
            "watchdog" => watchdog = Some(bool_value(&meta.value()?.parse()?, "watchdog")?),
            "fair" => fair = Some(bool_value(&meta.value()?.parse()?, "fair")?),
            "client" => client = Some(meta.value()?.parse()?),
            _ => {
                return Err(meta.error(
                    "unknown argument: expected one of `key`, `timeout`, `policy`, \
                     `wait_timeout`, `purpose`, `watchdog`, `fair`, `client`",
                ));
            }
        }
        seen.push(ident);
        Ok(())
    });
    syn::parse::Parser::parse2(parser, attr)?;

    let Some(key) = key else {
        return Err(syn::Error::new(
            Span::call_site(),
            "missing `key`: #[only_one(key = \"...\")] names the lock, e.g. key = \"dark_monitor\"",
        ));
    };
    let policy_v = policy.map(|p| p.0).unwrap_or(Policy::Skip);
    if let Some((_, span)) = wait
        && policy_v != Policy::Wait
    {
        return Err(syn::Error::new(
            span,
            "`wait_timeout` only applies with `policy = wait`",
        ));
    }
    let key_args = placeholders(&key)?;
    Ok(Args {
        key_args,
        key,
        timeout_ms: timeout.map(|t| t.0).unwrap_or(DEFAULT_TIMEOUT_MS),
        policy: policy_v,
        wait_ms: wait.map(|w| w.0),
        purpose,
        watchdog: watchdog.unwrap_or(true),
        fair: fair.unwrap_or(false),
        client,
    })
}

/// Seconds (integer or float literal) as milliseconds; `None` as 0 (no expiry / no
/// deadline).
fn seconds_or_none(e: &Expr, what: &str) -> syn::Result<u64> {
    let secs = match e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<u64>()? as f64,
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>()?,
        Expr::Path(p) if p.path.is_ident("None") => return Ok(0),
        _ => {
            return Err(syn::Error::new(
                e.span(),
                format!("`{what}` must be a number of seconds (e.g. {what} = 30 or 2.5) or None"),
            ));
        }
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(syn::Error::new(
            e.span(),
            format!("`{what}` must be greater than zero"),
        ));
    }
    Ok(((secs * 1000.0).round() as u64).max(1))
}

fn bool_value(e: &Expr, what: &str) -> syn::Result<bool> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        _ => Err(syn::Error::new(
            e.span(),
            format!("`{what}` must be `true` or `false`"),
        )),
    }
}

/// The names used as `{name}` / `{name:spec}` in the key; positional `{}` is rejected
/// because a key must say which argument it is built from.
fn placeholders(key: &LitStr) -> syn::Result<Vec<String>> {
    let s = key.value();
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut inner = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    inner.push(c);
                }
                let name = inner.split(':').next().unwrap_or("").trim().to_string();
                let ok = !name.is_empty()
                    && name
                        .chars()
                        .next()
                        .is_some_and(|c| c == '_' || c.is_alphabetic())
                    && name.chars().all(|c| c == '_' || c.is_alphanumeric());
                if !ok {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                            "key placeholder `{{{inner}}}` must name an argument of the function, \
                             e.g. \"calibrate:{{file}}\""
                        ),
                    ));
                }
                out.push(name);
            }
            _ => {}
        }
    }
    Ok(out)
}
