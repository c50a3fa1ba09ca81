//! Which pods get the sidecar, and the JSON patch that adds it.
//!
//! Pure: a pod and the settings in, a decision out. The
//! MutatingWebhookConfiguration does the coarse selection with two webhooks
//! (a labelled namespace, or a labelled pod); this module re-checks what it
//! can see on the pod itself — `tollgate.dev/inject: disabled` wins, a pod
//! that already has the sidecar is left alone (so a second webhook call or a
//! reinvocation never injects twice), and the controller never injects into
//! itself.

use std::collections::BTreeMap;

use json_patch::Patch;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use tollgate_policy::snapshot::SIDECAR_LABEL;

/// The opt-in/opt-out label (namespace or pod): `enabled` / `disabled`.
pub(crate) const INJECT_LABEL: &str = "tollgate.dev/inject";
/// The injected container's name.
pub(crate) const CONTAINER: &str = "tollgate";
/// Port the sidecar serves MCP on (annotation `tollgate.dev/listen-port`).
pub(crate) const LISTEN_PORT: &str = "tollgate.dev/listen-port";
/// Port the MCP server listens on, on localhost (`tollgate.dev/upstream-port`).
pub(crate) const UPSTREAM_PORT: &str = "tollgate.dev/upstream-port";
/// Path prefix of the MCP server (`tollgate.dev/upstream-path`).
pub(crate) const UPSTREAM_PATH: &str = "tollgate.dev/upstream-path";
/// `"true"` lets calls through before the first snapshot.
pub(crate) const FAIL_OPEN: &str = "tollgate.dev/fail-open";
/// The sidecar's CPU request.
pub(crate) const SIDECAR_CPU: &str = "tollgate.dev/sidecar-cpu";
/// The sidecar's memory request and limit.
pub(crate) const SIDECAR_MEMORY: &str = "tollgate.dev/sidecar-memory";
/// A ConfigMap in the pod's namespace whose key `jwks.json` holds the JWKS
/// that signs agents' JWTs: the sidecar runs with `--identity jwt` and
/// re-reads it when the ConfigMap changes (key rotation without restarts).
pub(crate) const JWKS_CONFIGMAP: &str = "tollgate.dev/jwks-configmap";
/// The `iss` agents' JWTs must carry; alone (without [`JWKS_CONFIGMAP`]) the
/// sidecar discovers the issuer's keys over HTTPS (OpenID Connect).
pub(crate) const JWT_ISSUER: &str = "tollgate.dev/jwt-issuer";
/// The `aud` agents' JWTs must carry (with [`JWKS_CONFIGMAP`] or [`JWT_ISSUER`]).
pub(crate) const JWT_AUDIENCE: &str = "tollgate.dev/jwt-audience";
/// `"true"` refuses requests without a bearer token (with [`JWKS_CONFIGMAP`] or [`JWT_ISSUER`]).
pub(crate) const REQUIRE_IDENTITY: &str = "tollgate.dev/require-identity";
/// `stdio` runs the MCP server container itself behind tollgate
/// (`tollgate proxy --upstream-command -- <its command>`) instead of adding
/// a sidecar in front of its port; `http` (the default) adds the sidecar.
pub(crate) const TRANSPORT: &str = "tollgate.dev/transport";
/// With `stdio`: which container speaks stdio (default: the only one).
pub(crate) const STDIO_CONTAINER: &str = "tollgate.dev/stdio-container";
/// With `stdio`: the server's command as a JSON array, for a container
/// whose `command` the pod spec leaves to the image.
pub(crate) const STDIO_COMMAND: &str = "tollgate.dev/stdio-command";
/// The environment variable that hands the sidecar the controller's CA.
pub(crate) const CONTROLLER_CA_ENV: &str = "TOLLGATE_CONTROLLER_CA_PEM";
/// The name of the port the sidecar owns; Services target it.
pub(crate) const PORT_NAME: &str = "mcp";
/// The sidecar's admin port (metrics, probes).
pub(crate) const ADMIN_PORT: i32 = 9901;

const TOKEN_VOLUME: &str = "tollgate-token";
const STATE_VOLUME: &str = "tollgate-state";
const JWKS_VOLUME: &str = "tollgate-jwks";
const BIN_VOLUME: &str = "tollgate-bin";
const BIN_DIR: &str = "/var/run/tollgate-bin";
const TOKEN_DIR: &str = "/var/run/secrets/tollgate";
const JWKS_DIR: &str = "/etc/tollgate/jwks";
const STATE_DIR: &str = "/var/run/tollgate";

