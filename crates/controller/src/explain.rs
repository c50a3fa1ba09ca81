//! `kubectl tollgate explain POD`: which policies govern a pod, and their
//! rules in the order the sidecar judges them.
//!
//! No second implementation of selection or compilation: the pod, its
//! namespace and every `McpToolPolicy` of the namespace and
//! `ClusterMcpToolPolicy` are fed into the controller's own [`Index`] (the
//! selectors, the last accepted generation of a refused policy), and the
//! pod's snapshot is compiled with the sidecar's `compile_set`. What this
//! prints is what a sidecar given that snapshot enforces.
//!
//! Read-only: it gets and lists, and never changes anything.

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, ListParams};

use tollgate_policy::Problem;
use tollgate_policy::compile::{CompiledPolicy, CompiledRule};
use tollgate_policy::load::compile_set;
use tollgate_policy::snapshot::SIDECAR_LABEL;
use tollgate_policy::spec::{Action, Mode};

use crate::index::{Index, NamespaceInput, PodInput, PolicyInput};
use crate::object::{ClusterPolicyObject, PolicyObject};

/// Why a pod could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The pod does not exist.
    #[error("pod {0} not found")]
    NotFound(String),
    /// The apiserver could not be asked.
    #[error("asking the apiserver: {0}")]
    Api(#[from] kube::Error),
    /// The snapshot the controller would push does not compile (version
    /// skew between this binary and the controller's?).
    #[error("the pod's snapshot does not compile in this tollgate: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Compile {
        /// What is wrong.
        problems: Vec<Problem>,
    },
}

/// What governs one pod.
#[derive(Debug)]
pub enum Explanation {
    /// The pod runs no tollgate sidecar (no `tollgate.dev/sidecar=true`
    /// label): no policy applies to it.
    NoSidecar {
        /// `namespace/name`.
        pod: String,
    },
    /// The pod runs a sidecar; these policies (possibly none) govern it.
    Governed {
        /// `namespace/name`.
        pod: String,
        /// The snapshot version the sidecar must enforce.
        version: String,
        /// The governing policies, in the sidecar's order.
        policies: Vec<Governing>,
    },
}

/// One governing policy.
#[derive(Debug)]
pub struct Governing {
    /// `namespace/name` of a `McpToolPolicy`, the name of a
    /// `ClusterMcpToolPolicy`.
    pub name: String,
    /// The generation in force (the last accepted one).
    pub generation: i64,
    /// Enforce or Audit.
    pub mode: Mode,
    /// What a call no rule matches gets.
    pub default_action: Action,
    /// The rules, in the order they are judged.
    pub rules: Vec<RuleLine>,
}

/// One rule as `explain` lists it.
#[derive(Debug)]
pub struct RuleLine {
    /// The step of the evaluation order it belongs to (1-4, see
    /// `tollgate_policy::evaluate`).
    pub step: u8,
    /// Its name.
    pub name: String,
    /// What it does.
    pub action: &'static str,
    /// `tool` or `resource`.
    pub kind: &'static str,
}

impl Explanation {
    /// Whether any policy governs the pod.
    pub fn governed(&self) -> bool {
        matches!(self, Explanation::Governed { policies, .. } if !policies.is_empty())
    }
}

/// Explains the pod `namespace/name`.
pub async fn explain(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Explanation, ExplainError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods
        .get_opt(name)
        .await?
        .ok_or_else(|| ExplainError::NotFound(format!("{namespace}/{name}")))?;
    let Some(pod_input) = PodInput::from_pod(&pod) else {
        return Ok(Explanation::NoSidecar {
            pod: format!("{namespace}/{name}"),
        });
    };
    let mut index = Index::new();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(ns) = namespaces.get_opt(namespace).await?
        && let Some(input) = NamespaceInput::of(&ns)
    {
        index.relist_namespaces(vec![input]);
    }
    let policies: Api<PolicyObject> = Api::namespaced(client.clone(), namespace);
    let namespaced = policies.list(&ListParams::default()).await?;
    index.relist_policies(
        namespaced
            .items
            .iter()
            .filter_map(PolicyInput::of)
            .collect(),
        false,
    );
    let cluster_api: Api<ClusterPolicyObject> = Api::all(client);
    let cluster = match cluster_api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        // An installation without the cluster CRD has no cluster policies.
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    index.relist_policies(cluster.iter().filter_map(PolicyInput::of).collect(), true);
    index.apply_pod(pod_input);
    let Some(subscription) = index.subscribe(namespace, name) else {
        return Ok(Explanation::NoSidecar {
            pod: format!("{namespace}/{name}"),
        });
    };
    let snapshot = subscription.rx.borrow().snapshot.clone();
    let set =
        compile_set(&snapshot.loaded()).map_err(|problems| ExplainError::Compile { problems })?;
    let policies = set
        .policies()
        .iter()
        .zip(&snapshot.policies)
        .map(|(compiled, p)| governing(compiled, p.generation))
        .collect();
    Ok(Explanation::Governed {
        pod: format!("{namespace}/{name}"),
        version: snapshot.version,
        policies,
    })
}

fn governing(p: &CompiledPolicy, generation: i64) -> Governing {
    let mut rules: Vec<RuleLine> = p.rules().iter().map(rule_line).collect();
    // Stable: within a step, the rules keep their order in the policy.
    rules.sort_by_key(|r| r.step);
    Governing {
        name: p.name.to_string(),
        generation,
        mode: p.mode,
        default_action: p.default_action,
        rules,
    }
}

/// The rule's step in the order `tollgate_policy::evaluate` documents:
/// 1 deny tool rules, 2 deny resource rules, 3 allow resource rules,
/// 4 allow tool rules (first match allows).
fn rule_line(r: &CompiledRule) -> RuleLine {
    let resource = !r.has_tools && !r.resources.is_empty();
    let (step, action) = match (r.action, resource) {
        (Action::Deny, false) => (1, "Deny"),
        (Action::Deny, true) => (2, "Deny"),
        (Action::Allow, true) => (3, "Allow"),
        (Action::Allow, false) if r.approval.is_some() => (4, "RequireApproval"),
        (Action::Allow, false) => (4, "Allow"),
    };
    RuleLine {
        step,
        name: r.name.to_string(),
        action,
        kind: if resource { "resource" } else { "tool" },
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::NoSidecar { pod } => write!(
                f,
                "pod {pod} runs no tollgate sidecar (no {SIDECAR_LABEL}=true label): no policy governs it"
            ),
            Explanation::Governed {
                pod,
                version,
                policies,
            } if policies.is_empty() => write!(
                f,
                "pod {pod} runs a tollgate sidecar, but no accepted policy selects it (snapshot {version})"
            ),
            Explanation::Governed {
                pod,
                version,
                policies,
            } => {
                writeln!(
                    f,
                    "pod {pod}: {} policies (snapshot {version}); every Enforce policy must allow a call",
                    policies.len()
                )?;
                for p in policies {
                    writeln!(
                        f,
                        "\n{} (generation {}, {:?}, defaultAction {:?})",
                        p.name, p.generation, p.mode, p.default_action
                    )?;
                    for (i, r) in p.rules.iter().enumerate() {
                        writeln!(
                            f,
                            "  {}. [step {}] {} {} rule {}",
                            i + 1,
                            r.step,
                            r.action,
                            r.kind,
                            r.name
                        )?;
                    }
                    writeln!(f, "  then: defaultAction {:?}", p.default_action)?;
                }
                Ok(())
            }
        }
    }
}
