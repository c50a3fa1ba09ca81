//! `tollgate_build_info{version,commit}`: which build a process runs, so a
//! dashboard can show a rollout and an alert can be matched to a release.
//!
//! The version is the crate's; the commit is handed in by the binary (its
//! build script reads `TOLLGATE_COMMIT` or asks git), because only the
//! binary is rebuilt when the commit changes: were it read here, every
//! commit would rebuild every crate.

use std::sync::OnceLock;

use prometheus::{IntGaugeVec, Opts};

/// The commit when nobody said which.
pub(crate) const UNKNOWN_COMMIT: &str = "unknown";

static COMMIT: OnceLock<String> = OnceLock::new();

/// Records the commit this binary was built from; the first call wins.
pub fn set_commit(commit: &str) {
    let _ = COMMIT.set(commit.to_owned());
}

/// The commit recorded by [`set_commit`], or [`UNKNOWN_COMMIT`].
pub fn commit() -> &'static str {
    COMMIT.get().map_or(UNKNOWN_COMMIT, String::as_str)
}

/// The crate version (the workspace's, which every tollgate crate shares).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// A gauge `tollgate_build_info{version,commit} 1`, ready to register.
pub fn gauge() -> Result<IntGaugeVec, prometheus::Error> {
    let info = IntGaugeVec::new(
        Opts::new(
            "tollgate_build_info",
            "1 for the version and commit this process was built from.",
        ),
        &["version", "commit"],
    )?;
    info.with_label_values(&[version(), commit()]).set(1);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_carries_the_version_and_the_commit() {
        set_commit("0123abcd");
        let families = {
            let r = prometheus::Registry::new();
            r.register(Box::new(gauge().unwrap())).unwrap();
            r.gather()
        };
        let metric = &families[0].get_metric()[0];
        let labels: Vec<(&str, &str)> = metric
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect();
        assert_eq!(
            labels,
            [
                ("commit", "0123abcd"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        );
        assert_eq!(metric.get_gauge().get_value(), 1.0);
    }
}
