//! Server-sent events, incrementally: split a byte stream into events at
//! their boundaries, keep each event's original bytes, and write new events.
//!
//! The proxy only rewrites an event when it must (a filtered `tools/list`
//! result) and only inserts its own events between upstream events, never
//! inside one; everything else leaves byte for byte as it came.

use bytes::{Bytes, BytesMut};

/// The largest single event accepted from an upstream.
pub(crate) const MAX_EVENT_BYTES: usize = 16 << 20;

/// One parsed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The exact bytes of the event, including its terminating blank line.
    pub raw: Bytes,
    /// The `event:` field, if any (absent means `message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

impl Event {
    /// Whether this is a `message` event (the default type).
    pub fn is_message(&self) -> bool {
        matches!(self.event.as_deref(), None | Some("message"))
    }
}

/// The stream broke the SSE format in a way the proxy will not pass on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    /// One event exceeded [`MAX_EVENT_BYTES`].
    #[error("an SSE event exceeded {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

/// Splits a byte stream into events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: BytesMut,
    /// How far `buf` has been scanned for line ends.
    scanned: usize,
    /// Start of the current line within `buf`.
    line_start: usize,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while self.scanned < self.buf.len() {
            let b = self.buf[self.scanned];
            if b != b'\n' && b != b'\r' {
                self.scanned += 1;
                continue;
            }
            // A CR at the end of the buffer may be the first half of CRLF.
            let end_len = if b == b'\r' {
                match self.buf.get(self.scanned + 1) {
                    None => break,
                    Some(b'\n') => 2,
                    Some(_) => 1,
                }
            } else {
                1
            };
            let line_end = self.scanned;
            self.scanned += end_len;
            if line_end == self.line_start {
                // Blank line: dispatch.
                let raw = self.buf.split_to(self.scanned).freeze();
                self.scanned = 0;
                self.line_start = 0;
                if let Some(e) = self.dispatch(raw) {
                    events.push(e);
                }
            } else {
                let line = self.buf[self.line_start..line_end].to_vec();
                self.line_start = self.scanned;
                self.field(&line);
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(events)
    }

    /// Bytes of an unfinished event at the end of the stream; the SSE
    /// format discards them, and so does the proxy.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn field(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match name {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, raw: Bytes) -> Option<Event> {
        let event = self.event.take();
        let id = self.id.take();
        let data = self.data.take();
        // An event with no data is not dispatched by browsers either, but
        // its bytes (e.g. a comment used as keep-alive) still pass through.
        Some(Event {
            raw,
            event,
            data: data.unwrap_or_default(),
            id,
        })
    }
}

/// Writes one event. Every line break in `data` (CRLF, CR or LF) starts a
/// new `data:` line, so data reads back as itself with LF breaks and can
/// never start a field or an event of its own; line breaks in `event` and
/// `id`, which SSE cannot carry, are dropped.
pub fn encode(event: Option<&str>, id: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    for (name, value) in [("event", event), ("id", id)] {
        if let Some(value) = value {
            out.push_str(name);
            out.push_str(": ");
            out.extend(value.chars().filter(|c| !matches!(c, '\r' | '\n')));
            out.push('\n');
        }
    }
    let data = if data.contains('\r') {
        std::borrow::Cow::Owned(data.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(data)
    };
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c).unwrap());
        }
        out
    }

    #[test]
    fn splits_events_and_keeps_their_bytes() {
        let stream =
            b"event: message\nid: 1\ndata: {\"a\":1}\n\n: keepalive\n\ndata: x\ndata: y\n\n";
        let events = all(&[stream]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event.as_deref(), Some("message"));
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(
            &events[0].raw[..],
            b"event: message\nid: 1\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(&events[1].raw[..], b": keepalive\n\n");
        assert_eq!(events[2].data, "x\ny");
        let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(joined, stream.to_vec());
    }

    #[test]
    fn any_chunking_and_any_line_ending_gives_the_same_events() {
        for ending in ["\n", "\r\n", "\r"] {
            // The trailing `:` starts a comment line: a lone CR at the very
            // end could still be the first half of a CRLF.
            let stream = format!(
                "event: endpoint{e}data: /message?sessionId=abc{e}{e}data: {{}}{e}{e}:",
                e = ending
            );
            let whole = all(&[stream.as_bytes()]);
            assert_eq!(whole.len(), 2, "{ending:?}");
            assert_eq!(whole[0].data, "/message?sessionId=abc");
            // Byte by byte.
            let bytes = stream.as_bytes();
            let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
            let split = all(&pieces);
            assert_eq!(whole, split, "{ending:?}");
        }
    }

    #[test]
    fn an_unfinished_event_stays_pending() {
        let mut p = Parser::new();
        assert!(p.push(b"data: partial").unwrap().is_empty());
        assert_eq!(p.pending(), 13);
    }

    #[test]
    fn refuses_a_runaway_event() {
        let mut p = Parser::new();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert_eq!(p.push(&big), Err(SseError::TooLarge));
    }

    #[test]
    fn data_with_carriage_returns_cannot_start_a_field() {
        let bytes = encode(Some("message"), None, "x\revent: endpoint\r\ndata: /evil");
        let back = all(&[&bytes]);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].event.as_deref(), Some("message"));
        assert_eq!(back[0].data, "x\nevent: endpoint\ndata: /evil");
        let bytes = encode(Some("message\nevent: endpoint"), Some("1\r2"), "");
        let back = all(&[&bytes]);
        assert_eq!(back[0].event.as_deref(), Some("messageevent: endpoint"));
        assert_eq!(back[0].id.as_deref(), Some("12"));
    }

    #[test]
    fn encodes_multi_line_data() {
        assert_eq!(
            &encode(Some("message"), None, "a\nb")[..],
            b"event: message\ndata: a\ndata: b\n\n"
        );
        let back = all(&[&encode(None, Some("7"), "{\"x\":1}")]);
        assert_eq!(
            (back[0].data.as_str(), back[0].id.as_deref()),
            ("{\"x\":1}", Some("7"))
        );
    }
}
