//! Micro-benchmarks of the policy engine: how long `budget::decide` takes
//! for one `tools/call` at 10, 1,000 and 10,000 rules, how long a policy takes
//! to compile, and what a rate limit adds — so the target "decision p99 ≤ 5 µs
//! at 10,000 rules" can be checked and regressions in the matcher, the
//! conditions or the rate-limit store show up before they reach the data path.
//!
//! ```sh
//! cargo bench --bench policy_engine                      # everything (about 4 min)
//! cargo bench --bench policy_engine -- --quick           # quicker criterion statistics, same percentile pass
//! cargo bench --bench policy_engine -- 'decide/.*/10000' # a criterion filter (regex; --exact works too)
//! cargo bench --bench policy_engine -- --list            # the benchmark ids
//! ```
//!
//! # What is measured
//!
//! Policy sets are built from YAML once, before any timing
//! (`load::parse_text` + `load::compile_set`, the sidecar's file mode); the
//! decision benchmarks time `budget::decide` alone — the sequence the
//! sidecar's gate runs, with the gate's own budget type (`Tiered<SharedStore>`,
//! no Redis): matcher lookup, rule
//! conditions, the in-memory in-flight and rate-limit stores, building the
//! `Decision` (and its denial message) and dropping it — with
//! `std::hint::black_box` around the call and its result.
//!
//! Rule `r<i>` names its own tool, `tool_<i>` (so N rules name N tools), and
//! allows it. In the `globs_*` sets every tenth rule (`i % 10 == 0`) names a
//! glob `team<i>_*` instead, since globs are matched through one `GlobSet`
//! while exact names go through a hash map. A policy may hold at most 2,000
//! rules (`compile::caps::RULES`), so larger sets are split into policies of
//! 2,000 (`bench-00` … `bench-04` for 10,000): all but the last default to
//! `Allow`, the last to `Deny`, so every call is judged by every policy — the
//! most work a set of that size can cost.
//!
//! `decide/<scenario>/<rules>` scenarios (N = rules):
//! - `exact_allow`: `tool_<N-2>`, an exact name near the end of the list, allowed.
//! - `default_deny`: a tool no rule names, denied by `defaultAction: Deny`.
//! - `conditions`: `tool_<N-1>`, whose rule requires `/namespace` `Equals`
//!   `vms` and `/name` `Matches` `golden-.*`; both hold, allowed.
//! - `rate_limit`: `tool_<N-3>`, limited to 100000 per 1s (the most a limit
//!   may admit); allowed.
//! - `rate_limit_keyed`: `tool_<N-4>`, the same limit keyed by
//!   `arguments: [/namespace]`, called with 1,000 namespaces in turn (1,000
//!   buckets, well under the 10,000-bucket cap per limit); allowed.
//! - `globs_exact_allow`, `globs_glob_allow` (`team<N-10>_list`, matched by
//!   the last glob), `globs_default_deny`: the same against the glob sets.
//!
//! `decide` takes the time as an argument (the proxy passes `Instant::now()`),
//! so the rate-limited scenarios pass a clock that advances 20 µs per call:
//! 50,000 calls per second of that clock, half of what the limit admits, so
//! it never fills however many iterations criterion runs, and each bucket's
//! sliding-window log stays at its steady size (50,000 admissions for the
//! unkeyed limit, 50 per bucket for the keyed one) with expiry and the
//! store's periodic sweep (every 4,096 calls) included in the time.
//!
//! `compile/<what>/<set>`: a 1,000-rule policy (`1000`: exact names only;
//! `1000_globs`: 100 of them globs), `yaml_to_set` from YAML text to a
//! `PolicySet` (what a reload of a policy file costs), `specs_to_set` from
//! already-parsed specs (`load::compile_set`: checking, regexes, the glob
//! set, the version digest; what the controller's snapshots cost).
//!
//! # Percentiles
//!
//! Criterion reports means and medians; the target is a p99. So after the
//! criterion groups, every `decide` scenario also runs a percentile pass:
//! 20,000 warm-up decisions, then 200,000 decisions each timed on its own
//! with `Instant::now()` (whose own cost, the median of back-to-back reads, is
//! printed and recorded, not subtracted). The pass prints a table
//! (p50/p99/p99.9/max/mean in ns, and whether p99 ≤ 5 µs holds at 10,000
//! rules) and appends one JSON line per scenario to
//! `target/bench/policy-engine.jsonl` (`$CARGO_TARGET_DIR/bench/` if set):
//! `run_id`, `ts` (UTC), `name`, `rules`, `samples`, `p50_ns`, `p99_ns`,
//! `p999_ns`, `max_ns`, `mean_ns`, `timer_overhead_ns`.
//!
//! The pass honours criterion's filter (a regex, or `--exact`) against the
//! same `decide/<scenario>/<rules>` ids, so `-- compile` runs no percentile
//! pass and `-- 'decide/conditions'` runs it for those three scenarios only.
//! It is skipped by `--list`, `--profile-time` and `--ignored`; in test mode
//! (`cargo test --benches`, or `-- --test`) it runs 1,000 decisions a
//! scenario and writes no JSON.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion};
use regex::Regex;
use serde_json::{Value, json};
use tollgate_policy::budget::inflight::MemoryInFlight;
use tollgate_policy::budget::{self, Stores, Tiered};
use tollgate_policy::compile::caps;
use tollgate_policy::compile::resource_rules::NoCluster;
use tollgate_policy::load::{API_VERSION, KIND, compile_set, parse_text};
use tollgate_sidecar::SharedStore;

