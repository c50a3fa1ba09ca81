//! Shared by the bench programs that are driven by their own flags
//! (`fast_upstream`, `mcp_load`): how they behave under a plain `cargo bench`.

/// `cargo bench` runs every bench target with `--bench`, plus whatever filter
/// or flags were meant for other (criterion) benchmarks. This is a program
/// driven by its own flags, not a suite: run that way, with none of its own
/// flags, it says so and exits 0 instead of failing the whole `cargo bench`.
pub fn run_by_cargo_bench_suite<C: clap::CommandFactory>() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return false;
    }
    let command = C::command();
    let own = |a: &str| {
        if a == "-h" || a == "--help" {
            return true;
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or("");
            return name != "bench"
                && command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(name));
        }
        a.strip_prefix('-')
            .and_then(|s| s.chars().next())
            .is_some_and(|c| {
                command
                    .get_arguments()
                    .any(|arg| arg.get_short() == Some(c))
            })
    };
    !args.iter().any(|a| own(a))
}
