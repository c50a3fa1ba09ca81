#!/usr/bin/env node
// A scripted MCP client built on the official TypeScript SDK: whatever it
// puts on the wire (initialize, notifications/initialized, Mcp-Session-Id,
// MCP-Protocol-Version, the GET stream, SSE framing) is what the SDK does.
//
//   node agent.mjs --url URL [--transport streamable|sse] [options] COMMAND
//   node agent.mjs --transport stdio [options] COMMAND -- SERVER [ARGS...]
//                                  (SDK StdioClientTransport: spawns SERVER, e.g.
//                                  `tollgate wrap --policy p.yaml -- server`, with
//                                  this process's environment; its stderr is inherited)
//
// Commands (each prints exactly one JSON line on stdout per result):
//   list [--full]                  tool names as a JSON array (--full: the
//                                  merged tools/list result {"tools":[...]} of all pages)
//   call NAME ['ARGS_JSON']        the CallToolResult, or {"error":{...}}
//   repeat N NAME ['ARGS_JSON'] [--concurrency C] [--no-results]
//                                  ("{i}" in ARGS_JSON strings becomes the call's index, 0..N-1)
//                                  {"ok":a,"isError":b,"errors":c,"elapsedMs":t,"results":[...]}
//   script FILE.json               steps, one output line per step:
//       {"op":"list","full":false} | {"op":"call","name":..,"arguments":{..}}
//       {"op":"repeat","n":..,"name":..,"arguments":{..},"concurrency":C}
//       {"op":"sleep","ms":..}     | {"op":"ping"}
//       {"op":"wait_notification","method":"notifications/tools/list_changed","timeoutMs":5000}
//       {"op":"retry_until_allowed","name":..,"arguments":{..},"intervalMs":200,"maxTries":100}
//                                  {"tries":n,"result":CallToolResult}: the same call again
//                                  until it is not a tool error (an agent awaiting approval)
//   info                           server info, capabilities, negotiated protocol version, session id
//
// Options:
//   --transport streamable|sse     default streamable (SDK StreamableHTTPClientTransport;
//                                  sse = legacy 2024-11-05 SSEClientTransport, URL is the GET /sse URL)
//   --header 'Name: value'         extra HTTP header on every request (repeatable)
//   --timeout MS                   per-request timeout (default 30000)
//   --delete-session               end with DELETE (transport.terminateSession) — streamable only
//   --verbose                      transport errors and notifications on stderr
//   --progress                     calls ask for progress (_meta.progressToken); each
//                                  result gains "progressNotifications": [{progress, total?, message?}]
//
// Error objects: {"error":{"code":C,"message":M,"kind":K,...}} where kind is
//   "jsonrpc"   a JSON-RPC error response (code is the JSON-RPC code; data if any)
//   "http"      the server answered a POST with a non-2xx status (code = HTTP status;
//               "body" = response text, "jsonrpc" = the parsed JSON-RPC error if the body was one)
//   "timeout"   no response within --timeout (code -32001, the SDK's RequestTimeout)
//   "transport" anything else (connection refused, stream closed, ...), code null
// Exit status: 0 once connected (even if calls fail); 1 if it could not
// connect/initialize (an {"error":...,"stage":"connect"} line is printed);
// 2 on bad usage ({"error":{"kind":"usage",...}}).

import fs from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { SSEClientTransport, SseError } from '@modelcontextprotocol/sdk/client/sse.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { McpError, ErrorCode, ToolListChangedNotificationSchema, LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