#[path = "common/block_on.rs"]
mod block_on;
use block_on::block_on;
use tollgate_policy::{Decision, Effect, PolicySet, Problems, Reason, ToolCall};

/// The rule counts measured.
const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// The size of the compile benchmarks.
const COMPILE_RULES: usize = 1_000;
/// How far the clock of the rate-limited scenarios moves per call.
const CLOCK_STEP: Duration = Duration::from_micros(20);
/// Namespaces the keyed limit's calls cycle through (one bucket each).
const KEYED_NAMESPACES: usize = 1_000;
/// Percentile pass: decisions timed per scenario, and warm-up before them.
const SAMPLES: usize = 200_000;
const WARMUP: usize = 20_000;
/// The target: decision p99 at 10,000 rules.
const TARGET_RULES: usize = 10_000;
const TARGET_P99_NS: u64 = 5_000;

/// The rule whose tool each scenario calls, counted back from the end of a
/// set of `n` rules.
mod at {
    /// Allowed, no conditions.
    pub fn exact(n: usize) -> usize {
        n - 2
    }
    /// Allowed when `/namespace` is `vms` and `/name` matches `golden-.*`.
    pub fn conditions(n: usize) -> usize {
        n - 1
    }
    /// 100000 per 1s.
    pub fn limit(n: usize) -> usize {
        n - 3
    }
    /// 100000 per 1s per `/namespace`.
    pub fn keyed(n: usize) -> usize {
        n - 4
    }
    /// The last glob rule of a glob set (`i % 10 == 0`).
    pub fn glob(n: usize) -> usize {
        n - 10
    }
}

/// Whether rule `i` of a glob set names a glob.
fn is_glob_rule(globs: bool, i: usize) -> bool {
    globs && i.is_multiple_of(10)
}

/// The YAML of a set of `n` rules, in policies of at most `caps::RULES`.
fn policy_yaml(n: usize, globs: bool) -> String {
    let policies = n.div_ceil(caps::RULES);
    let mut y = String::new();
    for k in 0..policies {
        let default = if k + 1 == policies { "Deny" } else { "Allow" };
        let _ = write!(
            y,
            "---\napiVersion: {API_VERSION}\nkind: {KIND}\nmetadata: {{name: bench-{k:02}}}\n\
             spec:\n  defaultAction: {default}\n  rules:\n"
        );
        for i in k * caps::RULES..((k + 1) * caps::RULES).min(n) {
            let tool = if is_glob_rule(globs, i) {
                format!("\"team{i}_*\"")
            } else {
                format!("tool_{i}")
            };
            let _ = write!(y, "    - {{name: r{i}, tools: [{tool}], action: Allow");
            if i == at::conditions(n) {
                y.push_str(
                    ", arguments: [{pointer: /namespace, operator: Equals, value: vms}, \
                     {pointer: /name, operator: Matches, value: \"golden-.*\"}]",
                );
            } else if i == at::limit(n) {
                y.push_str(", rateLimits: [{requests: 100000, window: 1s}]");
            } else if i == at::keyed(n) {
                y.push_str(
                    ", rateLimits: [{requests: 100000, window: 1s, key: {arguments: [/namespace]}}]",
                );
            }
            y.push_str("}\n");
        }
    }
    y
}

