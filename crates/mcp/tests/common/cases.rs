//! How many cases each property runs: `PROPTEST_CASES` when set (`make
//! fuzz` sets it high), else few enough that `cargo test` stays quick.
//! Shared by the property tests of the mcp and policy crates.

use proptest::test_runner::Config;

/// The configuration of a property that runs `quick` cases by default.
pub(crate) fn cases(quick: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = quick;
    }
    config
}