/// Which webhook asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The pod is in a namespace labelled `tollgate.dev/inject=enabled`.
    Namespace,
    /// The pod itself is labelled `tollgate.dev/inject=enabled`.
    Pod,
}

/// Injection settings.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// The sidecar image.
    pub image: String,
    /// Its pull policy, if set.
    pub pull_policy: Option<String>,
    /// Where sidecars find the controller (`https://`).
    pub controller_url: String,
    /// The CA (PEM) that signs the controller's certificate: the sidecar
    /// trusts exactly this for the push channel. Filled in at start.
    pub controller_ca: String,
    /// The audience of the projected token.
    pub audience: String,
    /// Add the sidecar as a native sidecar (an init container with
    /// `restartPolicy: Always`), which Kubernetes ≥ 1.29 supports.
    pub native_sidecars: bool,
    /// `app.kubernetes.io/name` of the controller's own pods.
    pub controller_name: String,
    /// More `tollgate proxy` flags for every injected sidecar (e.g.
    /// `--redis-url=…` for shared budgets, `--identity=kubernetes`).
    pub extra_args: Vec<String>,
    /// More environment variables for every injected sidecar (e.g.
    /// `TOLLGATE_REDIS_CA_PEM`: text a flag would carry awkwardly).
    pub extra_env: Vec<(String, String)>,
}

/// The webhook's answer for one pod.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Admit unchanged, and why.
    Skip(&'static str),
    /// Admit with this patch.
    Inject(Patch),
}

/// Why the webhook refuses a pod: a bad or clashing annotation or port.
/// Its text is what the user sees from `kubectl`, so it names the annotation
/// and what to write instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "container {container:?} declares a port named {PORT_NAME:?}, which the tollgate sidecar owns so that Services send traffic through it; rename the container's port and let it listen on 127.0.0.1:{upstream_port}"
    )]
    PortNameTaken {
        container: String,
        upstream_port: i32,
    },
    #[error(
        "container {container:?} uses port {port}, which the tollgate sidecar needs; set the annotation {LISTEN_PORT} to a free port"
    )]
    PortTaken { container: String, port: i32 },
    #[error(transparent)]
    Stdio(#[from] stdio::StdioError),
    #[error("annotation {annotation}: {value:?} is not a port (1-65535)")]
    NotAPort {
        annotation: &'static str,
        value: String,
    },
    #[error(
        "annotation {annotation}: {value:?} is not a Kubernetes quantity such as \"50m\" or \"64Mi\""
    )]
    NotAQuantity {
        annotation: &'static str,
        value: String,
    },
    #[error("annotation {annotation}: {value:?} must be \"true\" or \"false\"")]
    NotABool {
        annotation: &'static str,
        value: String,
    },
    #[error("annotation {UPSTREAM_PATH}: {0:?} must be a path such as \"/mcp-prefix\"")]
    NotAPath(String),
    #[error(
        "annotations {LISTEN_PORT} and {UPSTREAM_PORT} must differ from each other and from {ADMIN_PORT} (the sidecar's admin port)"
    )]
    PortsClash,
    #[error(
        "annotation {0} needs {JWKS_CONFIGMAP} (a ConfigMap in this namespace whose key jwks.json holds the JWKS) or {JWT_ISSUER} (an https issuer whose keys are discovered)"
    )]
    NoKeySource(&'static str),
    #[error(
        "annotation {JWKS_CONFIGMAP}: {0:?} is not a ConfigMap name (lower-case letters, digits, '-' and '.')"
    )]
    NotAConfigMapName(String),
    #[error(
        "annotations {JWKS_CONFIGMAP}/{JWT_ISSUER} ask for JWT identity, but every sidecar already runs with {0} (Helm value sidecar.identity.mode): use one or the other"
    )]
    IdentityTwice(String),
    #[error("annotation {annotation}: {value:?} must be a non-empty string")]
    NotText {
        annotation: &'static str,
        value: String,
    },
    #[error(
        "annotation {JWT_ISSUER}: without {JWKS_CONFIGMAP} the keys are discovered from the issuer, which must be an https:// URL"
    )]
    IssuerNotHttps,
}

