// The scripted agent of `make demo`: an MCP client on the official SDK that
// behaves like an agent stuck in a clone loop, and prints what tollgate let
// through, what it refused and why, what reached the Kubernetes API (read
// back with kubectl from the real kube-apiserver) and the denial metrics.
//
//   node tests/peers/demo.mjs --url http://127.0.0.1:P/mcp --metrics http://127.0.0.1:A/metrics \
//        --kubectl PATH --kubeconfig PATH [--clones 40]

import { execFileSync } from "node:child_process";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const clones = Number(args.clones ?? 40);
const bold = (s) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const green = (s) => (process.stdout.isTTY ? `\x1b[32m${s}\x1b[0m` : s);
const red = (s) => (process.stdout.isTTY ? `\x1b[31m${s}\x1b[0m` : s);
const firstText = (r) => (r.content?.[0]?.text ?? "").split("\n")[0];

const client = new Client({ name: "tollgate-demo-agent", version: "1.0.0" });
await client.connect(new StreamableHTTPClientTransport(new URL(args.url)));

console.log(bold("\n1. tools/list through tollgate (hideDenied: denied tools are gone)"));
const { tools } = await client.listTools();
console.log(`   ${tools.length} tools visible: ${tools.map((t) => t.name).join(", ")}`);

console.log(bold("\n2. an allowed read"));
const ns = await client.callTool({ name: "namespaces_list", arguments: {} });
console.log(`   ${green("allowed")} namespaces_list -> ${firstText(ns)} ...`);

console.log(bold("\n3. a call no rule allows"));
const del = await client.callTool({ name: "pods_delete", arguments: { namespace: "vms", name: "web-1" } });
console.log(`   ${del.isError ? red("denied ") : green("allowed")} pods_delete -> ${firstText(del)}`);

console.log(bold(`\n4. an agent stuck in a loop: ${clones} vm_clone calls at once`));
const calls = Array.from({ length: clones }, (_, i) =>
  client.callTool({ name: "vm_clone", arguments: { namespace: "vms", name: "golden-fedora", targetName: `copy-${i}` } }),
);
const results = await Promise.all(calls);
const denied = results.filter((r) => r.isError);
console.log(`   ${green(`${results.length - denied.length} allowed`)}, ${red(`${denied.length} denied`)}`);
if (denied.length) console.log(`   first denial: ${firstText(denied[0])}`);

if (args.kubectl) {
  const kubeconfig = args.kubeconfig ? ["--kubeconfig", args.kubeconfig] : [];
  const kubectl = (...a) => execFileSync(args.kubectl, [...kubeconfig, "--request-timeout=20s", "-n", "vms", ...a], { encoding: "utf8" });
  const vmClones = kubectl("get", "virtualmachineclones.clone.kubevirt.io", "-o", "name").split("\n").filter(Boolean);
  const pod = kubectl("get", "pod", "web-1", "--ignore-not-found", "-o", "name").trim();
  console.log(bold("\n5. what reached the Kubernetes API (kubectl -n vms get ...)"));
  console.log(`   VirtualMachineClone objects: ${vmClones.length}`);
  console.log(`   pod web-1: ${pod ? "still there" : red("deleted")}`);
}

if (args.metrics) {
  const text = await (await fetch(args.metrics)).text();
  console.log(bold("\n6. tollgate metrics (tollgate_tool_calls_total)"));
  for (const line of text.split("\n").filter((l) => l.startsWith("tollgate_tool_calls_total"))) console.log(`   ${line}`);
}
await client.close();