function usage(msg) {
  // Even a usage error leaves one JSON line, so a test never parses nothing.
  out({ error: { code: null, message: msg || 'usage', kind: 'usage' } });
  if (msg) process.stderr.write(`agent: ${msg}\n`);
  process.stderr.write('usage: node agent.mjs --url URL [--transport streamable|sse] [--header "K: V"] [--timeout MS] [--delete-session] (list [--full] | call NAME [ARGS_JSON] | repeat N NAME [ARGS_JSON] [--concurrency C] [--no-results] | script FILE.json | info)\n');
  process.exit(2);
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---------------------------------------------------------------- args
const all = process.argv.slice(2);
const dashes = all.indexOf('--');
const argv = dashes >= 0 ? all.slice(0, dashes) : all;
const serverCommand = dashes >= 0 ? all.slice(dashes + 1) : [];
const o = { url: null, transport: 'streamable', headers: {}, timeout: 30000, deleteSession: false, verbose: false, concurrency: 1, full: false, noResults: false };
const positional = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
  switch (a) {
    case '--url': o.url = val(); break;
    case '--transport': o.transport = val(); break;
    case '--header': {
      const h = val(); const c = h.indexOf(':');
      if (c <= 0) usage(`bad --header ${h}`);
      o.headers[h.slice(0, c).trim()] = h.slice(c + 1).trim();
      break;
    }
    case '--timeout': o.timeout = Number(val()); break;
    case '--delete-session': o.deleteSession = true; break;
    case '--verbose': o.verbose = true; break;
    case '--concurrency': o.concurrency = Number(val()); break;
    case '--full': o.full = true; break;
    case '--no-results': o.noResults = true; break;
    case '--progress': o.progress = true; break;
    case '-h': case '--help': usage();
    // falls through
    default:
      if (a.startsWith('--')) usage(`unknown option ${a}`);
      positional.push(a);
  }
}
if (!['streamable', 'sse', 'stdio'].includes(o.transport)) usage('--transport must be streamable, sse or stdio');
if (o.transport === 'stdio' && serverCommand.length === 0) usage('--transport stdio needs the server command after --');
if (o.transport !== 'stdio' && !o.url) usage('--url is required');
if (!(o.concurrency >= 1)) usage('--concurrency must be >= 1');
const [command, ...rest] = positional;
if (!command) usage('missing command');

function parseArgsJson(s, what) {
  if (s === undefined || s === '') return {};
  try {
    const v = JSON.parse(s);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v;
  } catch (e) {
    usage(`${what} is not a JSON object: ${e.message}`);
  }
}

// ---------------------------------------------------------------- errors
function errorJson(e) {
  if (e instanceof McpError) {
    const kind = e.code === ErrorCode.RequestTimeout ? 'timeout' : (e.code === ErrorCode.ConnectionClosed ? 'transport' : 'jsonrpc');
    const message = String(e.message).replace(/^MCP error -?\d+: /, '');
    return { code: e.code, message, kind, ...(e.data !== undefined ? { data: e.data } : {}) };
  }
  let status = null; let body = null;
  if (e instanceof StreamableHTTPError && e.code > 0) {
    status = e.code;
    const m = String(e.message).match(/Error POSTing to endpoint: ([\s\S]*)$/);
    body = m ? m[1] : null;
  } else if (!(e instanceof SseError)) {
    const m = String(e?.message ?? '').match(/^Error POSTing to endpoint \(HTTP (\d+)\): ([\s\S]*)$/);
    if (m) { status = Number(m[1]); body = m[2]; }
  }
  if (status !== null) {
    const r = { code: status, message: String(e.message), kind: 'http' };
    if (body !== null) {
      r.body = body;
      try {
        const j = JSON.parse(body);
        if (j && j.error && typeof j.error.code === 'number') r.jsonrpc = j.error;
      } catch { /* not JSON */ }
    }
    return r;
  }
  if (e instanceof SseError) return { code: e.code ?? null, message: String(e.message), kind: 'transport' };
  const cause = e?.cause ? `: ${e.cause.code || e.cause.message || e.cause}` : '';
  return { code: null, message: String(e?.message ?? e) + cause, kind: 'transport' };
}

// ---------------------------------------------------------------- client
const notifications = [];
const waiters = [];
function noteNotification(n) {
  notifications.push(n);
  if (o.verbose) process.stderr.write(`agent: notification ${JSON.stringify(n)}\n`);
  for (const w of waiters.splice(0)) w();
}