/// Decides for `pod`; an error is a pod the webhook refuses (a bad
/// annotation), with the message the user sees from `kubectl`.
pub(crate) fn decide(route: Route, pod: &Pod, cfg: &InjectConfig) -> Result<Outcome, Refusal> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let label = |k: &str| labels.get(k).map(String::as_str);
    if label(INJECT_LABEL) == Some("disabled") {
        return Ok(Outcome::Skip(
            "the pod opted out with tollgate.dev/inject=disabled",
        ));
    }
    if route == Route::Pod && label(INJECT_LABEL) != Some("enabled") {
        return Ok(Outcome::Skip(
            "the pod is not labelled tollgate.dev/inject=enabled",
        ));
    }
    if label("app.kubernetes.io/name") == Some(cfg.controller_name.as_str()) {
        return Ok(Outcome::Skip("the tollgate controller is never injected"));
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let all_containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    if label(SIDECAR_LABEL) == Some("true")
        || all_containers
            .clone()
            .any(|c| c.name == CONTAINER || c.name == stdio::INSTALL_CONTAINER)
    {
        return Ok(Outcome::Skip("the sidecar is already there"));
    }
    let settings = Settings::read(pod, cfg)?;
    for c in all_containers {
        for p in c.ports.iter().flatten() {
            if p.name.as_deref() == Some(PORT_NAME) {
                return Err(Refusal::PortNameTaken {
                    container: c.name.clone(),
                    upstream_port: settings.upstream_port,
                });
            }
            if p.container_port == settings.listen_port || p.container_port == ADMIN_PORT {
                return Err(Refusal::PortTaken {
                    container: c.name.clone(),
                    port: p.container_port,
                });
            }
        }
    }
    if let Some(target) = stdio::target(pod)? {
        return Ok(Outcome::Inject(stdio::patch(pod, cfg, &settings, &target)));
    }
    Ok(Outcome::Inject(patch(pod, cfg, &settings)))
}

/// The per-pod annotations, checked.
struct Settings {
    listen_port: i32,
    upstream_port: i32,
    upstream_path: String,
    fail_open: bool,
    cpu: String,
    memory: String,
    jwt: Option<JwtSettings>,
}

/// Per-pod JWT identity, from [`JWKS_CONFIGMAP`] and its companions.
struct JwtSettings {
    /// The JWKS ConfigMap; `None` discovers the keys from the issuer.
    configmap: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    required: bool,
}

impl Settings {
    fn read(pod: &Pod, cfg: &InjectConfig) -> Result<Settings, Refusal> {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let get = |k: &str| annotations.get(k).map(String::as_str);
        let port = |k: &'static str, default: i32| -> Result<i32, Refusal> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse::<i32>()
                    .ok()
                    .filter(|p| (1..=65535).contains(p))
                    .ok_or_else(|| Refusal::NotAPort {
                        annotation: k,
                        value: v.to_owned(),
                    }),
            }
        };
        let quantity = |k: &'static str, default: &str| -> Result<String, Refusal> {
            let v = get(k).unwrap_or(default);
            let ok = regex::Regex::new(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|Ki|Mi|Gi)?$")
                .map(|re| re.is_match(v))
                .unwrap_or(false);
            if ok {
                Ok(v.to_owned())
            } else {
                Err(Refusal::NotAQuantity {
                    annotation: k,
                    value: v.to_owned(),
                })
            }
        };
        let settings = Settings {
            listen_port: port(LISTEN_PORT, 8080)?,
            upstream_port: port(UPSTREAM_PORT, 8081)?,
            upstream_path: get(UPSTREAM_PATH).unwrap_or("").to_owned(),
            fail_open: match get(FAIL_OPEN) {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => {
                    return Err(Refusal::NotABool {
                        annotation: FAIL_OPEN,
                        value: v.to_owned(),
                    });
                }
            },
            cpu: quantity(SIDECAR_CPU, "20m")?,
            memory: quantity(SIDECAR_MEMORY, "64Mi")?,
            jwt: jwt_settings(&get, cfg)?,
        };
        if !(settings.upstream_path.is_empty() || settings.upstream_path.starts_with('/'))
            || settings
                .upstream_path
                .contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        {
            return Err(Refusal::NotAPath(settings.upstream_path));
        }
        if settings.listen_port == settings.upstream_port
            || settings.listen_port == ADMIN_PORT
            || settings.upstream_port == ADMIN_PORT
        {
            return Err(Refusal::PortsClash);
        }
        Ok(settings)
    }
}

