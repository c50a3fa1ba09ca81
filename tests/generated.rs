//! Generated files stay generated: `make generate` must have been run after
//! every change to the policy types or the Helm chart.

use std::process::Command;

#[test]
fn the_chart_crds_and_install_manifests_are_up_to_date() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/render-manifests.sh"))
        .arg("--check")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "charts/tollgate/crds or manifests/install.yaml is stale: run `make generate` and commit the result\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