/// YAML text to a policy set, as the sidecar's file mode does it.
fn compile_yaml(yaml: &str) -> PolicySet {
    let (loaded, problems) = parse_text("bench.yaml", yaml);
    assert!(problems.is_empty(), "{}", Problems(problems));
    compile_set(&loaded).unwrap_or_else(|p| panic!("{}", Problems(p)))
}

/// One policy set under test.
struct Fixture {
    rules: usize,
    globs: bool,
    set: PolicySet,
}

fn fixtures() -> Vec<Fixture> {
    [false, true]
        .into_iter()
        .flat_map(|globs| SIZES.map(|rules| (rules, globs)))
        .map(|(rules, globs)| Fixture {
            rules,
            globs,
            set: compile_yaml(&policy_yaml(rules, globs)),
        })
        .collect()
}

/// What a scenario calls.
#[derive(Clone, Copy)]
enum Target {
    /// `tool_<i>`, the tool of rule `i`, which allows it.
    Rule(fn(usize) -> usize),
    /// `team<i>_list`, matched by the glob `team<i>_*` of rule `i`, which allows it.
    Glob(fn(usize) -> usize),
    /// A tool no rule names, denied by `defaultAction`.
    Unnamed,
}

impl Target {
    fn tool(self, n: usize) -> String {
        match self {
            Target::Rule(at) => format!("tool_{}", at(n)),
            Target::Glob(at) => format!("team{}_list", at(n)),
            Target::Unnamed => "pods_exec".into(),
        }
    }

    /// The decision a single policy gives: effect, reason and rule.
    fn expected(self, n: usize) -> (Effect, Reason, Option<String>) {
        match self {
            Target::Rule(at) | Target::Glob(at) => {
                (Effect::Allowed, Reason::Rule, Some(format!("r{}", at(n))))
            }
            Target::Unnamed => (Effect::Denied, Reason::Default, None),
        }
    }
}

/// One decision benchmark, run against the sets of every size.
struct Scenario {
    name: &'static str,
    /// Against the glob sets, or the exact-name ones.
    globs: bool,
    target: Target,
    /// The arguments of successive calls, used in turn.
    arguments: fn() -> Vec<Value>,
    /// Whether the clock advances between calls (rate-limited scenarios).
    ticking: bool,
}

const fn scenario(
    name: &'static str,
    globs: bool,
    target: Target,
    arguments: fn() -> Vec<Value>,
    ticking: bool,
) -> Scenario {
    Scenario {
        name,
        globs,
        target,
        arguments,
        ticking,
    }
}

fn no_arguments() -> Vec<Value> {
    vec![json!({})]
}

fn good_arguments() -> Vec<Value> {
    vec![json!({"namespace": "vms", "name": "golden-rhel9"})]
}

fn namespaces() -> Vec<Value> {
    (0..KEYED_NAMESPACES)
        .map(|k| json!({"namespace": format!("ns-{k}"), "name": "golden-rhel9"}))
        .collect()
}

#[rustfmt::skip]
const SCENARIOS: &[Scenario] = &[
    scenario("exact_allow", false, Target::Rule(at::exact), no_arguments, false),
    scenario("default_deny", false, Target::Unnamed, no_arguments, false),
    scenario("conditions", false, Target::Rule(at::conditions), good_arguments, false),
    scenario("rate_limit", false, Target::Rule(at::limit), good_arguments, true),
    scenario("rate_limit_keyed", false, Target::Rule(at::keyed), namespaces, true),
    scenario("globs_exact_allow", true, Target::Rule(at::exact), no_arguments, false),
    scenario("globs_glob_allow", true, Target::Glob(at::glob), no_arguments, false),
    scenario("globs_default_deny", true, Target::Unnamed, no_arguments, false),
];

/// A scenario bound to its policy set, with its own stores and clock: the
/// thing both the criterion loop and the percentile pass call.
struct Workload<'a> {
    id: String,
    rules: usize,
    set: &'a PolicySet,
    tool: String,
    arguments: Vec<Value>,
    next: usize,
    step: Duration,
    now: Instant,
    wall: SystemTime,
    /// What a sidecar without Redis spends from: the gate's own type.
    budgets: Tiered<SharedStore>,
    in_flight: MemoryInFlight,
}