/// Reads the JWT annotations; companions without [`JWKS_CONFIGMAP`] are
/// refused rather than ignored (the user meant something by them).
fn jwt_settings<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    cfg: &InjectConfig,
) -> Result<Option<JwtSettings>, Refusal> {
    let configmap = get(JWKS_CONFIGMAP);
    if configmap.is_none() && get(JWT_ISSUER).is_none() {
        for k in [JWT_AUDIENCE, REQUIRE_IDENTITY] {
            if get(k).is_some() {
                return Err(Refusal::NoKeySource(k));
            }
        }
        return Ok(None);
    }
    if let Some(configmap) = configmap {
        let dns_name =
            regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
                .map(|re| re.is_match(configmap) && configmap.len() <= 253)
                .unwrap_or(false);
        if !dns_name {
            return Err(Refusal::NotAConfigMapName(configmap.to_owned()));
        }
    }
    if let Some(flag) = cfg.extra_args.iter().find(|a| a.starts_with("--identity")) {
        return Err(Refusal::IdentityTwice(flag.clone()));
    }
    let text = |k: &'static str| -> Result<Option<String>, Refusal> {
        match get(k) {
            None => Ok(None),
            Some(v) if !v.trim().is_empty() && !v.chars().any(char::is_control) => {
                Ok(Some(v.to_owned()))
            }
            Some(v) => Err(Refusal::NotText {
                annotation: k,
                value: v.to_owned(),
            }),
        }
    };
    let issuer = text(JWT_ISSUER)?;
    if configmap.is_none() && !issuer.as_deref().is_some_and(|i| i.starts_with("https://")) {
        return Err(Refusal::IssuerNotHttps);
    }
    Ok(Some(JwtSettings {
        configmap: configmap.map(str::to_owned),
        issuer,
        audience: text(JWT_AUDIENCE)?,
        required: match get(REQUIRE_IDENTITY) {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(Refusal::NotABool {
                    annotation: REQUIRE_IDENTITY,
                    value: v.to_owned(),
                });
            }
        },
    }))
}

fn patch(pod: &Pod, cfg: &InjectConfig, s: &Settings) -> Patch {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ops = base_ops(pod, cfg, s, Vec::new());
    let mut add = |path: &str, value: Value| {
        ops.push(serde_json::json!({ "op": "add", "path": path, "value": value }))
    };
    let container = serde_json::to_value(container(cfg, s)).unwrap_or_default();
    if cfg.native_sidecars {
        if spec.init_containers.is_none() {
            add("/spec/initContainers", Value::Array(Vec::new()));
        }
        // First, so it runs before other init containers need the network.
        add("/spec/initContainers/0", container);
    } else {
        add("/spec/containers/-", container);
    }
    // Every path above is a literal or an escaped label key.
    serde_json::from_value(Value::Array(ops)).unwrap_or_else(|_| Patch(Vec::new()))
}

/// The operations every injection starts with: the sidecar label (which
/// the controller finds its pods by) and the volumes a `tollgate proxy`
/// needs, plus `extra`.
fn base_ops(pod: &Pod, cfg: &InjectConfig, s: &Settings, extra: Vec<Volume>) -> Vec<Value> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ops: Vec<Value> = Vec::new();
    let mut add = |path: &str, value: Value| {
        ops.push(serde_json::json!({ "op": "add", "path": path, "value": value }))
    };
    let escaped_label = SIDECAR_LABEL.replace('~', "~0").replace('/', "~1");
    match &pod.metadata.labels {
        Some(_) => add(
            &format!("/metadata/labels/{escaped_label}"),
            Value::from("true"),
        ),
        None => add(
            "/metadata/labels",
            serde_json::json!({ SIDECAR_LABEL: "true" }),
        ),
    }
    let mut volumes = vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(cfg.audience.clone()),
                        expiration_seconds: Some(3600),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: STATE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("4Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(configmap) = s.jwt.as_ref().and_then(|j| j.configmap.as_ref()) {
        volumes.push(Volume {
            name: JWKS_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: configmap.clone(),
                items: Some(vec![KeyToPath {
                    key: "jwks.json".into(),
                    path: "jwks.json".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    volumes.extend(extra);
    if spec.volumes.is_none() {
        add("/spec/volumes", Value::Array(Vec::new()));
    }
    for v in volumes {
        add(
            "/spec/volumes/-",
            serde_json::to_value(v).unwrap_or_default(),
        );
    }
    ops
}

fn container(cfg: &InjectConfig, s: &Settings) -> Container {
    let upstream = [
        "--upstream".to_owned(),
        format!("http://127.0.0.1:{}{}", s.upstream_port, s.upstream_path),
    ];
    let (args, volume_mounts) = proxy_args(cfg, s, &upstream);
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    Container {
        name: CONTAINER.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.pull_policy.clone(),
        args: Some(args),
        env: Some(proxy_env(cfg)),
        ports: Some(proxy_ports(s)),
        // Started once the process serves; Ready only once it has rules, so
        // Services send no traffic to a sidecar that would refuse it all.
        startup_probe: Some(probe("/healthz", 1, 30)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 2, 1)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity(s.cpu.clone())),
                ("memory".into(), Quantity(s.memory.clone())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                Quantity(s.memory.clone()),
            )])),
            ..Default::default()
        }),
        restart_policy: cfg.native_sidecars.then(|| "Always".into()),
        security_context: Some(restricted()),
        volume_mounts: Some(volume_mounts),
        ..Default::default()
    }
}