function makeTransport() {
  if (o.transport === 'stdio') {
    const [cmd, ...args] = serverCommand;
    return new StdioClientTransport({ command: cmd, args, env: { ...process.env }, stderr: 'inherit' });
  }
  const url = new URL(o.url);
  const requestInit = Object.keys(o.headers).length ? { headers: { ...o.headers } } : undefined;
  if (o.transport === 'sse') {
    // For the legacy transport the GET (EventSource) needs the headers too.
    return new SSEClientTransport(url, {
      requestInit,
      eventSourceInit: requestInit ? {
        fetch: (u, init) => fetch(u, { ...init, headers: { ...(init?.headers || {}), ...o.headers } }),
      } : undefined,
    });
  }
  return new StreamableHTTPClientTransport(url, {
    requestInit,
    // A test peer should not keep retrying a dead stream for long.
    reconnectionOptions: { maxReconnectionDelay: 2000, initialReconnectionDelay: 500, reconnectionDelayGrowFactor: 1.5, maxRetries: 2 },
  });
}

const client = new Client({ name: 'tollgate-test-agent', version: '0.1.0' }, { capabilities: {} });
client.onerror = (e) => { if (o.verbose) process.stderr.write(`agent: transport error: ${e?.message ?? e}\n`); };
client.setNotificationHandler(ToolListChangedNotificationSchema, noteNotification);
client.setNotificationHandler(LoggingMessageNotificationSchema, noteNotification);
client.fallbackNotificationHandler = async (n) => noteNotification(n);

const reqOpts = { timeout: o.timeout };

async function listTools(full) {
  const tools = [];
  let cursor;
  let extra = {};
  for (let page = 0; page < 100; page++) {
    const r = await client.listTools(cursor ? { cursor } : {}, reqOpts);
    const { tools: t, nextCursor, ...others } = r;
    tools.push(...t);
    if (page === 0) extra = others;
    cursor = nextCursor;
    if (!cursor) break;
  }
  return full ? { ...extra, tools } : tools.map((t) => t.name);
}

async function callOnce(name, args) {
  try {
    if (o.progress) {
      // The SDK sends _meta.progressToken and hands each notifications/progress here.
      const progress = [];
      const opts = { ...reqOpts, onprogress: (p) => progress.push(p), resetTimeoutOnProgress: true };
      const result = await client.callTool({ name, arguments: args }, undefined, opts);
      return { ...result, progressNotifications: progress };
    }
    return await client.callTool({ name, arguments: args }, undefined, reqOpts);
  } catch (e) {
    return { error: errorJson(e) };
  }
}

// "{i}" in any string of args becomes i: N calls with N distinct targets.
function withIndex(args, i) {
  return JSON.parse(JSON.stringify(args).replaceAll('{i}', String(i)));
}

async function repeat(n, name, args, concurrency, noResults) {
  const results = new Array(n);
  let next = 0;
  const t0 = Date.now();
  async function worker() {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      results[i] = await callOnce(name, withIndex(args, i));
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  const summary = { ok: 0, isError: 0, errors: 0 };
  for (const r of results) {
    if (r.error) summary.errors++;
    else if (r.isError) summary.isError++;
    else summary.ok++;
  }
  summary.elapsedMs = Date.now() - t0;
  if (!noResults) summary.results = results;
  return summary;
}

async function waitNotification(method, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = notifications.findIndex((n) => !method || n.method === method);
    if (i >= 0) return { notification: notifications.splice(i, 1)[0] };
    const left = deadline - Date.now();
    if (left <= 0) return { error: { code: null, message: `no ${method || 'notification'} within ${timeoutMs}ms`, kind: 'timeout' } };
    await new Promise((resolve) => {
      const t = setTimeout(resolve, left);
      waiters.push(() => { clearTimeout(t); resolve(); });
    });
  }
}