impl<'a> Workload<'a> {
    fn new(scenario: &Scenario, fixture: &'a Fixture) -> Self {
        Workload {
            id: format!("decide/{}/{}", scenario.name, fixture.rules),
            rules: fixture.rules,
            set: &fixture.set,
            tool: scenario.target.tool(fixture.rules),
            arguments: (scenario.arguments)(),
            next: 0,
            step: if scenario.ticking {
                CLOCK_STEP
            } else {
                Duration::ZERO
            },
            now: Instant::now(),
            wall: SystemTime::now(),
            budgets: Tiered::new(None),
            in_flight: MemoryInFlight::default(),
        }
    }

    /// One decision: the next arguments, the clock one step on.
    #[inline]
    fn decide(&mut self) -> Decision {
        let arguments = &self.arguments[self.next];
        self.next = (self.next + 1) % self.arguments.len();
        self.now += self.step;
        let stores = Stores {
            budgets: &self.budgets,
            in_flight: &self.in_flight,
            view: &NoCluster,
        };
        block_on(budget::decide(
            self.set,
            black_box(&ToolCall::new(&self.tool, arguments)),
            stores,
            self.now,
            self.wall,
        ))
    }
}

/// Every scenario against every set it applies to, each with fresh stores,
/// after checking that the first decision is the one the scenario is about.
fn workloads(fixtures: &[Fixture]) -> Vec<Workload<'_>> {
    let mut out = Vec::new();
    for scenario in SCENARIOS {
        for fixture in fixtures.iter().filter(|f| f.globs == scenario.globs) {
            let mut w = Workload::new(scenario, fixture);
            let d = w.decide();
            let (effect, reason, rule) = scenario.target.expected(fixture.rules);
            // With several policies the first (default Allow) one reports an
            // allowed call; only a single policy names the allowing rule.
            let (reason, rule) = if fixture.rules <= caps::RULES || effect == Effect::Denied {
                (reason, rule)
            } else {
                (Reason::Default, None)
            };
            assert_eq!(
                (d.effect, d.reason, d.rule.as_deref().map(str::to_owned)),
                (effect, reason, rule),
                "{}: {:?}",
                w.id,
                d.message
            );
            out.push(Workload::new(scenario, fixture));
        }
    }
    out
}

fn bench_decisions(c: &mut Criterion, fixtures: &[Fixture]) {
    let mut group = c.benchmark_group("decide");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for mut w in workloads(fixtures) {
        let (name, rules) = w.id["decide/".len()..].rsplit_once('/').expect("id");
        let id = BenchmarkId::new(name.to_owned(), rules);
        group.bench_function(id, |b| b.iter(|| w.decide()));
    }
    group.finish();
}

fn bench_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for globs in [false, true] {
        let yaml = policy_yaml(COMPILE_RULES, globs);
        let (loaded, problems) = parse_text("bench.yaml", &yaml);
        assert!(problems.is_empty(), "{}", Problems(problems));
        let label = format!("{COMPILE_RULES}{}", if globs { "_globs" } else { "" });
        group.bench_function(BenchmarkId::new("yaml_to_set", &label), |b| {
            b.iter_with_large_drop(|| compile_yaml(black_box(&yaml)))
        });
        group.bench_function(BenchmarkId::new("specs_to_set", &label), |b| {
            b.iter_with_large_drop(|| compile_set(black_box(&loaded)).expect("compiles"))
        });
    }
    group.finish();
}

/// What of criterion's command line the percentile pass follows.
struct Cli {
    /// `None`: skip the pass (`--list`, `--profile-time`, `--ignored`).
    filter: Option<Filter>,
    /// `cargo test --benches` or `-- --test`.
    test: bool,
}

enum Filter {
    All,
    Regex(Regex),
    Exact(String),
}

impl Filter {
    fn matches(&self, id: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Regex(re) => re.is_match(id),
            Filter::Exact(s) => s == id,
        }
    }
}

/// Reads the arguments the way criterion does (its options that take a
/// value are skipped with their value); criterion itself has already
/// rejected anything malformed.
fn cli() -> Cli {
    const WITH_VALUE: &[&str] = &[
        "-c",
        "--color",
        "--colour",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--format",
        "--profile-time",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
    ];
    let mut flags = Vec::new();
    let mut positional = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            if arg == "--profile-time" {
                flags.push(arg);
            }
            args.next();
        } else if arg.starts_with('-') {
            flags.push(arg.split('=').next().unwrap_or_default().to_owned());
        } else {
            positional.get_or_insert(arg);
        }
    }
    let has = |f: &str| flags.iter().any(|g| g == f);
    let skip = has("--list") || has("--profile-time") || has("--ignored");
    let filter = match positional {
        _ if skip => None,
        None => Some(Filter::All),
        Some(p) if has("--exact") => Some(Filter::Exact(p)),
        Some(p) => Some(Filter::Regex(
            Regex::new(&p).expect("criterion accepted it"),
        )),
    };
    Cli {
        filter,
        test: has("--test") || !has("--bench"),
    }
}

