//! A server-sent-events stream relayed from the upstream to the client,
//! event by event, with room for the proxy's own events in between.
//!
//! Used only where the proxy must look inside a stream (legacy sessions,
//! filtered `tools/list` results, denials to merge, `list_changed`
//! notifications); other streams pass through untouched.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tokio::sync::mpsc;

use tollgate_mcp::sse::{Event, Parser};

use tollgate_runtime::body::BoxError;

use super::connections::UpstreamBody;

/// Looks at each upstream event on its way to the client.
pub(crate) trait Hook: Send + 'static {
    /// What to send instead of `event`; `None` sends it unchanged.
    fn on_event(&mut self, event: &Event) -> Option<Bytes>;
}

/// The relayed stream, as a response body.
pub(crate) struct Relay {
    upstream: UpstreamBody,
    parser: Parser,
    hook: Box<dyn Hook>,
    inject: Option<mpsc::Receiver<Bytes>>,
    out: VecDeque<Bytes>,
    finished: bool,
    /// Dropped with the stream: unregisters whatever it was registered in.
    _guards: Vec<Box<dyn Send>>,
}

impl Relay {
    /// Relays `upstream`, sending `first` before anything else and whatever
    /// arrives on `inject` between events.
    pub(crate) fn new(
        upstream: UpstreamBody,
        hook: Box<dyn Hook>,
        first: Vec<Bytes>,
        inject: Option<mpsc::Receiver<Bytes>>,
        guards: Vec<Box<dyn Send>>,
    ) -> Self {
        Relay {
            upstream,
            parser: Parser::new(),
            hook,
            inject,
            out: first.into(),
            finished: false,
            _guards: guards,
        }
    }
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(bytes) = this.out.pop_front() {
                if bytes.is_empty() {
                    continue;
                }
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(rx) = &mut this.inject {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(bytes)) => {
                        this.out.push_back(bytes);
                        continue;
                    }
                    Poll::Ready(None) => this.inject = None,
                    Poll::Pending => {}
                }
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match this.parser.push(&data) {
                        Ok(events) => {
                            for event in events {
                                let bytes = this.hook.on_event(&event).unwrap_or(event.raw);
                                this.out.push_back(bytes);
                            }
                        }
                        Err(e) => {
                            this.finished = true;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => this.finished = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
