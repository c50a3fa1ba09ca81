//! Controller push benchmark: how long from applying an `McpToolPolicy` to
//! every selected sidecar enforcing it, with N sidecars connected to one
//! `tollgate controller`, and what the controller's memory is with 1,000
//! sidecars and 1,000 policies.
//!
//! Why: the controller promises that a policy change reaches every sidecar
//! within a second (push p99 ≤ 1 s at 1,000 sidecars). This measures that
//! promise end to end, against a real kube-apiserver, instead of trusting the
//! controller's own histograms (which start only once its index has the
//! change).
//!
//! How: it starts nothing but simulated sidecars. Given a running test
//! cluster (scripts/cluster/up.sh) with the CRD, and a running controller
//! watching `--namespace`, it
//!
//! 1. creates the namespace, a ServiceAccount and N Pending pods labelled
//!    `tollgate.dev/sidecar=true` (bounded concurrency, straight through the
//!    Kubernetes API), and one pod-bound token per pod (TokenRequest,
//!    audience `tollgate`), each in its own file;
//! 2. runs N sidecars in this process, each the library's own
//!    [`Follower`] (`src/proxy/managed.rs`, exactly what `tollgate proxy
//!    --controller` runs): it holds the SSE stream, compiles each snapshot
//!    into its own rule store and acks it;
//! 3. waits until every sidecar has its first snapshot, then for each round
//!    server-side-applies a policy selecting all N pods whose only rule
//!    allows a tool named for that round, and records per sidecar the time
//!    from just before the apply request was sent ("apply started") to the
//!    moment that sidecar's rule store put a compiled set naming the round's
//!    tool in force (`Rules::loaded_at`): the point where the sidecar
//!    enforces the new version. The first round is a warm-up and is not
//!    counted. Between rounds it waits for the acks;
//! 4. with `--policies P`, applies P policies at once (policy i selects pod
//!    i by label; three select every pod), and reports how long until the
//!    apply calls returned, every sidecar enforced its policies, and every
//!    status said Accepted and Programmed, the controller's VmRSS/VmHWM
//!    (`--controller-pid`), then repeats the push rounds with those P
//!    policies in the index.
//!
//! Output: one JSON line per result on stdout (`"kind":"push"` or
//! `"kind":"memory"`); progress on stderr. Percentiles are exact, over every
//! sidecar and every measured round. It also reports the controller's own
//! `tollgate_controller_push_seconds` and `_ack_seconds` over the measured
//! rounds (from /metrics: bucket bounds, not exact).
//!
//! ```sh
//! scripts/bench/controller.sh           # cluster, controller, N = 1, 100, 1000, memory
//! cargo bench --bench controller_push -- --help
//! cargo bench --bench controller_push -- --kubeconfig KC --push-url http://127.0.0.1:P \
//!     --admin-url http://127.0.0.1:A --namespace tgbench --sidecars 100 --rounds 10
//! ```
//!
//! Every wait is bounded (`--timeout`, and `--deadline` for the whole run):
//! a stuck run fails with a message saying what it was waiting for.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use futures_util::{StreamExt as _, TryStreamExt as _};
use http::Uri;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use tollgate_controller::PolicyObject;
use tollgate_policy::PolicySet;
use tollgate_policy::budget::inflight::MemoryInFlight;
use tollgate_policy::snapshot::{DEFAULT_AUDIENCE, SIDECAR_LABEL};
use tollgate_sidecar::Follower;
use tollgate_sidecar::ManagedConfig;
use tollgate_sidecar::Metrics;
use tollgate_sidecar::RuleStore;
use tollgate_sidecar::VmLabels;
use tollgate_sidecar::{CaSource, ControllerTls};

/// The label every benchmark pod carries (the all-pods selector).
const APP_LABEL: (&str, &str) = ("app", "tollgate-bench");
/// The label naming a pod's index (the one-pod selectors).
const INDEX_LABEL: &str = "bench.tollgate.dev/index";
/// The policy changed every round.
const ROUND_POLICY: &str = "bench-all";
/// The other policies selecting every pod in the memory scenario.
const OTHER_ALL_POLICIES: [&str; 2] = ["bench-all-2", "bench-all-3"];
/// Field manager of the benchmark's applies.
const MANAGER: &str = "tollgate-bench";