/// One scenario's percentiles.
struct Percentiles {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: u64,
}

fn time_decisions(w: &mut Workload<'_>, warmup: usize, samples: usize) -> Percentiles {
    for _ in 0..warmup {
        drop(black_box(w.decide()));
    }
    let mut ns: Vec<u64> = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        drop(black_box(w.decide()));
        ns.push(start.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: ns[ns.len() - 1],
        mean: ns.iter().sum::<u64>() / ns.len() as u64,
    }
}

/// The median cost of reading the clock twice, which every sample includes.
fn timer_overhead_ns() -> u64 {
    let mut ns: Vec<u64> = (0..10_000)
        .map(|_| {
            let start = Instant::now();
            black_box(start.elapsed().as_nanos() as u64)
        })
        .collect();
    ns.sort_unstable();
    ns[ns.len() / 2]
}

/// `20261121T132408Z` and `2026-11-21T13:24:08Z`.
fn utc_now() -> (String, String) {
    let t = time::OffsetDateTime::now_utc();
    let (date, clock) = (
        format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day()),
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
    );
    (
        format!("{}T{}Z", date.replace('-', ""), clock.replace(':', "")),
        format!("{date}T{clock}Z"),
    )
}

fn jsonl_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
        .join("policy-engine.jsonl")
}

fn percentile_pass(fixtures: &[Fixture], cli: &Cli) {
    let Some(filter) = &cli.filter else { return };
    let mut selected: Vec<Workload<'_>> = workloads(fixtures)
        .into_iter()
        .filter(|w| filter.matches(&w.id))
        .collect();
    if selected.is_empty() {
        return;
    }
    let (warmup, samples) = if cli.test {
        (100, 1_000)
    } else {
        (WARMUP, SAMPLES)
    };
    let (run_id, ts) = utc_now();
    let timer = timer_overhead_ns();
    println!(
        "\nPercentiles of single decisions ({samples} timed after {warmup} warm-up each; \
         includes ~{timer} ns of clock reads){}:\n",
        if cli.test {
            "; test mode: a check that it runs, not a measurement"
        } else {
            ""
        }
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "p50 ns", "p99 ns", "p99.9 ns", "max ns", "mean ns"
    );
    let mut lines = String::new();
    let mut worst_at_target: Option<(u64, String)> = None;
    for w in &mut selected {
        let p = time_decisions(w, warmup, samples);
        println!(
            "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9}",
            w.id, p.p50, p.p99, p.p999, p.max, p.mean
        );
        let line = json!({
            "run_id": run_id, "ts": ts, "name": w.id, "rules": w.rules, "samples": samples,
            "p50_ns": p.p50, "p99_ns": p.p99, "p999_ns": p.p999, "max_ns": p.max,
            "mean_ns": p.mean, "timer_overhead_ns": timer,
        });
        let _ = writeln!(lines, "{line}");
        if w.rules == TARGET_RULES && worst_at_target.as_ref().is_none_or(|(p99, _)| p.p99 > *p99) {
            worst_at_target = Some((p.p99, w.id.clone()));
        }
    }
    if let Some((p99, id)) = worst_at_target {
        let met = if p99 <= TARGET_P99_NS {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "\nTarget decision p99 ≤ {TARGET_P99_NS} ns at {TARGET_RULES} rules: {met} \
             (worst p99 {p99} ns, {id})"
        );
    }
    if cli.test {
        return;
    }
    let path = jsonl_path();
    let written = path
        .parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|()| OpenOptions::new().create(true).append(true).open(&path))
        .and_then(|mut f| f.write_all(lines.as_bytes()));
    match written {
        Ok(()) => println!("Appended {} lines to {}", selected.len(), path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

fn main() {
    let cli = cli();
    let mut c = Criterion::default().configure_from_args();
    let fixtures = fixtures();
    bench_decisions(&mut c, &fixtures);
    bench_compile(&mut c);
    c.final_summary();
    percentile_pass(&fixtures, &cli);
}
