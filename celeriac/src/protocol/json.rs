//! JSON text as Python's `json.dumps` writes it with its defaults: `", "` and `": "`
//! separators and `ensure_ascii=True` (non-ASCII as `\uXXXX`, astral characters as
//! surrogate pairs). Python consumers parse JSON, so this only matters for byte-exact
//! fixtures and for humans diffing `redis-cli` output against Celery's — but it costs
//! nothing, so everything celeriac writes to Redis goes through [`to_vec`].

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};
use std::io::{self, Write};

/// A serde_json formatter producing Python `json.dumps` default spacing and ASCII output.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        frag: &str,
    ) -> io::Result<()> {
        if frag.is_ascii() {
            return w.write_all(frag.as_bytes());
        }
        let mut start = 0;
        for (i, ch) in frag.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            w.write_all(&frag.as_bytes()[start..i])?;
            let mut buf = [0u16; 2];
            for unit in ch.encode_utf16(&mut buf) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        w.write_all(&frag.as_bytes()[start..])
    }
    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        esc: CharEscape,
    ) -> io::Result<()> {
        // Python escapes control characters as \uXXXX except the usual short forms.
        let s: &[u8] = match esc {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => return write!(w, "\\u{byte:04x}"),
            // Future variants: fall back to serde_json's default handling.
            #[allow(unreachable_patterns)]
            _ => return serde_json::ser::CompactFormatter.write_char_escape(w, esc),
        };
        w.write_all(s)
    }
}

/// Serialize `value` as Python's `json.dumps` would.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing serde_json-compatible values into a Vec cannot fail.
    value
        .serialize(&mut ser)
        .expect("JSON serialization into memory");
    out
}

/// Serialize `value` as a `String` (always valid UTF-8: the output is ASCII).
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    String::from_utf8(to_vec(value)).expect("python-style JSON output is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps_defaults() {
        let v = json!({"a": [1, 2.0, null], "b": "é😀\n\u{1}"});
        assert_eq!(
            to_string(&v),
            r#"{"a": [1, 2.0, null], "b": "\u00e9\ud83d\ude00\n\u0001"}"#
        );
    }

    #[test]
    fn empty_containers_have_no_spaces() {
        assert_eq!(to_string(&json!([[], {}])), "[[], {}]");
    }
}
