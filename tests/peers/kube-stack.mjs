#!/usr/bin/env node
// Starts fake-kube-api + kubernetes-mcp-server 0.0.67 wired together, as one
// process a test (or `make demo`) can spawn and kill.
//
//   node kube-stack.mjs [--max-lifetime SECONDS] [--toolsets core,config,kubevirt]
//        [--kms-port N] [--workdir DIR] [--seed FILE.json] [--kms-arg ARG]...
//        [--ignore-stdin]
//
// First stdout line, once kubernetes-mcp-server answers /healthz:
//   {"mcp":"http://127.0.0.1:P/mcp","mcpPort":P,"kubeApi":"http://127.0.0.1:K",
//    "kubePort":K,"stats":"http://127.0.0.1:K/_stats","kubeconfig":"DIR/kubeconfig",
//    "workdir":DIR,"kmsLog":"DIR/kubernetes-mcp-server.log","kubeLog":"DIR/kube-requests.log"}
//
// Why a launcher: kubernetes-mcp-server binds 0.0.0.0 unless told
// --bind-address, accepts --port 0 but never says which port it got, logs to
// stdout in HTTP mode, and neither exits on stdin EOF nor has a lifetime.
// This wrapper picks a free port (retrying on a bind race), binds 127.0.0.1,
// and kills both children when its stdin reaches EOF (if a pipe/socket), on
// SIGTERM/SIGINT, after --max-lifetime (default 600 s), or when either child
// dies (exit status 1 then).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const here = path.dirname(new URL(import.meta.url).pathname);
const KMS = path.join(here, 'node_modules', 'kubernetes-mcp-server-linux-amd64', 'bin', 'kubernetes-mcp-server-linux-amd64');

function die(msg) {
  process.stderr.write(`kube-stack: ${msg}\n`);
  process.exit(2);
}
const o = { maxLifetime: 600, toolsets: 'core,config,kubevirt', kmsPort: 0, workdir: null, seed: [], kmsArgs: [], ignoreStdin: false };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => (i + 1 < argv.length ? argv[++i] : die(`${a} needs a value`));
    switch (a) {
      case '--max-lifetime': o.maxLifetime = Number(val()); break;
      case '--toolsets': o.toolsets = val(); break;
      case '--kms-port': o.kmsPort = Number(val()); break;
      case '--workdir': o.workdir = val(); break;
      case '--seed': o.seed.push(val()); break;
      case '--kms-arg': o.kmsArgs.push(val()); break;
      case '--ignore-stdin': o.ignoreStdin = true; break;
      default: die(`unknown argument ${a}`);
    }
  }
  if (!(o.maxLifetime > 0)) die('--max-lifetime must be > 0');
}
if (!fs.existsSync(KMS)) die(`${KMS} is missing: run scripts/test-deps.sh`);
const workdir = o.workdir || fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-kube-stack-'));
fs.mkdirSync(workdir, { recursive: true });
const kubeconfig = path.join(workdir, 'kubeconfig');
const kmsLog = path.join(workdir, 'kubernetes-mcp-server.log');
const kubeLog = path.join(workdir, 'kube-requests.log');

const children = new Set();
let stopping = false;
function stop(why, code = 0) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`kube-stack: exiting (${why})\n`);
  for (const c of children) {
    try { if (c.isWatchdog) c.stdin.end(); else c.kill('SIGTERM'); } catch { /* gone */ }
  }
  const t = setTimeout(() => {
    for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
    process.exit(code);
  }, 2000);
  t.unref();
  const check = setInterval(() => { if (children.size === 0) { clearInterval(check); process.exit(code); } }, 20);
}
function track(child, name) {
  children.add(child);
  child.on('exit', (code, sig) => {
    children.delete(child);
    if (!stopping && child.expectedExit !== true) stop(`${name} exited (${sig || code})`, 1);
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function startFakeKube() {
  const args = [path.join(here, 'fake-kube-api.mjs'), '--port', '0', '--kubeconfig-out', kubeconfig,
    '--max-lifetime', String(o.maxLifetime + 5), '--log', kubeLog];
  for (const s of o.seed) args.push('--seed', s);
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  track(child, 'fake-kube-api');
  const rl = readline.createInterface({ input: child.stdout });
  const line = await new Promise((resolve, reject) => {
    rl.once('line', resolve);
    child.once('exit', () => reject(new Error('fake-kube-api died before printing its port')));
  });
  return JSON.parse(line).port;
}

async function healthy(port, deadline) {
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) return true;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function startKms() {
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = o.kmsPort || await freePort();
    const fd = fs.openSync(kmsLog, 'a');
    const args = ['--port', String(port), '--bind-address', '127.0.0.1', '--toolsets', o.toolsets, '--kubeconfig', kubeconfig, ...o.kmsArgs];
    // kubernetes-mcp-server ignores stdin, so run it under a tiny sh
    // watchdog: when our pipe to it closes (we stop, or we are SIGKILLed),
    // `cat` returns and the binary gets SIGTERM. No orphans either way.
    const watchdog = 'exec 3<&0; "$@" </dev/null & k=$!; (cat <&3 >/dev/null; kill $k 2>/dev/null) & wait $k';
    const child = spawn('/bin/sh', ['-c', watchdog, 'sh', KMS, ...args], { stdio: ['pipe', fd, fd] });
    fs.closeSync(fd);
    let exited = false;
    child.once('exit', () => { exited = true; });
    child.isWatchdog = true;
    child.stdin.on('error', () => {});
    child.expectedExit = true; // until it is up, a failed start is retried
    children.add(child);
    child.on('exit', () => children.delete(child));
    const deadline = Date.now() + 20000;
    while (!exited && Date.now() < deadline) {
      if (await healthy(port, Math.min(deadline, Date.now() + 500))) {
        child.expectedExit = false;
        child.on('exit', (code, sig) => { if (!stopping) stop(`kubernetes-mcp-server exited (${sig || code})`, 1); });
        return port;
      }
    }
    if (!exited) { child.stdin.end(); throw new Error(`kubernetes-mcp-server did not become healthy; see ${kmsLog}`); }
    if (o.kmsPort) break; // a fixed port that fails will not get better
  }
  throw new Error(`kubernetes-mcp-server failed to start; see ${kmsLog}`);
}

setTimeout(() => stop(`max lifetime ${o.maxLifetime}s`), o.maxLifetime * 1000).unref();
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
if (!o.ignoreStdin) {
  let st = null;
  try { st = fs.fstatSync(0); } catch { /* none */ }
  if (st && (st.isFIFO() || st.isSocket())) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => stop('stdin closed'));
    process.stdin.on('error', () => stop('stdin error'));
  }
}

try {
  const kubePort = await startFakeKube();
  const mcpPort = await startKms();
  process.stdout.write(JSON.stringify({
    mcp: `http://127.0.0.1:${mcpPort}/mcp`, mcpPort,
    kubeApi: `http://127.0.0.1:${kubePort}`, kubePort, stats: `http://127.0.0.1:${kubePort}/_stats`,
    kubeconfig, workdir, kmsLog, kubeLog,
  }) + '\n');
} catch (e) {
  process.stderr.write(`kube-stack: ${e.message}\n`);
  stop('start failed', 1);
}
