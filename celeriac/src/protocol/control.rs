//! Remote-control (pidbox) payloads: the request body a control client publishes on the
//! `celery.pidbox` fanout and the reply a worker pushes to the client's reply queue
//! (`kombu/pidbox.py` `Mailbox._publish`, `Node.dispatch`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a reply goes: exchange `reply.celery.pidbox`, routing key = the client's oid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// Reply exchange (`reply.celery.pidbox`).
    pub exchange: String,
    /// The client's oid.
    pub routing_key: String,
}

/// A control request body. Key order as kombu emits it; `ticket`/`reply_to` only when a
/// reply is wanted (casts have neither).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// Command name (`ping`, `shutdown`, `revoke`, ...).
    pub method: String,
    /// Keyword arguments of the command.
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// Node names addressed, or null for all.
    #[serde(default)]
    pub destination: Option<Vec<String>>,
    /// Node-name pattern.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `glob` or `pcre`, used with `pattern`.
    #[serde(default)]
    pub matcher: Option<String>,
    /// Reply ticket (uuid4), for calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Reply destination, for calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
}

impl ControlRequest {
    /// Whether a worker called `node` must handle this request (`kombu.pidbox.Node.handle_message`):
    /// named in `destination` when one is given; else matching `pattern` with `matcher`
    /// (`glob`, or `pcre` = Python's `re.match`) when both are given; else everyone.
    pub fn addresses(&self, node: &str) -> bool {
        let dest = self.destination.as_deref().filter(|d| !d.is_empty());
        let pattern = self.pattern.as_deref().filter(|p| !p.is_empty());
        let matcher = self.matcher.as_deref().filter(|m| !m.is_empty());
        match (dest, pattern, matcher) {
            (Some(d), _, _) => d.iter().any(|n| n == node),
            (None, Some(p), Some("pcre")) => regex_match(p, node),
            (None, Some(p), Some(_)) => glob_match(p, node),
            _ => true,
        }
    }
}

/// Python's `re.match(pattern, text)`: a match anchored at the start (not the end). A pattern
/// the regex engine cannot compile matches nothing (Python would raise; the request is then
/// answered by nobody).
fn regex_match(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})")).is_ok_and(|re| re.is_match(text))
}

/// Shell-style glob (`*`, `?`, `[...]`), as Python's `fnmatch` used by kombu's `glob` matcher.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some(('[', rest)) => {
                let Some(end) = rest.iter().position(|&c| c == ']') else {
                    return t.first() == Some(&'[') && go(rest, &t[1..]);
                };
                let (class, after) = (&rest[..end], &rest[end + 1..]);
                let Some(&c) = t.first() else { return false };
                let (neg, class) = match class.split_first() {
                    Some(('!', cl)) => (true, cl),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(after, &t[1..])
            }
            Some((&c, rest)) => t.first() == Some(&c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(dest: Option<Vec<&str>>, pattern: Option<&str>) -> ControlRequest {
        ControlRequest {
            method: "ping".into(),
            arguments: Map::new(),
            destination: dest.map(|d| d.into_iter().map(String::from).collect()),
            pattern: pattern.map(String::from),
            matcher: pattern.map(|_| "glob".to_string()),
            ticket: None,
            reply_to: None,
        }
    }

    #[test]
    fn destination_and_pattern_select_nodes() {
        assert!(req(None, None).addresses("w1@vm"));
        assert!(req(Some(vec!["w1@vm"]), None).addresses("w1@vm"));
        assert!(!req(Some(vec!["other@vm"]), None).addresses("w1@vm"));
        assert!(req(None, Some("w*@vm")).addresses("w1@vm"));
        assert!(!req(None, Some("x*")).addresses("w1@vm"));
        assert!(glob_match("w[0-9]@v?", "w3@vm"));
        let mut pcre = req(None, Some(r"w\d@"));
        pcre.matcher = Some("pcre".into());
        assert!(pcre.addresses("w1@vm"));
        assert!(
            !pcre.addresses("xw1@vm"),
            "re.match is anchored at the start"
        );
        let mut no_matcher = req(None, Some("nobody*"));
        no_matcher.matcher = None;
        assert!(
            no_matcher.addresses("w1@vm"),
            "kombu dispatches to all without a matcher"
        );
    }
}
