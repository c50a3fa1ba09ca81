//! Runs the decision sequence's future on the bench's thread. The budgets
//! measured here live in memory and answer at once, so the future is ready
//! on its first poll; one that is not is a bug worth a panic, not a spin.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub fn block_on<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory budget did not answer at once"),
    }
}
