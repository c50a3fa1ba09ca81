//! Test support: running the async decision sequence on the test's thread,
//! and a shared store that lives in memory and can be switched off.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

use crate::budget::ratelimit::{Acquire, MemoryCounter, Refusal};
use crate::budget::{Admission, Shared, SharedOutcome, StoreDown};

/// Runs `f` to completion. Every budget in these tests answers at once, so
/// a future that is still pending after many polls is a bug in the test.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    crate::scenario::finish_now(f).expect("a budget future never completed")
}

/// One release: the limit ids and costs taken back, and `last`.
pub(crate) type Release = (Vec<(String, u32)>, i64);

/// A shared store in memory: the same exact sliding log as the local tier,
/// a switch to make it unreachable, and a record of what was taken back.
#[derive(Debug, Default)]
pub(crate) struct FakeShared {
    counter: MemoryCounter,
    pub(crate) down: AtomicBool,
    seq: AtomicI64,
    /// Every release, in order.
    pub(crate) released: Mutex<Vec<Release>>,
}

impl Shared for FakeShared {
    async fn try_acquire(
        &self,
        all: &[&Acquire],
        now: Instant,
    ) -> Result<SharedOutcome, StoreDown> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreDown::new("switched off by the test"));
        }
        let owned: Vec<Acquire> = all.iter().map(|a| (*a).clone()).collect();
        match self.counter.try_acquire(&owned, now) {
            Ok(()) => {
                let cost: i64 = all.iter().map(|a| i64::from(a.cost)).sum();
                Ok(SharedOutcome::Admitted {
                    last: self.seq.fetch_add(cost, Ordering::SeqCst) + cost,
                    at: 0,
                })
            }
            Err(Refusal::Exhausted {
                index,
                retry_after,
                left,
            }) => Ok(SharedOutcome::Full {
                index,
                retry_after,
                left,
            }),
            Err(other) => Err(StoreDown::new(format!("{other:?}"))),
        }
    }

    async fn release(&self, all: &[&Acquire], admitted: Admission) {
        let last = admitted.last;
        let what = all
            .iter()
            .map(|a| (a.limit.id.0.to_string(), a.cost))
            .collect();
        self.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((what, last));
    }
}

/// Loads and compiles `yaml`; panics with every problem if it does not.
pub(crate) fn set(yaml: &str) -> crate::PolicySet {
    let (loaded, problems) = crate::load::parse_text("test.yaml", yaml);
    assert!(problems.is_empty(), "{}", crate::Problems(problems));
    crate::load::compile_set(&loaded).unwrap_or_else(|p| panic!("{}", crate::Problems(p)))
}

/// Every problem of `yaml`, one per line (empty when it is valid).
pub(crate) fn problems(yaml: &str) -> String {
    let (loaded, mut problems) = crate::load::parse_text("test.yaml", yaml);
    if let Err(mut p) = crate::load::compile_set(&loaded) {
        problems.append(&mut p);
    }
    crate::Problems(problems).to_string()
}

/// The `tools/list` entry of `tool` in kubernetes-mcp-server 0.0.67's real
/// answer (`tests/peers/fixtures`), as the sidecar's catalogue reads it.
pub(crate) fn kms_meta(tool: &str) -> crate::resources::ToolMeta {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/peers/fixtures/kubernetes-mcp-server-0.0.67-tools.json"
    );
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    crate::resources::ToolMeta::from_tool(
        list["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == tool)
            .unwrap_or_else(|| panic!("kubernetes-mcp-server 0.0.67 lists no {tool}")),
    )
}
