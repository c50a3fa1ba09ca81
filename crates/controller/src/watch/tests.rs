//! The watch state machine driven by the events kube-runtime's watcher
//! emits, including the re-list after "too old resource version": what is
//! handed to the index, and when the watch counts as ready. No cluster.

use std::time::Duration;

use kube::core::Status;
use kube::runtime::watcher::{Error, Event};

use super::*;

fn gone() -> Error {
    Error::WatchError(Box::new(Status {
        code: 410,
        message: "too old resource version: 5 (42)".into(),
        ..Status::default()
    }))
}

fn broken() -> Error {
    Error::WatchFailed(kube::Error::Api(Box::new(Status {
        code: 500,
        ..Status::default()
    })))
}

#[test]
fn a_list_is_handed_over_whole_at_its_end() {
    let mut l = Listing::default();
    assert!(!l.current());
    assert_eq!(l.on_event(Event::Init), Step::Wait);
    assert_eq!(l.on_event(Event::InitApply(1)), Step::Wait);
    assert_eq!(l.on_event(Event::InitApply(2)), Step::Wait);
    assert!(!l.current(), "half a list is not current");
    assert_eq!(l.on_event(Event::InitDone), Step::Relist(vec![1, 2]));
    assert!(l.current());
    assert_eq!(l.on_event(Event::Apply(3)), Step::Apply(3));
    assert_eq!(l.on_event(Event::Delete(1)), Step::Delete(1));
    assert!(l.current());
}

#[test]
fn an_expired_watch_is_stale_until_its_relist_is_in() {
    let mut l = Listing::default();
    l.on_event(Event::Init);
    l.on_event(Event::InitApply(1));
    l.on_event(Event::InitDone);
    l.on_error(&gone());
    assert!(!l.current(), "410: the watcher lists again");
    // The watcher backs off, then lists again.
    assert_eq!(l.on_event(Event::Init), Step::Wait);
    assert_eq!(l.on_event(Event::InitApply(2)), Step::Wait);
    assert!(!l.current());
    assert_eq!(l.on_event(Event::InitDone), Step::Relist(vec![2]));
    assert!(l.current());
}

#[test]
fn a_retried_watch_call_stays_current() {
    let mut l: Listing<u32> = Listing::default();
    l.on_event(Event::Init);
    l.on_event(Event::InitDone);
    l.on_error(&broken());
    assert!(l.current(), "the watcher resumes from its resource version");
    l.on_error(&Error::NoResourceVersion);
    assert!(!l.current(), "without a resource version it lists again");
}

#[test]
fn an_empty_list_is_a_complete_list() {
    let mut l: Listing<u32> = Listing::default();
    l.on_event(Event::Init);
    assert_eq!(l.on_event(Event::InitDone), Step::Relist(vec![]));
    assert!(l.current());
}

#[tokio::test]
async fn readiness_follows_the_watch_and_waits_for_the_index() {
    let events = futures_util::stream::iter(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(1)),
        Ok(Event::InitDone),
        Ok(Event::Apply(2)),
        Err(gone()),
        Ok(Event::Init),
        Ok(Event::InitApply(3)),
        Ok(Event::InitDone),
    ]);
    let (tx, ready) = watch::channel(false);
    let synced = Synced::new(vec![("policy", ready.clone())]);
    let (_stop, mut shutdown) = watch::channel(false);
    let mut w = Watched::new(events, tx, "things");

    assert_eq!(w.next(&mut shutdown).await, Some(Step::Relist(vec![1])));
    assert!(
        !*ready.borrow(),
        "not ready before the caller has indexed the list"
    );
    assert!(
        synced
            .check()
            .unwrap_err()
            .to_string()
            .contains("policy watch has")
    );
    w.applied();
    assert!(*ready.borrow());
    assert_eq!(synced.check(), Ok(()));

    assert_eq!(w.next(&mut shutdown).await, Some(Step::Apply(2)));
    w.applied();
    assert!(*ready.borrow());

    // 410, then the re-list: not ready from the error until the new list
    // is indexed; the old picture is never touched in between.
    assert_eq!(w.next(&mut shutdown).await, Some(Step::Relist(vec![3])));
    assert!(!*ready.borrow(), "stale during the re-list");
    w.applied();
    assert!(*ready.borrow());
    assert_eq!(w.next(&mut shutdown).await, None, "the stream ended");
}

#[tokio::test]
async fn readiness_drops_as_soon_as_the_watch_expires() {
    // The watcher backs off after a 410 before it lists again: the error
    // alone must make the watch stale.
    let events =
        futures_util::stream::iter(vec![Ok(Event::Init), Ok(Event::InitDone), Err(gone())])
            .chain(futures_util::stream::pending());
    let (tx, ready) = watch::channel(false);
    let (_stop, mut shutdown) = watch::channel(false);
    let mut w = Watched::new(Box::pin(events), tx, "things");
    assert_eq!(
        w.next(&mut shutdown).await,
        Some(Step::<u32>::Relist(vec![]))
    );
    w.applied();
    let mut seen = ready.clone();
    assert!(*seen.borrow_and_update());
    let dropped = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            _ = w.next(&mut shutdown) => panic!("no step follows a lone error"),
            changed = seen.changed() => changed.unwrap(),
        }
    })
    .await;
    assert!(dropped.is_ok(), "readiness did not drop on the 410");
    assert!(!*ready.borrow());
}

#[test]
fn synced_names_every_stale_watch() {
    let (_a, a) = watch::channel(false);
    let (_b, b) = watch::channel(false);
    let (_c, c) = watch::channel(true);
    let s = Synced::new(vec![("policy", a), ("pod", b), ("other", c)]);
    assert_eq!(
        s.check().unwrap_err().to_string(),
        "the policy and pod watches have not been listed and indexed yet (at start, or again after a watch expired)"
    );
}
