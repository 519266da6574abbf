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

/// Shell-style glob (`*`, `?`, `[...]`, `[!...]`), as Python's `fnmatch.fnmatch` used by
/// kombu's `glob` matcher. Translated to a regular expression (as `fnmatch.translate` does)
/// and run by the `regex` crate, whose matching time is linear: a hostile pattern such as
/// `*a*a*a…b` sent on the control channel cannot stall the worker.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&glob_to_regex(pattern)).is_ok_and(|re| re.is_match(text))
}

fn glob_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from("^(?s:");
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => match chars[i + 1..]
                .iter()
                .position(|&c| c == ']')
                .map(|p| p + i + 1)
            {
                // `[]` or an unclosed `[`: a literal bracket, as fnmatch treats it.
                Some(end) if end > i + 1 => {
                    let mut class: String = chars[i + 1..end].iter().collect();
                    let negate = class.starts_with('!');
                    if negate {
                        class.remove(0);
                    }
                    let class = class.replace('\\', "\\\\").replace('[', "\\[");
                    out.push('[');
                    if negate {
                        out.push('^');
                    }
                    out.push_str(&class);
                    out.push(']');
                    i = end;
                }
                _ => out.push_str("\\["),
            },
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    out.push_str(")$");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hostile_glob_cannot_stall_matching() {
        let pattern = format!("{}b", "*a".repeat(40));
        let started = std::time::Instant::now();
        assert!(!super::glob_match(&pattern, &"a".repeat(60)));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

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
        assert!(glob_match("w[!0-9]@vm", "wx@vm") && !glob_match("w[!0-9]@vm", "w1@vm"));
        assert!(
            glob_match("a.b", "a.b") && !glob_match("a.b", "axb"),
            "dots are literal"
        );
        assert!(
            glob_match("w[@vm", "w[@vm"),
            "an unclosed bracket is literal"
        );
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