/// The security context of everything tollgate adds: non-root, read-only,
/// no capabilities, the runtime's seccomp profile.
fn restricted() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ports a `tollgate proxy` in the pod serves: MCP (the one Services
/// target) and admin.
fn proxy_ports(s: &Settings) -> Vec<ContainerPort> {
    vec![
        ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: s.listen_port,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
        ContainerPort {
            name: Some("tollgate-admin".into()),
            container_port: ADMIN_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
    ]
}

/// The environment of a `tollgate proxy` in the pod.
fn proxy_env(cfg: &InjectConfig) -> Vec<EnvVar> {
    let env_from = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    [
        env_from("POD_NAME", "metadata.name"),
        env_from("POD_NAMESPACE", "metadata.namespace"),
        // Approval objects name the pod as their owner by uid.
        env_from("POD_UID", "metadata.uid"),
        // The CA as text, not a volume: it is public, small, known
        // when the pod is admitted, and needs no object in the
        // pod's namespace (nor permission to write one there).
        EnvVar {
            name: CONTROLLER_CA_ENV.into(),
            value: Some(cfg.controller_ca.clone()),
            ..Default::default()
        },
    ]
    .into_iter()
    .chain(cfg.extra_env.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: Some(value.clone()),
        ..Default::default()
    }))
    .collect()
}

/// The arguments of a `tollgate proxy` in the pod, with `upstream` (how it
/// reaches the server) in its place, and the volumes it mounts.
fn proxy_args(
    cfg: &InjectConfig,
    s: &Settings,
    upstream: &[String],
) -> (Vec<String>, Vec<VolumeMount>) {
    let mut args: Vec<String> = [
        "proxy",
        "--controller",
        &cfg.controller_url,
        "--token-file",
        &format!("{TOKEN_DIR}/token"),
        "--snapshot-file",
        &format!("{STATE_DIR}/snapshot.json"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(upstream.iter().cloned());
    args.extend([
        "--listen".to_owned(),
        format!("0.0.0.0:{}", s.listen_port),
        "--admin-listen".to_owned(),
        format!("0.0.0.0:{ADMIN_PORT}"),
    ]);
    if s.fail_open {
        args.push("--fail-open".into());
    }
    let mut volume_mounts = vec![
        VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: STATE_VOLUME.into(),
            mount_path: STATE_DIR.into(),
            ..Default::default()
        },
    ];
    if let Some(jwt) = &s.jwt {
        args.push("--identity=jwt".into());
        if jwt.configmap.is_some() {
            args.push(format!("--jwks-file={JWKS_DIR}/jwks.json"));
            // The whole directory, not a subPath: the kubelet updates it in
            // place when the ConfigMap changes, and the sidecar re-reads it.
            volume_mounts.push(VolumeMount {
                name: JWKS_VOLUME.into(),
                mount_path: JWKS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        args.extend(jwt.issuer.iter().map(|i| format!("--jwt-issuer={i}")));
        args.extend(jwt.audience.iter().map(|a| format!("--jwt-audience={a}")));
        if jwt.required {
            args.push("--require-identity".into());
        }
    }
    args.extend(cfg.extra_args.iter().cloned());
    (args, volume_mounts)
}

mod stdio;
#[cfg(test)]
mod tests;
