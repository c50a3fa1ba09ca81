#!/usr/bin/env node
// A stdio MCP server on the official TypeScript SDK (McpServer +
// StdioServerTransport) with tools that misbehave on request, so tests can
// watch what `tollgate wrap` and `--upstream-command` do when a server
// writes garbage, hangs, dies mid-call or is signalled:
//
//   echo {text}        answers text
//   garbage {}         writes a line that is not JSON to stdout, then answers "ok"
//   hang {}            never answers
//   exit {code}        exits with code at once, mid-call
//   big {bytes}        answers a text of that many bytes
//   stderr {text}      writes text to stderr, answers "ok"
//   pid {}             answers its process id
//
// SIGTERM makes it print "stdio-server: SIGTERM" on stderr and exit 42, so
// a test can tell a forwarded signal from a kill. It exits when stdin ends
// (the SDK's transport closes) and after --max-lifetime seconds (default 600).

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { z } from 'zod';

const argv = process.argv.slice(2);
const lifetime = Number(argv[argv.indexOf('--max-lifetime') + 1] || 600);
setTimeout(() => process.exit(0), (argv.includes('--max-lifetime') ? lifetime : 600) * 1000).unref();

process.on('SIGTERM', () => {
  process.stderr.write('stdio-server: SIGTERM\n');
  process.exit(42);
});

const server = new McpServer({ name: 'tollgate-stdio-test-server', version: '0.1.0' });
const text = (t) => ({ content: [{ type: 'text', text: t }] });

server.registerTool('echo', { description: 'Answers its text.', inputSchema: { text: z.string() } },
  async ({ text: t }) => text(t));
server.registerTool('garbage', { description: 'Writes a non-JSON line to stdout, then answers.', inputSchema: {} },
  async () => {
    process.stdout.write('this line is not JSON-RPC\n');
    return text('ok');
  });
server.registerTool('hang', { description: 'Never answers.', inputSchema: {} },
  () => new Promise(() => {}));
server.registerTool('exit', { description: 'Exits at once.', inputSchema: { code: z.number().int() } },
  async ({ code }) => { process.exit(code); });
server.registerTool('big', { description: 'Answers a long text.', inputSchema: { bytes: z.number().int() } },
  async ({ bytes }) => text('x'.repeat(bytes)));
server.registerTool('stderr', { description: 'Writes to stderr.', inputSchema: { text: z.string() } },
  async ({ text: t }) => { process.stderr.write(`${t}\n`); return text('ok'); });
server.registerTool('pid', { description: 'Answers its process id.', inputSchema: {} },
  async () => text(String(process.pid)));

const transport = new StdioServerTransport();
transport.onclose = () => process.exit(0);
process.stdin.on('end', () => process.exit(0));
await server.connect(transport);
