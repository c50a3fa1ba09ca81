#!/usr/bin/env node
// A real 2024-11-05 "HTTP+SSE" MCP server built from the SDK's own classes
// (McpServer + SSEServerTransport), for tests of the legacy transport.
//
//   node legacy-sse-server.mjs [--port 0] [--max-lifetime SECONDS]
//        [--post-path /messages] [--ignore-stdin]
//
// First stdout line: {"port":N,"sse":"/sse","post":"/messages"}.
// Wire protocol (what SSEServerTransport does):
//   GET  /sse                       200 text/event-stream; first event is
//                                   "event: endpoint" with data
//                                   "/messages?sessionId=<uuid>" (relative);
//                                   every JSON-RPC response/notification then
//                                   arrives as "event: message" on this stream.
//   POST /messages?sessionId=<uuid> JSON-RPC message, answered 202 "Accepted"
//                                   (400 for a bad body, 404 for an unknown session).
// Tools: echo {text}; vm_clone {namespace,name,targetName} (only counts);
//   delete_everything {} (only counts); fail {message} (isError result);
//   slow {ms} (answers after ms, max 60000).
// Test endpoints: GET /_stats -> {"calls":{"echo":N,...},"vmClones":[...last 200 args],
//   "sessions":{"opened":N,"open":N},"requests":[last 200 "METHOD path"]};
//   POST /_reset clears the counters.
// Lifetime: exits after --max-lifetime seconds (default 600), and when stdin
// reaches EOF if stdin is a pipe or socket.

import http from 'node:http';
import fs from 'node:fs';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { z } from 'zod';

function die(msg) {
  process.stderr.write(`legacy-sse-server: ${msg}\n`);
  process.exit(2);
}
const opts = { port: 0, maxLifetime: 600, postPath: '/messages', ignoreStdin: false };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => (i + 1 < argv.length ? argv[++i] : die(`${a} needs a value`));
    switch (a) {
      case '--port': opts.port = Number(val()); break;
      case '--max-lifetime': opts.maxLifetime = Number(val()); break;
      case '--post-path': opts.postPath = val(); break;
      case '--ignore-stdin': opts.ignoreStdin = true; break;
      default: die(`unknown argument ${a}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) die('--port must be 0..65535');
  if (!(opts.maxLifetime > 0)) die('--max-lifetime must be > 0');
  if (!opts.postPath.startsWith('/') || opts.postPath === '/sse' || opts.postPath.startsWith('/_')) die('bad --post-path');
}

const stats = { calls: {}, vmClones: [], sessions: { opened: 0, open: 0 }, requests: [] };
function count(tool) { stats.calls[tool] = (stats.calls[tool] || 0) + 1; }
function ring(arr, item) { arr.push(item); if (arr.length > 200) arr.splice(0, arr.length - 200); }

function text(t) { return { content: [{ type: 'text', text: t }] }; }

function newServer() {
  const server = new McpServer(
    { name: 'tollgate-legacy-sse-test-server', version: '0.1.0' },
    { capabilities: { tools: { listChanged: true } }, instructions: 'Test server for tollgate (2024-11-05 HTTP+SSE transport).' },
  );
  server.registerTool('echo', {
    title: 'Echo',
    description: 'Returns its text argument.',
    inputSchema: { text: z.string().describe('text to echo back') },
    annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  }, async ({ text: t }) => { count('echo'); return text(t); });

  server.registerTool('vm_clone', {
    title: 'Virtual Machine: Clone',
    description: 'Pretends to clone a VirtualMachine (only counts the call).',
    inputSchema: {
      namespace: z.string().describe('The namespace of the source virtual machine'),
      name: z.string().describe('The name of the source virtual machine to clone'),
      targetName: z.string().describe('The name for the new cloned virtual machine'),
    },
    annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  }, async (args) => {
    count('vm_clone');
    ring(stats.vmClones, args);
    return text(`cloned ${args.namespace}/${args.name} to ${args.targetName} (#${stats.calls.vm_clone})`);
  });

  server.registerTool('delete_everything', {
    title: 'Delete everything',
    description: 'Pretends to delete everything (only counts the call).',
    inputSchema: {},
    annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: true },
  }, async () => { count('delete_everything'); return text('deleted everything (not really)'); });

  server.registerTool('fail', {
    title: 'Fail',
    description: 'Always returns a tool execution error (isError: true).',
    inputSchema: { message: z.string().optional() },
    annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  }, async ({ message }) => { count('fail'); return { ...text(message || 'failed on purpose'), isError: true }; });

  server.registerTool('slow', {
    title: 'Slow',
    description: 'Answers after ms milliseconds (at most 60000).',
    inputSchema: { ms: z.number().int().min(0).max(60000) },
    annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  }, async ({ ms }) => {
    count('slow');
    await new Promise((r) => setTimeout(r, ms));
    return text(`slept ${ms}ms`);
  });
  return server;
}

const transports = new Map(); // sessionId -> SSEServerTransport

function sendJson(res, code, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const httpServer = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (!url.pathname.startsWith('/_')) ring(stats.requests, `${req.method} ${req.url}`);
  try {
    if (url.pathname === '/_stats' && req.method === 'GET') return sendJson(res, 200, stats);
    if (url.pathname === '/_reset' && req.method === 'POST') {
      stats.calls = {}; stats.vmClones = []; stats.requests = []; stats.sessions.opened = 0;
      return sendJson(res, 200, { ok: true });
    }
    if (url.pathname === '/sse' && req.method === 'GET') {
      const transport = new SSEServerTransport(opts.postPath, res);
      transports.set(transport.sessionId, transport);
      stats.sessions.opened++; stats.sessions.open++;
      const server = newServer();
      let closed = false;
      transport.onclose = () => {
        if (closed) return;
        closed = true;
        transports.delete(transport.sessionId);
        stats.sessions.open--;
        server.close().catch(() => {});
      };
      await server.connect(transport); // writes the 200 + endpoint event
      return;
    }
    if (url.pathname === opts.postPath && req.method === 'POST') {
      const sid = url.searchParams.get('sessionId');
      const transport = sid && transports.get(sid);
      if (!transport) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        return res.end('unknown sessionId');
      }
      await transport.handlePostMessage(req, res);
      return;
    }
    if (url.pathname === '/sse' || url.pathname === opts.postPath) {
      res.writeHead(405, { allow: url.pathname === '/sse' ? 'GET' : 'POST', 'content-type': 'text/plain' });
      return res.end('method not allowed');
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  } catch (e) {
    if (!res.headersSent) { res.writeHead(500, { 'content-type': 'text/plain' }); res.end(String(e?.message ?? e)); }
    else res.end();
  }
});

httpServer.listen(opts.port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: httpServer.address().port, sse: '/sse', post: opts.postPath }) + '\n');
});

function shutdown(why) {
  process.stderr.write(`legacy-sse-server: exiting (${why})\n`);
  for (const t of transports.values()) t.close().catch(() => {});
  httpServer.close();
  httpServer.closeAllConnections?.();
  setTimeout(() => process.exit(0), 50).unref();
}
setTimeout(() => shutdown(`max lifetime ${opts.maxLifetime}s`), opts.maxLifetime * 1000).unref();
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (!opts.ignoreStdin) {
  let st = null;
  try { st = fs.fstatSync(0); } catch { /* no stdin */ }
  if (st && (st.isFIFO() || st.isSocket())) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => shutdown('stdin closed'));
    process.stdin.on('error', () => shutdown('stdin error'));
  }
}