/// Push latency from `kubectl apply` of an McpToolPolicy to every simulated
/// sidecar enforcing it, and the controller's memory with many policies.
#[derive(Parser, Debug)]
#[command(
    name = "controller_push",
    after_help = "It starts no cluster and no controller: scripts/bench/controller.sh does both,\n\
                  runs N = 1, 100 and 1000 and the memory scenario, and writes\n\
                  target/bench/controller.{jsonl,md}.\n\n\
                  Output: one JSON line per result on stdout; progress on stderr.\n\
                  Exit status: 0 done, 1 the benchmark failed (timeout, refused request),\n\
                  2 bad arguments, 3 --deadline reached."
)]
struct Args {
    /// The test cluster's kubeconfig (admin).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The controller's push endpoint, e.g. https://127.0.0.1:9443.
    #[arg(long)]
    push_url: Option<Uri>,
    /// The CA the controller's certificate chains to (its Secret's ca.crt);
    /// without it the push URL must be http:// and nothing is verified.
    #[arg(long)]
    controller_ca_file: Option<PathBuf>,
    /// The controller's admin endpoint (/metrics), e.g. http://127.0.0.1:9902.
    #[arg(long)]
    admin_url: Option<Uri>,
    /// The controller's PID, to read VmRSS/VmHWM and CPU time from /proc.
    #[arg(long)]
    controller_pid: Option<u32>,
    /// Namespace of the pods and policies (created if missing; the
    /// controller must watch it).
    #[arg(long, default_value = "tollgate-bench")]
    namespace: String,
    /// Simulated sidecars (and pods).
    #[arg(short = 'n', long, default_value_t = 100)]
    sidecars: usize,
    /// Measured push rounds (after one warm-up round).
    #[arg(short, long, default_value_t = 10)]
    rounds: usize,
    /// After the push rounds: apply this many policies in all (three select
    /// every pod, the rest one pod each), report memory and timings, and
    /// run the push rounds again with them in place. 0 = skip.
    #[arg(long, default_value_t = 0)]
    policies: usize,
    /// Kubernetes requests in flight at once when creating pods, tokens and policies.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Pause after each round's acks, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
    /// Longest wait for any one step (connecting, a round, statuses), in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The whole run gives up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    deadline: u64,
    /// Start the sidecars evenly over this many seconds instead of all at
    /// once (0: all at once, as after a controller restart).
    #[arg(long, default_value_t = 0.0)]
    connect_spread: f64,
    /// Runtime worker threads of this process (the sidecars).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Audience of the sidecar tokens (the controller's --audience).
    #[arg(long, default_value = DEFAULT_AUDIENCE)]
    audience: String,
    /// Free text copied into every output line as "label".
    #[arg(long, default_value = "")]
    label: String,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Filters `cargo bench` passes on to every bench target; ignored.
    #[arg(hide = true)]
    ignored: Vec<String>,
}

