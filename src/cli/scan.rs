//! `tollgate scan`: an MCP server's tools with what each does — read, write,
//! destructive or unknown, and the evidence that decided — and, with
//! `--scaffold`, a starting `McpToolPolicy` for them: reads allowed, writes
//! capped, destructive tools denied, the rest left to `defaultAction: Deny`,
//! a comment on every tool saying why it is where it is.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{Value, json};

use tollgate_policy::catalogue::Catalogue;
use tollgate_policy::risk::{Assessment, Risk, assess};
use tollgate_policy::warnings::{CREDENTIAL_TOOLS, GENERIC_READS};

use crate::cli::{Output, ToolSource};

/// Flags of `tollgate scan`.
#[derive(clap::Args)]
pub(crate) struct ScanArgs {
    #[command(flatten)]
    tools: ToolSource,
    /// Print a starting McpToolPolicy instead of the table.
    #[arg(long)]
    scaffold: bool,
    /// `metadata.name` of the scaffolded policy.
    #[arg(long, default_value = "scaffold", requires = "scaffold")]
    name: String,
    /// `metadata.namespace` of the scaffolded policy.
    #[arg(long, requires = "scaffold")]
    namespace: Option<String>,
    /// Output format of the table.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, conflicts_with = "scaffold")]
    output: Output,
}

pub(crate) fn run(args: &ScanArgs) -> ExitCode {
    if !args.tools.given() {
        eprintln!(
            "error: say which server: --upstream URL (e.g. http://127.0.0.1:8081/mcp), -- COMMAND (a stdio server) or --tools FILE (its tools/list answer)"
        );
        return ExitCode::from(2);
    }
    let catalogue = match args.tools.read() {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let assessments: Vec<Assessment> = catalogue
        .names()
        .filter_map(|n| catalogue.entry(n))
        .map(assess)
        .collect();
    let from = args.tools.describe();
    if args.scaffold {
        print!("{}", scaffold(&assessments, &catalogue, args, &from));
        return ExitCode::SUCCESS;
    }
    match args.output {
        Output::Text => print!("{}", table(&assessments)),
        Output::Json => println!("{}", as_json(&assessments)),
    }
    ExitCode::SUCCESS
}

fn evidence(a: &Assessment) -> String {
    a.clues
        .iter()
        .filter(|c| a.decided_by.contains(&c.source))
        .map(|c| format!("{}: {}", c.source.as_str(), c.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

fn table(assessments: &[Assessment]) -> String {
    let width = assessments
        .iter()
        .map(|a| a.tool.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:width$}  {:11}  {}\n", "TOOL", "RISK", "EVIDENCE");
    for a in assessments {
        let mut why = evidence(a);
        if a.risk == Risk::Unknown {
            why = "the server says nothing about what it does".to_owned();
        }
        let _ = writeln!(out, "{:width$}  {:11}  {why}", a.tool, a.risk.as_str());
        for d in &a.disagreements {
            let _ = writeln!(out, "{:width$}  {:11}    but {d}", "", "");
        }
    }
    let count = |r: Risk| assessments.iter().filter(|a| a.risk == r).count();
    let _ = writeln!(
        out,
        "\n{} tools: {} read, {} write, {} destructive, {} unknown; {} where the evidence disagrees",
        assessments.len(),
        count(Risk::Read),
        count(Risk::Write),
        count(Risk::Destructive),
        count(Risk::Unknown),
        assessments
            .iter()
            .filter(|a| !a.disagreements.is_empty())
            .count()
    );
    out
}

fn as_json(assessments: &[Assessment]) -> Value {
    let tools: Vec<Value> = assessments
        .iter()
        .map(|a| {
            json!({
                "tool": a.tool,
                "risk": a.risk.as_str(),
                "decidedBy": a.decided_by.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "evidence": a.clues.iter().map(|c| json!({
                    "source": c.source.as_str(), "risk": c.risk.as_str(), "detail": c.detail
                })).collect::<Vec<_>>(),
                "disagreements": a.disagreements,
            })
        })
        .collect();
    json!({ "tools": tools })
}

/// A starting policy: one rule per class, each tool on its own line with
/// the evidence as a comment.
fn scaffold(
    assessments: &[Assessment],
    catalogue: &Catalogue,
    args: &ScanArgs,
    from: &str,
) -> String {
    let credential = |t: &str| CREDENTIAL_TOOLS.iter().any(|(c, _)| *c == t);
    let of = |risk: Risk| -> Vec<&Assessment> {
        assessments
            .iter()
            .filter(|a| a.risk == risk && !credential(&a.tool))
            .collect()
    };
    let width = assessments.iter().map(|a| a.tool.len()).max().unwrap_or(0);
    let list = |tools: &[&Assessment]| {
        let mut out = String::from("      tools:\n");
        for a in tools {
            let mut comment = format!("{}: {}", a.risk.as_str(), evidence(a));
            if let Some(d) = a.disagreements.first() {
                comment.push_str(&format!(" (but {d})"));
            }
            let _ = writeln!(
                out,
                "        - {:width$}  # {}",
                a.tool,
                comment.replace('\n', " ")
            );
        }
        out
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Scaffolded by `tollgate scan --scaffold` from the {} tools of {from}.",
        catalogue.len()
    );
    out.push_str(
        "# A starting point, to review before applying: reads are allowed, writes\n\
         # capped, destructive tools denied; tools the scan could not classify, and\n\
         # tools the server adds later, are denied by defaultAction. The classes come\n\
         # from what the server says (annotations, rbac _meta, inputSchema); to keep\n\
         # following them as the server changes, see toolSelector in docs/policy.md.\n",
    );
    out.push_str("apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata:\n");
    let _ = writeln!(out, "  name: {}", args.name);
    if let Some(ns) = &args.namespace {
        let _ = writeln!(out, "  namespace: {ns}");
    }
    out.push_str("spec:\n  defaultAction: Deny\n  hideDenied: true\n  rules:\n");
    let destructive = of(Risk::Destructive);
    if !destructive.is_empty() {
        out.push_str("    - name: destructive\n      action: Deny\n      message: This tool can delete or overwrite; ask an operator.\n");
        out.push_str(&list(&destructive));
    }
    let credentials: Vec<&Assessment> =
        assessments.iter().filter(|a| credential(&a.tool)).collect();
    if !credentials.is_empty() {
        out.push_str("    # These print the MCP server's own credentials.\n");
        out.push_str("    - name: credentials\n      action: Deny\n");
        out.push_str(&list(&credentials));
    }
    let reads = of(Risk::Read);
    if reads
        .iter()
        .any(|a| GENERIC_READS.contains(&a.tool.as_str()))
    {
        out.push_str("    # The generic read tools read Secrets like any other kind.\n");
        out.push_str("    - name: no-secrets\n      action: Deny\n      resources: [{group: \"\", kind: Secret, verbs: [get, list, watch]}]\n");
    }
    if !reads.is_empty() {
        out.push_str("    - name: reads\n      action: Allow\n");
        out.push_str(&list(&reads));
    }
    let writes = of(Risk::Write);
    if !writes.is_empty() {
        out.push_str("    - name: writes\n      action: Allow\n      message: Writes are capped; wait before the next one.\n");
        out.push_str(&list(&writes));
        out.push_str("      rateLimits:\n        - requests: 10\n          window: 1m\n");
    }
    let unknown = of(Risk::Unknown);
    if !unknown.is_empty() {
        out.push_str(
            "  # Not classified (the server says nothing about them); denied by defaultAction:\n",
        );
        for a in unknown {
            let _ = writeln!(out, "  #   {}", a.tool);
        }
    }
    out
}
