//! Python `repr()` of JSON values, for the `argsrepr`/`kwargsrepr` headers and the
//! `args`/`kwargs`/`result` strings of task events (Celery writes `saferepr` there).

use serde_json::Value;
use std::fmt::Write;

/// Longest repr Celery puts into `argsrepr` (`celery/app/amqp.py`: 1024 chars).
pub const ARGSREPR_MAX: usize = 1024;

/// `repr(value)` as Python prints the equivalent object.
pub fn repr(value: &Value) -> String {
    let mut s = String::new();
    write_repr(&mut s, value);
    s
}

/// `repr(tuple(args))`: `(2, 3)`, `(1,)`, `()`.
pub fn repr_args(args: &[Value]) -> String {
    let mut s = String::from("(");
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        write_repr(&mut s, v);
    }
    if args.len() == 1 {
        s.push(',');
    }
    s.push(')');
    s
}

/// Truncate to Celery's `argsrepr` limit (on a char boundary).
pub fn truncate(mut s: String, max: usize) -> String {
    if s.chars().count() > max {
        s = s.chars().take(max).collect();
    }
    s
}

fn write_repr(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                write_float(out, f);
            } else {
                let _ = write!(out, "{n}");
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_repr(out, x);
            }
            out.push('}');
        }
    }
}

fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if f == f.trunc() && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else {
        let _ = write!(out, "{f}");
    }
}

/// Python 3 string repr: single quotes unless the text has `'` and no `"`.
fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tuples_and_literals_match_python() {
        assert_eq!(repr_args(&[json!(2), json!(3)]), "(2, 3)");
        assert_eq!(repr_args(&[json!("a")]), "('a',)");
        assert_eq!(repr_args(&[]), "()");
        assert_eq!(
            repr(&json!({"k": [null, true, 1.5, 2.0]})),
            "{'k': [None, True, 1.5, 2.0]}"
        );
        assert_eq!(repr(&json!("it's")), "\"it's\"");
        assert_eq!(repr(&json!("é\n")), "'é\\n'");
    }
}
