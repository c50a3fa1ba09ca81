//! How long `parse_strict` takes, and how much memory it holds, on the
//! largest bodies a client may send (`--max-body-bytes`, 4 MiB by default):
//! an ordinary `tools/call` carrying one big manifest string, and bodies
//! built to be expensive (nesting at the depth limit, millions of tiny
//! values, one huge object, escapes). A plain program, not criterion:
//!
//! ```sh
//! cargo bench -p tollgate-mcp --bench strict_json            # 4 MiB bodies
//! cargo bench -p tollgate-mcp --bench strict_json -- 1048576 # another size
//! ```
//!
//! Prints one line per body: its shape, the best and median of several
//! parses, and the peak heap the parse held (a counting allocator). These
//! numbers chose the limits in `tollgate_mcp::json` and the sidecar's
//! off-thread parsing (docs/data-path-limits.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tollgate_mcp::json::{Limits, parse_strict_with};

/// Counts live heap bytes and remembers the peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `prefix`, then `unit` repeated (joined by `sep`) until about `size`
/// bytes, then `suffix`.
fn repeated(prefix: &str, unit: &str, sep: &str, suffix: &str, size: usize) -> Vec<u8> {
    let mut out = String::with_capacity(size + unit.len() + suffix.len());
    out.push_str(prefix);
    let mut first = true;
    while out.len() + unit.len() + sep.len() + suffix.len() <= size {
        if !first {
            out.push_str(sep);
        }
        first = false;
        out.push_str(unit);
    }
    out.push_str(suffix);
    out.into_bytes()
}

fn bodies(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let depth = tollgate_mcp::json::MAX_DEPTH - 1;
    let nest = format!("{}0{}", "[".repeat(depth), "]".repeat(depth));
    let manifest = "a".repeat(size.saturating_sub(200));
    let mut keys = String::from("{");
    let mut i = 0u64;
    while keys.len() + 24 < size {
        if i > 0 {
            keys.push(',');
        }
        keys.push_str(&format!("\"k{i}\":0"));
        i += 1;
    }
    keys.push('}');
    vec![
        (
            "tools/call with one large string argument (honest)",
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"resources_create_or_update","arguments":{{"resource":"{manifest}"}}}}}}"#
            )
            .into_bytes(),
        ),
        ("array of zeros [0,0,...]", repeated("[", "0", ",", "]", size)),
        ("array of empty objects [{},...]", repeated("[", "{}", ",", "]", size)),
        ("array of empty arrays [[],...]", repeated("[", "[]", ",", "]", size)),
        ("one object with distinct keys", keys.into_bytes()),
        (
            "nesting at the depth limit, repeated",
            repeated("[", &nest, ",", "]", size),
        ),
        (
            "one string of \\u escapes",
            repeated("\"", "\\u00e9", "", "\"", size),
        ),
    ]
}

fn main() {
    let size: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4 << 20);
    println!("body size {size} bytes; times are best / median of the runs");
    for limits in [Limits::UNLIMITED, Limits::default()] {
        println!(
            "\n-- limits: {} values --",
            if limits.max_values == usize::MAX {
                "unlimited".to_owned()
            } else {
                limits.max_values.to_string()
            }
        );
        for (name, body) in bodies(size) {
            let mut times = Vec::new();
            let mut peak = 0;
            let mut outcome = String::new();
            for _ in 0..7 {
                let before = LIVE.load(Ordering::Relaxed);
                PEAK.store(before, Ordering::Relaxed);
                let t = Instant::now();
                let parsed = parse_strict_with(&body, limits);
                times.push(t.elapsed());
                peak = peak.max(PEAK.load(Ordering::Relaxed) - before);
                outcome = match &parsed {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("refused: {e}"),
                };
                drop(parsed);
            }
            times.sort();
            println!(
                "{name:<52} {:>8.1} ms / {:>8.1} ms  peak heap {:>7.1} MiB  {outcome}",
                ms(times[0]),
                ms(times[times.len() / 2]),
                peak as f64 / (1 << 20) as f64
            );
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