/// The flags a run needs, present.
struct Target {
    kubeconfig: PathBuf,
    push_url: Uri,
    admin_url: Uri,
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() && std::env::args().any(|a| a == "--bench") => {
            // `cargo bench -- --flag-for-criterion`: not ours.
            eprintln!(
                "controller_push: not a criterion benchmark, and these flags are not its own; nothing to do"
            );
            return;
        }
        Err(e) => e.exit(),
    };
    let target = match (&args.kubeconfig, &args.push_url, &args.admin_url) {
        (Some(k), Some(p), Some(a)) => Target {
            kubeconfig: k.clone(),
            push_url: p.clone(),
            admin_url: a.clone(),
        },
        _ if args.bench => {
            eprintln!(
                "controller_push: needs a running cluster and controller (--kubeconfig, --push-url, \
                 --admin-url); run scripts/bench/controller.sh, or see \
                 `cargo bench --bench controller_push -- --help`. Nothing to do."
            );
            return;
        }
        _ => {
            eprintln!(
                "controller_push: --kubeconfig, --push-url and --admin-url are required (see --help)"
            );
            std::process::exit(2);
        }
    };
    if args.sidecars == 0 || args.concurrency == 0 || args.threads == 0 {
        eprintln!("controller_push: --sidecars, --concurrency and --threads must be at least 1");
        std::process::exit(2);
    }
    let deadline = Duration::from_secs(args.deadline);
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("controller_push: --deadline of {deadline:?} reached; giving up");
        std::process::exit(3);
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(&args, &target));
    runtime.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("controller_push: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: &Args, target: &Target) -> anyhow::Result<()> {
    let bench = Bench::connect(args, target).await?;
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-tokens-")
        .tempdir()?;
    let setup = bench.setup(dir.path()).await?;
    let (fleet, connect_s) = bench.start_fleet(&setup).await?;
    let mut setup_json = setup.timings.clone();
    setup_json["connect_s"] = json!(secs(connect_s));
    let memory_streams = bench.memory();
    setup_json["controller_rss_kb_connected"] = json!(memory_streams.0);
    setup_json["controller_sockets_connected"] = bench.sockets();
    eprintln!(
        "{} sidecars connected in {:.2} s; controller RSS {} kB, sockets {}",
        args.sidecars,
        connect_s.as_secs_f64(),
        memory_streams.0,
        setup_json["controller_sockets_connected"]
    );

    let rounds = bench.push_rounds(&fleet, "").await?;
    bench.print(&rounds.json(&bench, 1, setup_json.clone()));

    if args.policies > 0 {
        let memory = bench.many_policies(&fleet, memory_streams).await?;
        bench.print(&memory);
        let rounds = bench.push_rounds(&fleet, "_p").await?;
        bench.print(&rounds.json(&bench, args.policies, setup_json));
    }
    fleet.stop();
    // Let the followers see the shutdown before the runtime drops their
    // connections under them (which they would log as a lost controller).
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Pods, tokens and how long they took.
struct Setup {
    /// Pod names, by index.
    pods: Vec<String>,
    /// Token files, by index.
    tokens: Vec<PathBuf>,
    /// `{"pods_s":..,"tokens_s":..}`.
    timings: Value,
}

/// What a round expects a sidecar `i` to enforce.
type Check = Arc<dyn Fn(usize, &PolicySet) -> bool + Send + Sync>;

/// One thing every sidecar must come to enforce.
struct Goal {
    id: u64,
    started: SystemTime,
    check: Check,
}

/// A sidecar reached a goal: which one, and how long after it was set.
struct Reached {
    goal: u64,
    after: Duration,
}

/// The simulated sidecars.
struct Fleet {
    stores: Vec<Arc<RuleStore>>,
    goal: watch::Sender<Option<Arc<Goal>>>,
    reached: tokio::sync::Mutex<mpsc::UnboundedReceiver<Reached>>,
    shutdown: watch::Sender<bool>,
    next_goal: std::sync::atomic::AtomicU64,
}

impl Fleet {
    /// Sets a goal starting now (call just before the change is made).
    fn aim(&self, check: Check) -> u64 {
        let id = self
            .next_goal
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.goal.send_replace(Some(Arc::new(Goal {
            id,
            started: SystemTime::now(),
            check,
        })));
        id
    }

    /// Every sidecar's time to reach goal `id`, or an error naming how many
    /// did not within `timeout`.
    async fn collect(&self, id: u64, timeout: Duration, what: &str) -> anyhow::Result<Vec<f64>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut reached = self.reached.lock().await;
        let mut samples = Vec::with_capacity(self.stores.len());
        while samples.len() < self.stores.len() {
            match tokio::time::timeout_at(deadline, reached.recv()).await {
                Ok(Some(r)) if r.goal == id => samples.push(r.after.as_secs_f64() * 1000.0),
                Ok(Some(_)) => {}
                Ok(None) => bail!("the sidecar observers stopped"),
                Err(_) => bail!(
                    "{what}: only {} of {} sidecars enforced it within {timeout:?}",
                    samples.len(),
                    self.stores.len()
                ),
            }
        }
        Ok(samples)
    }

    fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Watches one sidecar's rule store and reports when it reaches each goal.
async fn observe(
    i: usize,
    store: Arc<RuleStore>,
    mut goals: watch::Receiver<Option<Arc<Goal>>>,
    reached: mpsc::UnboundedSender<Reached>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = store.subscribe();
    let mut done = 0;
    loop {
        let goal = goals.borrow_and_update().clone();
        if let (Some(goal), Some(rules)) = (goal, store.current())
            && goal.id != done
            && (goal.check)(i, &rules.set)
        {
            done = goal.id;
            let after = rules
                .loaded_at
                .duration_since(goal.started)
                .unwrap_or_default();
            if reached
                .send(Reached {
                    goal: goal.id,
                    after,
                })
                .is_err()
            {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            r = changes.changed() => if r.is_err() { return },
            r = goals.changed() => if r.is_err() { return },
        }
    }
}

/// The results of a series of push rounds.
struct Rounds {
    samples: Vec<f64>,
    per_round: Vec<Value>,
    apply_ms: Vec<f64>,
    push: Value,
    ack: Value,
    loadavg: (String, String),
    /// The controller's sockets after the last round.
    sockets: Value,
}

impl Rounds {
    fn json(&self, bench: &Bench, policies: usize, setup: Value) -> Value {
        let (rss, hwm) = bench.memory();
        let mut apply = self.apply_ms.clone();
        json!({
            "bench": "controller_push",
            "kind": "push",
            "label": bench.args.label,
            "namespace": bench.args.namespace,
            "sidecars": bench.args.sidecars,
            "policies": policies,
            "rounds": self.per_round.len(),
            "samples": self.samples.len(),
            "measure": "apply started -> sidecar enforces (compiled set in force)",
            "latency_ms": stats(&mut self.samples.clone()),
            "apply_call_ms": stats(&mut apply),
            "per_round": self.per_round,
            "controller_push_seconds": self.push,
            "controller_ack_seconds": self.ack,
            "controller_rss_kb": rss,
            "controller_hwm_kb": hwm,
            "controller_sockets": self.sockets,
            "setup": setup,
            "loadavg_before": self.loadavg.0,
            "loadavg_after": self.loadavg.1,
        })
    }
}

/// The run's shared state.
struct Bench<'a> {
    args: &'a Args,
    target: &'a Target,
    client: Client,
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    /// Makes every run's tool names new, so a re-run against the same
    /// namespace still changes the policy.
    nonce: String,
    /// The apiserver's port, to tell the controller's sockets apart.
    apiserver_port: Option<u16>,
}

impl<'a> Bench<'a> {
    async fn connect(args: &'a Args, target: &'a Target) -> anyhow::Result<Bench<'a>> {
        let kc = kube::config::Kubeconfig::read_from(&target.kubeconfig)
            .with_context(|| format!("reading {}", target.kubeconfig.display()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        config.read_timeout = Some(Duration::from_secs(60));
        let apiserver_port = config.cluster_url.port_u16();
        let client = Client::try_from(config)?;
        let nonce = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000_000)
            .unwrap_or_default();
        Ok(Bench {
            args,
            target,
            client,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            nonce: format!("{nonce}"),
            apiserver_port,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.timeout)
    }

    fn print(&self, v: &Value) {
        println!("{v}");
    }

    /// The namespace, its ServiceAccount, the pods and their tokens.
    async fn setup(&self, dir: &Path) -> anyhow::Result<Setup> {
        let ns = &self.args.namespace;
        let created = Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await;
        allow_exists(created).context("creating the namespace")?;
        let accounts = Api::<ServiceAccount>::namespaced(self.client.clone(), ns);
        let created = accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
            )
            .await;
        allow_exists(created).context("creating the ServiceAccount")?;

        let pods_api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let started = Instant::now();
        let uids: Vec<String> = self
            .bounded(self.args.sidecars, |i| {
                let api = pods_api.clone();
                async move { create_pod(&api, i).await }
            })
            .await
            .context("creating pods")?;
        let pods_s = started.elapsed();
        eprintln!("{} pods ready in {:.2} s", uids.len(), pods_s.as_secs_f64());

        let started = Instant::now();
        let audience = self.args.audience.clone();
        let tokens: Vec<PathBuf> = self
            .bounded(self.args.sidecars, |i| {
                let api = accounts.clone();
                let uid = uids[i].clone();
                let path = dir.join(pod_name(i));
                let audience = audience.clone();
                async move {
                    let token = pod_token(&api, &pod_name(i), &uid, &audience).await?;
                    std::fs::write(&path, token)?;
                    Ok(path)
                }
            })
            .await
            .context("requesting pod-bound tokens")?;
        let tokens_s = started.elapsed();
        eprintln!("{} tokens in {:.2} s", tokens.len(), tokens_s.as_secs_f64());
        Ok(Setup {
            pods: (0..self.args.sidecars).map(pod_name).collect(),
            tokens,
            timings: json!({"pods_s": secs(pods_s), "tokens_s": secs(tokens_s)}),
        })
    }

    /// Runs `f(0..n)` with at most `--concurrency` in flight; results in order.
    async fn bounded<T, F, Fut>(&self, n: usize, f: F) -> anyhow::Result<Vec<T>>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let limit = Duration::from_secs(60);
        futures_util::stream::iter((0..n).map(|i| {
            let fut = f(i);
            async move {
                tokio::time::timeout(limit, fut)
                    .await
                    .map_err(|_| anyhow!("item {i}: no answer within {limit:?}"))?
            }
        }))
        .buffered(self.args.concurrency)
        .try_collect()
        .await
    }

    /// Starts the sidecars once the controller knows every pod; returns
    /// when each has its first snapshot.
    async fn start_fleet(&self, setup: &Setup) -> anyhow::Result<(Fleet, Duration)> {
        let n = self.args.sidecars;
        let timeout = self.timeout();
        self.wait_metric("tollgate_controller_sidecar_pods", n as f64, timeout)
            .await
            .context("waiting for the controller to see every pod (is it watching --namespace?)")?;
        let metrics = Metrics::new()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (goal, goal_rx) = watch::channel(None);
        let (reached_tx, reached_rx) = mpsc::unbounded_channel();
        let mut stores = Vec::with_capacity(n);
        let started = Instant::now();
        let gap = Duration::from_secs_f64(self.args.connect_spread.max(0.0) / n as f64);
        for (i, (pod, token)) in setup.pods.iter().zip(&setup.tokens).enumerate() {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let store = Arc::new(RuleStore::new());
            let follower = Follower::new(
                ManagedConfig {
                    controller: self.target.push_url.clone(),
                    controller_tls: match &self.args.controller_ca_file {
                        Some(ca) => ControllerTls::Verify(CaSource::File(ca.clone())),
                        None => ControllerTls::Insecure,
                    },
                    token_file: token.clone(),
                    namespace: self.args.namespace.clone(),
                    pod: pod.clone(),
                    snapshot_file: None,
                    fail_open: false,
                    unselected: tollgate_sidecar::Unselected::Deny,
                },
                store.clone(),
                metrics.clone(),
                Arc::new(MemoryInFlight::default()),
                Arc::new(VmLabels::default()),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            tokio::spawn(follower.run(shutdown_rx.clone()));
            tokio::spawn(observe(
                i,
                store.clone(),
                goal_rx.clone(),
                reached_tx.clone(),
                shutdown_rx.clone(),
            ));
            stores.push(store);
        }
        let fleet = Fleet {
            stores,
            goal,
            reached: tokio::sync::Mutex::new(reached_rx),
            shutdown,
            next_goal: Default::default(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let connected = fleet
                .stores
                .iter()
                .filter(|s| s.current().is_some())
                .count();
            if connected == n {
                break;
            }
            if Instant::now() > deadline {
                fleet.stop();
                bail!(
                    "only {connected} of {n} sidecars had their first snapshot after {timeout:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((fleet, started.elapsed()))
    }

    /// One warm-up round, then `--rounds` measured ones, each changing the
    /// policy that selects every pod.
    async fn push_rounds(&self, fleet: &Fleet, tag: &str) -> anyhow::Result<Rounds> {
        let loadavg_before = loadavg();
        let mut samples = Vec::new();
        let mut per_round = Vec::new();
        let mut apply_ms = Vec::new();
        let mut before = None;
        for round in 0..=self.args.rounds {
            if round == 1 {
                before = Some(self.scrape().await?);
            }
            let tool = format!("bench_{}{tag}_{round}", self.nonce);
            let cpu_before = self.cpu_ms();
            let check_tool = tool.clone();
            let name = format!("{}/{ROUND_POLICY}", self.args.namespace);
            let acks_before = self.metric("tollgate_controller_acks_total").await?;
            let id = fleet.aim(Arc::new(move |_, set: &PolicySet| {
                set.policies()
                    .iter()
                    .any(|p| *p.name == *name && p.names_tool_exactly(&check_tool))
            }));
            let started = Instant::now();
            self.apply_policy(ROUND_POLICY, &all_pods(), &tool).await?;
            let apply = started.elapsed().as_secs_f64() * 1000.0;
            let mut got = fleet
                .collect(id, self.timeout(), &format!("push round {round}"))
                .await?;
            let cpu = self.cpu_ms().zip(cpu_before).map(|(a, b)| a - b);
            let s = stats(&mut got);
            eprintln!(
                "{tag:>13} round {round:>2}{}: p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  apply call {apply:>6.1} ms  controller CPU {} ms",
                if round == 0 { " (warm-up)" } else { "" },
                s["p50"].as_f64().unwrap_or_default(),
                s["p99"].as_f64().unwrap_or_default(),
                s["max"].as_f64().unwrap_or_default(),
                cpu.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            );
            if round > 0 {
                samples.extend_from_slice(&got);
                apply_ms.push(apply);
                per_round.push(json!({"round": round, "latency_ms": s, "apply_call_ms": round3(apply), "controller_cpu_ms": cpu}));
            }
            let want = acks_before + self.args.sidecars as f64;
            if let Err(e) = self
                .wait_metric("tollgate_controller_acks_total", want, self.timeout())
                .await
            {
                eprintln!("warning: round {round}: {e:#}");
            }
            tokio::time::sleep(Duration::from_millis(self.args.pause_ms)).await;
        }
        let after = self.scrape().await?;
        let before = before.unwrap_or_default();
        Ok(Rounds {
            samples,
            per_round,
            apply_ms,
            push: histogram_delta(&before, &after, "tollgate_controller_push_seconds"),
            ack: histogram_delta(&before, &after, "tollgate_controller_ack_seconds"),
            loadavg: (loadavg_before, loadavg()),
            sockets: self.sockets(),
        })
    }

    /// The memory scenario: `--policies` policies in all, each sidecar
    /// enforcing its own and the three that select every pod.
    async fn many_policies(
        &self,
        fleet: &Fleet,
        streams_only: (u64, u64),
    ) -> anyhow::Result<Value> {
        let total = self.args.policies;
        let own = total.saturating_sub(1 + OTHER_ALL_POLICIES.len());
        let ns = self.args.namespace.clone();
        let loadavg_before = loadavg();
        let before_policies = self.memory();
        let cpu_before = self.cpu_ms();
        let check_ns = ns.clone();
        let id = fleet.aim(Arc::new(move |i, set: &PolicySet| {
            let has = |name: &str| {
                set.policies().iter().any(|p| {
                    p.name
                        .strip_prefix(&*check_ns)
                        .and_then(|r| r.strip_prefix('/'))
                        == Some(name)
                })
            };
            OTHER_ALL_POLICIES.iter().all(|p| has(p)) && (i >= own || has(&one_pod_policy(i)))
        }));
        let started = Instant::now();
        let mut names: Vec<(String, Value, String)> = OTHER_ALL_POLICIES
            .iter()
            .map(|p| (p.to_string(), all_pods(), format!("{p}_tool")))
            .collect();
        names.extend((0..own).map(|i| {
            (
                one_pod_policy(i),
                json!({"matchLabels": {INDEX_LABEL: i.to_string()}}),
                format!("pod_{i}_tool"),
            )
        }));
        let names = Arc::new(names);
        self.bounded(names.len(), |i| {
            let names = names.clone();
            async move {
                let (name, selector, tool) = &names[i];
                self.apply_policy(name, selector, tool).await
            }
        })
        .await
        .context("applying the policies")?;
        let applied_s = started.elapsed();
        eprintln!(
            "{} more policies ({total} in all) applied in {:.2} s",
            names.len(),
            applied_s.as_secs_f64()
        );
        let samples = fleet
            .collect(id, self.timeout(), "the memory scenario's policies")
            .await?;
        let enforced_s = samples.iter().cloned().fold(0.0, f64::max) / 1000.0;
        let enforced_mem = self.memory();
        let cpu_enforced = self.cpu_ms();
        let sockets_enforced = self.sockets();
        eprintln!(
            "every sidecar enforces its policies {enforced_s:.2} s after the first apply; controller RSS {} kB",
            enforced_mem.0
        );
        let (accepted_s, programmed_s) = self.wait_statuses(started, total).await?;
        let settled_mem = self.memory();
        Ok(json!({
            "bench": "controller_push",
            "kind": "memory",
            "label": self.args.label,
            "namespace": ns,
            "sidecars": self.args.sidecars,
            "policies": total,
            "policies_selecting_all": 1 + OTHER_ALL_POLICIES.len(),
            "policies_selecting_one": own,
            "rss_kb_streams_1_policy": before_policies.0,
            "rss_kb_streams_0_policies": streams_only.0,
            "rss_kb_enforced": enforced_mem.0,
            "rss_kb_status_settled": settled_mem.0,
            "hwm_kb": settled_mem.1,
            "controller_sockets_enforced": sockets_enforced,
            "controller_sockets_settled": self.sockets(),
            "apply_calls_s": secs(applied_s),
            "all_enforced_s": enforced_s,
            "all_accepted_s": accepted_s,
            "all_programmed_s": programmed_s,
            "controller_cpu_ms_to_enforced": cpu_enforced.zip(cpu_before).map(|(a, b)| a - b),
            "controller_cpu_ms_to_settled": self.cpu_ms().zip(cpu_before).map(|(a, b)| a - b),
            "loadavg_before": loadavg_before,
            "loadavg_after": loadavg(),
        }))
    }

    /// Seconds from `started` until every policy's status says Accepted,
    /// and until every one says Programmed (None if not within --timeout).
    async fn wait_statuses(
        &self,
        started: Instant,
        total: usize,
    ) -> anyhow::Result<(Option<f64>, Option<f64>)> {
        let api = Api::<PolicyObject>::namespaced(self.client.clone(), &self.args.namespace);
        let deadline = Instant::now() + self.timeout();
        let (mut accepted_s, mut programmed_s) = (None, None);
        while programmed_s.is_none() && Instant::now() < deadline {
            let list =
                tokio::time::timeout(Duration::from_secs(60), api.list(&ListParams::default()))
                    .await
                    .map_err(|_| anyhow!("listing the policies took over 60 s"))??;
            let count = |type_: &str| {
                list.items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().is_some_and(|s| {
                            s.observed_generation == p.metadata.generation
                                && s.conditions
                                    .iter()
                                    .any(|c| c.type_ == type_ && c.status == "True")
                        })
                    })
                    .count()
            };
            let (accepted, programmed) = (count("Accepted"), count("Programmed"));
            let now = secs(started.elapsed());
            if accepted >= total && accepted_s.is_none() {
                accepted_s = Some(now);
                eprintln!("every status says Accepted after {now:.2} s");
            }
            if programmed >= total {
                programmed_s = Some(now);
                eprintln!("every status says Programmed after {now:.2} s");
            } else {
                eprintln!(
                    "statuses after {now:.1} s: {accepted} Accepted, {programmed} Programmed of {total}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Ok((accepted_s, programmed_s))
    }

    /// Server-side applies policy `name` (field manager `tollgate-bench`).
    async fn apply_policy(&self, name: &str, selector: &Value, tool: &str) -> anyhow::Result<()> {
        let api = Api::<PolicyObject>::namespaced(self.client.clone(), &self.args.namespace);
        let body = json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "McpToolPolicy",
            "metadata": {"name": name, "namespace": self.args.namespace},
            "spec": {
                "selector": selector,
                "defaultAction": "Deny",
                "rules": [{"name": "bench", "tools": [tool], "action": "Allow"}],
            },
        });
        tokio::time::timeout(
            Duration::from_secs(60),
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(body),
            ),
        )
        .await
        .map_err(|_| anyhow!("applying policy {name} took over 60 s"))?
        .with_context(|| format!("applying policy {name}"))?;
        Ok(())
    }

    /// The controller's /metrics as `name{labels}` → value.
    async fn scrape(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let uri: Uri = format!(
            "{}/metrics",
            self.target.admin_url.to_string().trim_end_matches('/')
        )
        .parse()?;
        let fetch = async {
            let resp = self.http.get(uri.clone()).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .map_err(|_| anyhow!("{uri} did not answer within 10 s"))?
            .with_context(|| format!("reading {uri}"))?;
        Ok(String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect())
    }

    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        Ok(self.scrape().await?.get(name).copied().unwrap_or(0.0))
    }

    /// Waits until the controller's metric `name` is at least `want`.
    async fn wait_metric(&self, name: &str, want: f64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.metric(name).await?;
            if have >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} is {have} after {timeout:?}, expected {want}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The controller's (VmRSS, VmHWM) in kB, or zeros without --controller-pid.
    fn memory(&self) -> (u64, u64) {
        let Some(text) = self
            .args
            .controller_pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        else {
            return (0, 0);
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The controller's TCP sockets: in all, accepted on the push port
    /// (sidecar streams and ack connections), and to the apiserver.
    fn sockets(&self) -> Value {
        let Some(pid) = self.args.controller_pid else {
            return Value::Null;
        };
        let inodes: std::collections::HashSet<String> =
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect();
        let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
        let push = self.target.push_url.port_u16();
        let (mut total, mut sidecars, mut apiserver) = (0, 0, 0);
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for fields in text
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
            {
                if fields.len() < 10 || !inodes.contains(fields[9]) {
                    continue;
                }
                total += 1;
                // Established only: skip the listeners.
                if fields[3] == "01" && port(fields[1]) == push {
                    sidecars += 1;
                }
                if fields[3] == "01" && port(fields[2]) == self.apiserver_port {
                    apiserver += 1;
                }
            }
        }
        json!({"tcp": total, "from_sidecars": sidecars, "to_apiserver": apiserver})
    }

    /// The controller's CPU time (user + system) in ms.
    fn cpu_ms(&self) -> Option<u64> {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.args.controller_pid?)).ok()?;
        let rest = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3, utime 14 and stime 15 (1-based).
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks * 10) // USER_HZ is 100 on Linux.
    }
}

fn pod_name(i: usize) -> String {
    format!("sidecar-{i:04}")
}

fn one_pod_policy(i: usize) -> String {
    format!("bench-pod-{i:04}")
}

fn all_pods() -> Value {
    json!({"matchLabels": {APP_LABEL.0: APP_LABEL.1}})
}

/// Creates pod `i` (or finds it from an earlier run); returns its uid.
async fn create_pod(api: &Api<Pod>, i: usize) -> anyhow::Result<String> {
    let name = pod_name(i);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {SIDECAR_LABEL: "true", APP_LABEL.0: APP_LABEL.1, INDEX_LABEL: i.to_string()},
        },
        "spec": {
            "serviceAccountName": "bench",
            "containers": [{"name": "mcp", "image": "example.invalid/mcp"}],
        },
    }))?;
    let pod = match api.create(&PostParams::default(), &pod).await {
        Ok(p) => p,
        Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
        Err(e) => return Err(e).with_context(|| format!("creating pod {name}")),
    };
    pod.meta()
        .uid
        .clone()
        .ok_or_else(|| anyhow!("pod {name} has no uid"))
}

