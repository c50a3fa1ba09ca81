//! Reloading policy files when they change.
//!
//! Watches each policy path and its parent directory (a Kubernetes ConfigMap
//! volume swaps a `..data` symlink in the directory rather than writing the
//! file), and re-reads on a timer as well, because not every filesystem
//! delivers change events. A new version that does not load leaves the
//! previous rules in force and says so in the log and in
//! `tollgate_policy_reload_failing`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use tollgate_policy::{Problems, load};

use crate::metrics::{Metrics, ReloadResult};
use crate::rules::store::RuleStore;

/// What one reload attempt did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A new version is in force.
    Applied(String),
    /// The files load to the version already in force.
    Unchanged,
    /// The files do not load; the previous rules stay.
    Refused(Problems),
}

/// Loads `paths` and puts the result in force if it is new and valid.
pub(crate) fn reload(paths: &[PathBuf], store: &RuleStore, metrics: &Metrics) -> Outcome {
    match load::load(paths).and_then(|(set, w)| match secret_refs(&set) {
        problems if problems.is_empty() => Ok((set, w)),
        problems => Err(problems),
    }) {
        Ok((set, _)) => {
            metrics.reload_failing(false);
            let version = set.version().to_owned();
            let rules = set.policies().iter().map(|p| p.rules().len()).sum();
            if store.replace(set) {
                metrics.reloaded(ReloadResult::Success);
                metrics.set_policy(&version, rules);
                Outcome::Applied(version)
            } else {
                Outcome::Unchanged
            }
        }
        Err(problems) => {
            metrics.reloaded(ReloadResult::Failure);
            metrics.reload_failing(true);
            Outcome::Refused(Problems(problems))
        }
    }
}

/// Rules of policy files that name a Kubernetes Secret for their
/// notification key: only the controller reads Secrets, so in file mode
/// that key could never be had; said at load rather than discovered when a
/// notification is not sent.
fn secret_refs(set: &tollgate_policy::PolicySet) -> Vec<tollgate_policy::Problem> {
    use tollgate_policy::compile::approval::NotifySecret;
    set.policies()
        .iter()
        .flat_map(|p| p.rules().iter().map(move |r| (p, r)))
        .filter(|(_, r)| {
            r.approval
                .as_ref()
                .and_then(|a| a.notify.as_ref())
                .is_some_and(|n| matches!(n.secret, NotifySecret::Secret(_)))
        })
        .map(|(p, r)| {
            tollgate_policy::Problem::at(
                format!("{} rule {}: approval.notify.secretRef", p.name, r.name),
                "names a Kubernetes Secret, which only the controller reads (managed mode); in a policy file give the key's file with secretFile",
            )
        })
        .collect()
}

/// Reloads on file changes and every `interval` until `shutdown`.
pub(crate) async fn watch_files(
    paths: Vec<PathBuf>,
    store: Arc<RuleStore>,
    metrics: Metrics,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the files ourselves raises open/close events; only
        // changes matter, or every reload would trigger the next one.
        if let Ok(e) = &event
            && matches!(e.kind, notify::EventKind::Access(_))
        {
            return;
        }
        // Coalesce bursts: one pending wake-up is enough.
        let _ = tx.try_send(());
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            for dir in watched(&paths) {
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot watch for policy changes; relying on the periodic re-read");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "file change notifications unavailable; relying on the periodic re-read");
            None
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_refusal: Option<Problems> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            Some(()) = rx.recv() => {
                // Let a burst of writes (or a ConfigMap's rename dance) settle.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
            }
        }
        let (paths, store, metrics) = (paths.clone(), store.clone(), metrics.clone());
        let outcome = tokio::task::spawn_blocking(move || reload(&paths, &store, &metrics)).await;
        match outcome {
            Ok(Outcome::Applied(version)) => {
                last_refusal = None;
                tracing::info!(%version, "policy reloaded");
            }
            Ok(Outcome::Unchanged) => last_refusal = None,
            Ok(Outcome::Refused(problems)) => {
                if last_refusal.as_ref() != Some(&problems) {
                    tracing::error!(
                        problems = %problems,
                        "the changed policy files are invalid; the previous rules stay in force until they are fixed"
                    );
                    last_refusal = Some(problems);
                }
            }
            Err(e) => tracing::error!(error = %e, "policy reload task failed"),
        }
    }
}

/// Each path, and the directory holding it.
fn watched(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for d in [p.as_path(), parent] {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_owned());
            }
        }
    }
    dirs
}