// What an agent told "a person must approve; retry the same call after"
// does: the same call, in the same session, until it is not a tool error.
async function retryUntilAllowed(name, args, intervalMs, maxTries) {
  let last = null;
  for (let tries = 1; tries <= maxTries; tries++) {
    last = await callOnce(name, args);
    if (last.error || !last.isError) return { tries, result: last };
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return { tries: maxTries, result: last };
}

async function step(s) {
  switch (s.op) {
    case 'list':
      try { return await listTools(!!s.full); } catch (e) { return { error: errorJson(e) }; }
    case 'call':
      return callOnce(s.name, s.arguments || {});
    case 'repeat':
      return repeat(Number(s.n), s.name, s.arguments || {}, Number(s.concurrency || 1), !!s.noResults);
    case 'sleep':
      await new Promise((r) => setTimeout(r, Number(s.ms || 0)));
      return { slept: Number(s.ms || 0) };
    case 'ping':
      try { return await client.ping(reqOpts); } catch (e) { return { error: errorJson(e) }; }
    case 'wait_notification':
      return waitNotification(s.method, Number(s.timeoutMs || 5000));
    case 'retry_until_allowed':
      return retryUntilAllowed(s.name, s.arguments || {}, Number(s.intervalMs || 200), Number(s.maxTries || 100));
    default:
      return { error: { code: null, message: `unknown script op ${JSON.stringify(s.op)}`, kind: 'usage' } };
  }
}

// ---------------------------------------------------------------- main
async function main() {
  // validate the command before touching the network
  let plan;
  switch (command) {
    case 'list': plan = [{ op: 'list', full: o.full }]; break;
    case 'info': plan = 'info'; break;
    case 'call':
      if (!rest[0]) usage('call needs a tool NAME');
      plan = [{ op: 'call', name: rest[0], arguments: parseArgsJson(rest[1], 'ARGS_JSON') }];
      break;
    case 'repeat': {
      const n = Number(rest[0]);
      if (!Number.isInteger(n) || n < 0) usage('repeat needs a count N');
      if (!rest[1]) usage('repeat needs a tool NAME');
      plan = [{ op: 'repeat', n, name: rest[1], arguments: parseArgsJson(rest[2], 'ARGS_JSON'), concurrency: o.concurrency, noResults: o.noResults }];
      break;
    }
    case 'script': {
      if (!rest[0]) usage('script needs FILE.json');
      try {
        plan = JSON.parse(fs.readFileSync(rest[0], 'utf8'));
      } catch (e) { usage(`cannot read script ${rest[0]}: ${e.message}`); }
      if (!Array.isArray(plan)) usage('a script is a JSON array of steps');
      break;
    }
    default: usage(`unknown command ${command}`);
  }

  const transport = makeTransport();
  // Remember the negotiated version (the SSE transport has no getter for it).
  let negotiated = null;
  const setPV = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (v) => { negotiated = v; setPV?.(v); };
  try {
    await client.connect(transport, reqOpts);
  } catch (e) {
    out({ error: { ...errorJson(e), stage: 'connect' } });
    await client.close().catch(() => {});
    return 1;
  }

  if (plan === 'info') {
    out({
      serverInfo: client.getServerVersion(),
      capabilities: client.getServerCapabilities(),
      instructions: client.getInstructions(),
      protocolVersion: negotiated,
      transport: o.transport,
      sessionId: transport.sessionId ?? transport._endpoint?.searchParams?.get('sessionId') ?? null,
    });
  } else {
    for (const s of plan) out(await step(s));
  }

  if (o.deleteSession && transport instanceof StreamableHTTPClientTransport) {
    try { await transport.terminateSession(); } catch (e) { if (o.verbose) process.stderr.write(`agent: DELETE failed: ${e.message}\n`); }
  }
  await client.close().catch(() => {});
  return 0;
}

main().then(
  (code) => { process.exitCode = code; setTimeout(() => process.exit(code), 100).unref(); },
  (e) => { out({ error: { ...errorJson(e), stage: 'internal' } }); process.exit(0); },
);
