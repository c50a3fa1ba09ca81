//! MCP's stdio transport on the wire: one JSON-RPC message (or batch) per
//! line, UTF-8, no embedded newlines. [`Lines`] cuts a byte stream into
//! those lines with a bound on their length, so a peer that never sends a
//! newline cannot make the reader buffer without end.

use serde_json::Value;

/// What a chunk of the stream held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// One complete line, without its newline (a trailing `\r` is kept:
    /// JSON reads it as whitespace).
    Complete(Vec<u8>),
    /// A line longer than the bound; its bytes up to the next newline are
    /// discarded. `bytes` is how many were seen before it was refused.
    TooLong {
        /// Bytes of the line seen when it was refused.
        bytes: usize,
    },
}

/// Cuts a byte stream into bounded lines. Blank lines are skipped.
#[derive(Debug)]
pub struct Lines {
    buf: Vec<u8>,
    max: usize,
    /// Inside a line already refused: drop everything to the next newline.
    discarding: bool,
}

impl Lines {
    /// Lines of at most `max` bytes (the newline not counted).
    pub fn new(max: usize) -> Self {
        Lines {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Feeds `chunk`; returns the lines it completed, in order.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            let (head, rest, ends) = match newline {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            chunk = rest;
            if self.discarding {
                if ends {
                    self.discarding = false;
                }
                continue;
            }
            if self.buf.len() + head.len() > self.max {
                out.push(Line::TooLong {
                    bytes: self.buf.len() + head.len(),
                });
                self.buf.clear();
                self.discarding = !ends;
                continue;
            }
            self.buf.extend_from_slice(head);
            if ends {
                let line = std::mem::take(&mut self.buf);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    out.push(Line::Complete(line));
                }
            }
        }
        out
    }

    /// The stream ended: a last line without a newline, if any. (Peers
    /// should end every message with one; a final unterminated message is
    /// still a message.)
    pub fn finish(&mut self) -> Option<Line> {
        let line = std::mem::take(&mut self.buf);
        (!self.discarding && !line.iter().all(u8::is_ascii_whitespace))
            .then_some(Line::Complete(line))
    }

    /// Bytes buffered of an unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// `value` as one line: compact JSON (which escapes every newline inside
/// strings) and `\n`.
pub fn encode(value: &Value) -> Vec<u8> {
    // Serialising a `Value` into a Vec cannot fail.
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn complete(s: &str) -> Line {
        Line::Complete(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_are_cut_at_newlines_across_chunks() {
        let mut l = Lines::new(100);
        assert_eq!(l.push(b"{\"a\":1}\n{\"b\""), vec![complete("{\"a\":1}")]);
        assert_eq!(l.pending(), 4);
        assert_eq!(l.push(b":2}\n\n  \n"), vec![complete("{\"b\":2}")]);
        assert_eq!(l.push(b"{\"c\":3}\r\n"), vec![complete("{\"c\":3}\r")]);
        assert_eq!(l.push(b"{\"d\":4}"), vec![]);
        assert_eq!(l.finish(), Some(complete("{\"d\":4}")));
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn an_overlong_line_is_refused_once_and_skipped_to_its_end() {
        let mut l = Lines::new(8);
        assert_eq!(l.push(b"12345"), vec![]);
        assert_eq!(l.push(b"67890"), vec![Line::TooLong { bytes: 10 }]);
        // The rest of the refused line never reaches the buffer.
        assert_eq!(l.push(&[b'x'; 1000]), vec![]);
        assert_eq!(l.pending(), 0);
        assert_eq!(l.push(b"yy\nok\n"), vec![complete("ok")]);
        // Exactly the bound is fine; a line refused within one chunk too.
        assert_eq!(
            l.push(b"12345678\n123456789\nok\n"),
            vec![
                complete("12345678"),
                Line::TooLong { bytes: 9 },
                complete("ok")
            ]
        );
        l.push(b"123456789");
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn encoded_messages_are_one_line() {
        let v = json!({"text": "a\nb\r\u{2028}c"});
        let line = encode(&v);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let mut l = Lines::new(1 << 10);
        let Line::Complete(back) = l.push(&line).remove(0) else {
            panic!("one complete line")
        };
        assert_eq!(serde_json::from_slice::<Value>(&back).unwrap(), v);
    }
}