/// A token for the pod's ServiceAccount, bound to the pod — what the
/// injected projected volume holds.
async fn pod_token(
    api: &Api<ServiceAccount>,
    pod: &str,
    uid: &str,
    audience: &str,
) -> anyhow::Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_owned()],
            expiration_seconds: Some(4 * 3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.to_owned()),
                uid: Some(uid.to_owned()),
            }),
        },
        ..Default::default()
    };
    let answer = api
        .create_token_request("bench", &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for pod {pod}"))?;
    answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| anyhow!("the TokenRequest for pod {pod} has no status"))
}

fn allow_exists<T>(r: Result<T, kube::Error>) -> anyhow::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Exact nearest-rank percentiles of `v` (sorted in place), in its unit.
fn stats(v: &mut [f64]) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        round3(v[rank - 1])
    };
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    json!({
        "n": v.len(),
        "min": round3(v[0]),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round3(v[v.len() - 1]),
        "mean": round3(mean),
    })
}

/// A histogram's change between two scrapes: count, mean, and the bucket
/// bounds holding the median and the 99th percentile.
fn histogram_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    name: &str,
) -> Value {
    let delta = |key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    let count = delta(&format!("{name}_count"));
    let sum = delta(&format!("{name}_sum"));
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = after
        .keys()
        .filter_map(|k| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, delta(k)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let bound = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| count > 0.0 && *c >= q * count)
            .map(|(le, _)| {
                if le.is_finite() {
                    json!(le * 1000.0)
                } else {
                    json!("+Inf")
                }
            })
    };
    json!({
        "count": count,
        "mean_ms": if count > 0.0 { json!(round3(sum / count * 1000.0)) } else { Value::Null },
        "p50_le_ms": bound(0.50),
        "p99_le_ms": bound(0.99),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
