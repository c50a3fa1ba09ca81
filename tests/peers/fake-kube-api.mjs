#!/usr/bin/env node
// A small in-memory stand-in for the Kubernetes API server: just enough for
// kubernetes-mcp-server 0.0.67 (--toolsets core,config,kubevirt) to start,
// list tools, run vm_clone, resources_create_or_update, resources_get/list,
// namespaces_list and pods_list. Plain HTTP on 127.0.0.1, no auth.
//
//   node fake-kube-api.mjs [--port 0] [--kubeconfig-out PATH]
//        [--max-lifetime SECONDS] [--seed FILE.json] [--no-default-seed]
//        [--log FILE] [--ignore-stdin] [--deny-access-reviews]
//
// First stdout line: {"port":N}. Then nothing on stdout.
// Test endpoints (not Kubernetes):
//   GET  /_stats  -> {"creates":{"virtualmachineclones.clone.kubevirt.io":N,..},
//                     "updates":{..},"deletes":{..},"total":N,"requests":[last 200 "METHOD path"],
//                     "accessReviews":[last 200 SelfSubjectAccessReview specs, all answered allowed]}
//   POST /_reset  -> clears counters and the request ring (objects are kept)
//   GET  /_objects -> every stored object
//
// --deny-access-reviews answers every SelfSubjectAccessReview with
// allowed:false (other requests still succeed: there is no RBAC here).
//
// Discovery is served in the legacy form (APIVersions / APIGroupList /
// APIResourceList, application/json), which client-go accepts even though it
// asks for aggregated discovery first. Lists honour `as=Table` because
// kubernetes-mcp-server asks for server-side tables by default.
//
// Lifetime: exits after --max-lifetime seconds (default 600), and when stdin
// reaches EOF if stdin is a pipe or socket (so a dying parent test takes it
// down). /dev/null or a file as stdin is ignored (lifetime only).

import http from 'node:http';
import fs from 'node:fs';
import crypto from 'node:crypto';

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const o = { port: 0, kubeconfigOut: null, maxLifetime: 600, seed: [], defaultSeed: true, log: null, ignoreStdin: false, denyAccessReviews: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) die(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--port': o.port = Number(val()); break;
      case '--kubeconfig-out': o.kubeconfigOut = val(); break;
      case '--max-lifetime': o.maxLifetime = Number(val()); break;
      case '--seed': o.seed.push(val()); break;
      case '--no-default-seed': o.defaultSeed = false; break;
      case '--log': o.log = val(); break;
      case '--ignore-stdin': o.ignoreStdin = true; break;
      case '--deny-access-reviews': o.denyAccessReviews = true; break;
      case '-h': case '--help':
        process.stdout.write(fs.readFileSync(new URL(import.meta.url)).toString().split('\n')
          .filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n');
        process.exit(0);
      default: die(`unknown argument ${a}`);
    }
  }
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) die('--port must be 0..65535');
  if (!(o.maxLifetime > 0)) die('--max-lifetime must be > 0');
  return o;
}
function die(msg) {
  process.stderr.write(`fake-kube-api: ${msg}\n`);
  process.exit(2);
}
const opts = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------- API model
// kind, plural, namespaced, verbs, shortNames
const ALL = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
const RO = ['get', 'list', 'watch'];
const GROUPS = [
  {
    group: '', versions: ['v1'], resources: [
      ['Namespace', 'namespaces', false, ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'], ['ns']],
      ['Node', 'nodes', false, ALL, ['no']],
      ['Pod', 'pods', true, ALL, ['po']],
      ['Event', 'events', true, ALL, ['ev']],
      ['Service', 'services', true, ALL, ['svc']],
      ['ConfigMap', 'configmaps', true, ALL, ['cm']],
      ['Secret', 'secrets', true, ALL, []],
      ['ServiceAccount', 'serviceaccounts', true, ALL, ['sa']],
      ['PersistentVolumeClaim', 'persistentvolumeclaims', true, ALL, ['pvc']],
    ],
  },
  {
    group: 'apps', versions: ['v1'], resources: [
      ['Deployment', 'deployments', true, ALL, ['deploy']],
      ['ReplicaSet', 'replicasets', true, ALL, ['rs']],
      ['StatefulSet', 'statefulsets', true, ALL, ['sts']],
      ['DaemonSet', 'daemonsets', true, ALL, ['ds']],
    ],
  },
  {
    group: 'authorization.k8s.io', versions: ['v1'], resources: [
      ['SelfSubjectAccessReview', 'selfsubjectaccessreviews', false, ['create'], []],
      ['SelfSubjectRulesReview', 'selfsubjectrulesreviews', false, ['create'], []],
    ],
  },
  {
    group: 'kubevirt.io', versions: ['v1'], resources: [
      ['VirtualMachine', 'virtualmachines', true, ALL, ['vm', 'vms']],
      ['VirtualMachineInstance', 'virtualmachineinstances', true, ALL, ['vmi', 'vmis']],
    ],
  },
  {
    group: 'clone.kubevirt.io', versions: ['v1beta1', 'v1alpha1'], resources: [
      ['VirtualMachineClone', 'virtualmachineclones', true, ALL, ['vmclone', 'vmclones']],
    ],
  },
  {
    group: 'instancetype.kubevirt.io', versions: ['v1beta1'], resources: [
      ['VirtualMachineClusterInstancetype', 'virtualmachineclusterinstancetypes', false, ALL, ['vmcf']],
      ['VirtualMachineClusterPreference', 'virtualmachineclusterpreferences', false, ALL, ['vmcp']],
      ['VirtualMachineInstancetype', 'virtualmachineinstancetypes', true, ALL, ['vmf']],
      ['VirtualMachinePreference', 'virtualmachinepreferences', true, ALL, ['vmpref']],
    ],
  },
  {
    group: 'cdi.kubevirt.io', versions: ['v1beta1'], resources: [
      ['DataSource', 'datasources', true, ALL, ['das']],
      ['DataVolume', 'datavolumes', true, ALL, ['dv']],
    ],
  },
];
void RO;

// resource key "plural.group" (core: "plural") -> info
const RES = new Map();
for (const g of GROUPS) {
  for (const [kind, plural, namespaced, verbs, shortNames] of g.resources) {
    RES.set(resKey(plural, g.group), { group: g.group, versions: g.versions, kind, plural, namespaced, verbs, shortNames });
  }
}
function resKey(plural, group) { return group ? `${plural}.${group}` : plural; }
function gvString(group, version) { return group ? `${group}/${version}` : version; }

// ---------------------------------------------------------------- store
let rv = 1000;
const store = new Map(); // resKey -> Map("ns/name" | "name" -> object)
const stats = { creates: {}, updates: {}, deletes: {}, total: 0, requests: [], accessReviews: [] };

function bucket(key) {
  let m = store.get(key);
  if (!m) { m = new Map(); store.set(key, m); }
  return m;
}
function objKey(ns, name) { return ns ? `${ns}/${name}` : name; }
function bump(counter, key) { stats[counter][key] = (stats[counter][key] || 0) + 1; }
function randSuffix(n = 5) {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  let s = '';
  for (const b of crypto.randomBytes(n)) s += alphabet[b % alphabet.length];
  return s;
}
function finalizeNew(info, version, ns, obj) {
  obj.apiVersion = gvString(info.group, version);
  obj.kind = info.kind;
  obj.metadata = obj.metadata || {};
  if (!obj.metadata.name && obj.metadata.generateName) obj.metadata.name = obj.metadata.generateName + randSuffix();
  if (info.namespaced) obj.metadata.namespace = ns;
  else delete obj.metadata.namespace;
  obj.metadata.uid = crypto.randomUUID();
  obj.metadata.resourceVersion = String(++rv);
  obj.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  obj.metadata.generation = 1;
  return obj;
}
function insert(info, version, ns, obj, { count = true } = {}) {
  finalizeNew(info, version, ns, obj);
  bucket(resKey(info.plural, info.group)).set(objKey(info.namespaced ? ns : '', obj.metadata.name), obj);
  if (count) bump('creates', resKey(info.plural, info.group));
  if (info.plural !== 'namespaces' && info.namespaced && ns) ensureNamespace(ns);
  return obj;
}
function ensureNamespace(ns) {
  const b = bucket('namespaces');
  if (!b.has(ns)) insert(RES.get('namespaces'), 'v1', '', { metadata: { name: ns }, status: { phase: 'Active' } }, { count: false });
}
function asVersion(obj, info, version) {
  return { ...obj, apiVersion: gvString(info.group, version) };
}

// ---------------------------------------------------------------- seed
function seedDefaults() {
  const ns = (name) => insert(RES.get('namespaces'), 'v1', '', { metadata: { name, labels: { 'kubernetes.io/metadata.name': name } }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } }, { count: false });
  for (const n of ['default', 'kube-system', 'vms']) ns(n);
  insert(RES.get('nodes'), 'v1', '', {
    metadata: { name: 'fake-node-1', labels: { 'kubernetes.io/hostname': 'fake-node-1', 'node-role.kubernetes.io/control-plane': '' } },
    status: { conditions: [{ type: 'Ready', status: 'True' }], nodeInfo: { kubeletVersion: 'v1.35.0' } },
  }, { count: false });
  const vm = (name, running) => insert(RES.get('virtualmachines.kubevirt.io'), 'v1', 'vms', {
    metadata: { name, labels: { 'kubevirt.io/os': 'fedora' } },
    spec: {
      runStrategy: running ? 'Always' : 'Halted',
      template: {
        metadata: { labels: { 'kubevirt.io/domain': name } },
        spec: {
          domain: { devices: { disks: [{ name: 'rootdisk', disk: { bus: 'virtio' } }] }, memory: { guest: '2Gi' } },
          volumes: [{ name: 'rootdisk', containerDisk: { image: 'quay.io/containerdisks/fedora:latest' } }],
        },
      },
    },
    status: { printableStatus: running ? 'Running' : 'Stopped', ready: !!running },
  }, { count: false });
  vm('golden-fedora', false);
  vm('web-1', true);
  const pod = (ns, name, image) => insert(RES.get('pods'), 'v1', ns, {
    metadata: { name, labels: { app: name.replace(/-[^-]+$/, '') } },
    spec: { nodeName: 'fake-node-1', containers: [{ name: 'main', image }] },
    status: { phase: 'Running', podIP: '10.0.0.' + (bucket('pods').size + 10), conditions: [{ type: 'Ready', status: 'True' }], containerStatuses: [{ name: 'main', ready: true, restartCount: 0, image, state: { running: { startedAt: new Date().toISOString() } } }] },
  }, { count: false });
  pod('default', 'nginx-7d9c5', 'nginx:1.27');
  pod('kube-system', 'coredns-5d78c', 'coredns/coredns:1.11.1');
  pod('vms', 'virt-launcher-web-1-abcde', 'quay.io/kubevirt/virt-launcher:v1.5.0');
}
function seedFile(path) {
  let docs = JSON.parse(fs.readFileSync(path, 'utf8'));
  if (!Array.isArray(docs)) docs = docs.items || [docs];
  for (const d of docs) {
    const [group, version] = splitApiVersion(d.apiVersion || '');
    const info = [...RES.values()].find((r) => r.group === group && r.kind === d.kind && r.versions.includes(version));
    if (!info) die(`--seed ${path}: unknown kind ${d.apiVersion} ${d.kind}`);
    insert(info, version, d.metadata?.namespace || 'default', structuredClone(d), { count: false });
  }
}
function splitApiVersion(av) {
  const i = av.indexOf('/');
  return i < 0 ? ['', av] : [av.slice(0, i), av.slice(i + 1)];
}
if (opts.defaultSeed) seedDefaults();
for (const f of opts.seed) seedFile(f);

// ---------------------------------------------------------------- discovery
function apiVersions(req) {
  return {
    kind: 'APIVersions', versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: req.socket.localAddress + ':' + req.socket.localPort }],
  };
}
function groupList() {
  return {
    kind: 'APIGroupList', apiVersion: 'v1',
    groups: GROUPS.filter((g) => g.group).map((g) => ({
      name: g.group,
      versions: g.versions.map((v) => ({ groupVersion: `${g.group}/${v}`, version: v })),
      preferredVersion: { groupVersion: `${g.group}/${g.versions[0]}`, version: g.versions[0] },
    })),
  };
}
function resourceList(group, version) {
  const g = GROUPS.find((x) => x.group === group && x.versions.includes(version));
  if (!g) return null;
  return {
    kind: 'APIResourceList', apiVersion: 'v1', groupVersion: gvString(group, version),
    resources: g.resources.map(([kind, plural, namespaced, verbs, shortNames]) => ({
      name: plural, singularName: kind.toLowerCase(), namespaced, kind, verbs,
      ...(shortNames.length ? { shortNames } : {}),
    })),
  };
}
const VERSION = {
  major: '1', minor: '35', emulationMajor: '1', emulationMinor: '35', minCompatibilityMajor: '1', minCompatibilityMinor: '34',
  gitVersion: 'v1.35.0-fake', gitCommit: '0000000000000000000000000000000000000000', gitTreeState: 'clean',
  buildDate: '2026-01-01T00:00:00Z', goVersion: 'go1.25.0', compiler: 'gc', platform: 'linux/amd64',
};

// ---------------------------------------------------------------- helpers
function send(res, code, body, headers = {}) {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-cache, private', 'content-length': Buffer.byteLength(data), ...headers });
  res.end(data);
}
function status(res, code, reason, message, details) {
  send(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code });
}
function notFound(res, info, name) {
  status(res, 404, 'NotFound', `${info ? resKey(info.plural, info.group) : 'resource'} "${name ?? ''}" not found`,
    info ? { name, group: info.group, kind: info.plural } : undefined);
}
function wantsTable(req) {
  return /as=Table/.test(req.headers.accept || '');
}
function matchLabels(obj, selector) {
  if (!selector) return true;
  const labels = obj.metadata?.labels || {};
  return selector.split(',').every((term) => {
    term = term.trim();
    if (!term) return true;
    let m;
    if ((m = term.match(/^([^!=]+)!=(.*)$/))) return labels[m[1]] !== m[2];
    if ((m = term.match(/^([^=]+)==?(.*)$/))) return labels[m[1]] === m[2];
    if (term.startsWith('!')) return !(term.slice(1) in labels);
    return term in labels;
  });
}
function matchFields(obj, selector) {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const m = term.match(/^([^!=]+)(!=|==|=)(.*)$/);
    if (!m) return true;
    const v = m[1].split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
    return m[2] === '!=' ? String(v) !== m[3] : String(v) === m[3];
  });
}
function age(ts) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}
function toTable(items, info) {
  const extra = {
    pods: [['Ready', 'string', (o) => `${(o.status?.containerStatuses || []).filter((c) => c.ready).length}/${(o.spec?.containers || []).length}`],
      ['Status', 'string', (o) => o.status?.phase || ''],
      ['Restarts', 'integer', () => 0]],
    namespaces: [['Status', 'string', (o) => o.status?.phase || 'Active']],
    virtualmachines: [['Status', 'string', (o) => o.status?.printableStatus || ''], ['Ready', 'string', (o) => String(!!o.status?.ready)]],
    virtualmachineclones: [['Phase', 'string', (o) => o.status?.phase || ''], ['SourceVirtualMachine', 'string', (o) => o.spec?.source?.name || ''], ['TargetVirtualMachine', 'string', (o) => o.spec?.target?.name || '']],
  }[info.plural] || [];
  const cols = [['Name', 'string', (o) => o.metadata.name], ...extra, ['Age', 'string', (o) => age(o.metadata.creationTimestamp)]];
  return {
    kind: 'Table', apiVersion: 'meta.k8s.io/v1', metadata: { resourceVersion: String(rv) },
    columnDefinitions: cols.map(([name, type], i) => ({ name, type, format: i === 0 ? 'name' : '', description: name, priority: 0 })),
    rows: items.map((o) => ({
      cells: cols.map(([, , f]) => f(o)),
      object: {
        kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1',
        metadata: o.metadata,
      },
    })),
  };
}
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
function isObject(x) { return x && typeof x === 'object' && !Array.isArray(x); }
function mergePatch(target, patch) {
  if (!isObject(patch)) return patch;
  const out = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}


// ---------------------------------------------------------------- protobuf
// client-go's typed clients send built-in kinds (e.g. SelfSubjectAccessReview)
// as application/vnd.kubernetes.protobuf: "k8s\0" + runtime.Unknown{typeMeta=1,
// raw=2}. Just enough decoding to read an access review; answers are JSON,
// which client-go accepts because it decodes by the response Content-Type.
function pbFields(buf) {
  const out = [];
  let i = 0;
  const varint = () => {
    let v = 0; let mul = 1;
    for (;;) {
      if (i >= buf.length) throw new Error('truncated varint');
      const b = buf[i++];
      v += (b & 0x7f) * mul; mul *= 128;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < buf.length) {
    const tag = varint(); const field = Math.floor(tag / 8); const wire = tag & 7;
    if (wire === 0) out.push([field, varint()]);
    else if (wire === 2) { const n = varint(); out.push([field, buf.subarray(i, i + n)]); i += n; }
    else if (wire === 1) { out.push([field, buf.subarray(i, i + 8)]); i += 8; }
    else if (wire === 5) { out.push([field, buf.subarray(i, i + 4)]); i += 4; }
    else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}
function pbGet(fields, n) { const f = fields.find(([k]) => k === n); return f ? f[1] : undefined; }
function pbStr(fields, n) { const v = pbGet(fields, n); return Buffer.isBuffer(v) ? v.toString('utf8') : ''; }
function decodeUnknown(buf) {
  if (buf.length < 4 || buf.subarray(0, 4).toString('latin1') !== 'k8s\0') throw new Error('no k8s protobuf magic');
  const u = pbFields(buf.subarray(4));
  const tm = pbFields(pbGet(u, 1) || Buffer.alloc(0));
  return { apiVersion: pbStr(tm, 1), kind: pbStr(tm, 2), raw: pbGet(u, 2) || Buffer.alloc(0) };
}
// SelfSubjectAccessReview{metadata=1, spec=2{resourceAttributes=1{namespace=1,
// verb=2, group=3, version=4, resource=5, subresource=6, name=7},
// nonResourceAttributes=2{path=1, verb=2}}}
function decodeAccessReview(buf) {
  const u = decodeUnknown(buf);
  const spec = pbFields(pbGet(pbFields(u.raw), 2) || Buffer.alloc(0));
  const ra = pbGet(spec, 1); const nra = pbGet(spec, 2);
  const r = { apiVersion: u.apiVersion, kind: u.kind, metadata: {}, spec: {} };
  if (ra) {
    const f = pbFields(ra);
    const names = ['namespace', 'verb', 'group', 'version', 'resource', 'subresource', 'name'];
    r.spec.resourceAttributes = {};
    names.forEach((k, idx) => { const v = pbStr(f, idx + 1); if (v) r.spec.resourceAttributes[k] = v; });
  }
  if (nra) { const f = pbFields(nra); r.spec.nonResourceAttributes = { path: pbStr(f, 1), verb: pbStr(f, 2) }; }
  return r;
}
function protoSummary(buf) {
  try {
    const u = decodeUnknown(buf);
    if (/AccessReview$/.test(u.kind)) return JSON.stringify(decodeAccessReview(buf));
    return JSON.stringify({ protobuf: `${u.apiVersion} ${u.kind}`, bytes: buf.length });
  } catch (e) {
    return JSON.stringify({ protobuf: 'undecodable', error: e.message, base64: buf.toString('base64') });
  }
}
function parseBody(req, body) {
  // JSON (also used for apply-patch+yaml: client-go sends JSON, which is YAML)
  if (Buffer.isBuffer(body)) {
    const e = new Error(`fake-kube-api: protobuf request bodies are only understood for access reviews (${protoSummary(body)})`);
    e.status = 415; throw e;
  }
  return JSON.parse(body);
}

// ---------------------------------------------------------------- request log
let logStream = null;
if (opts.log) logStream = fs.createWriteStream(opts.log, { flags: 'a' });
function record(req, body, code) {
  stats.total++;
  stats.requests.push(`${req.method} ${req.url}`);
  if (stats.requests.length > 200) stats.requests.splice(0, stats.requests.length - 200);
  if (logStream) {
    logStream.write(JSON.stringify({
      t: new Date().toISOString(), method: req.method, url: req.url, code,
      accept: req.headers.accept, contentType: req.headers['content-type'], userAgent: req.headers['user-agent'],
      body: body || undefined,
    }) + '\n');
  }
}

// ---------------------------------------------------------------- routing
// /api/v1/[namespaces/NS/]RES[/NAME[/SUB]] and /apis/G/V/[namespaces/NS/]RES[/NAME[/SUB]]
function parseResourcePath(parts) {
  let group; let version; let rest;
  if (parts[0] === 'api') { group = ''; version = parts[1]; rest = parts.slice(2); }
  else { group = parts[1]; version = parts[2]; rest = parts.slice(3); }
  let ns = null;
  if (rest[0] === 'namespaces' && rest.length >= 3) { ns = rest[1]; rest = rest.slice(2); }
  const [plural, name, sub] = rest;
  const info = RES.get(resKey(plural, group));
  if (!info || !info.versions.includes(version)) return { group, version, ns, plural, name, sub, info: null };
  // /api/v1/namespaces/NAME is the namespace itself
  return { group, version, ns, plural, name, sub, info };
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://x');
  const parts = url.pathname.split('/').filter(Boolean);
  const raw = ['POST', 'PUT', 'PATCH'].includes(req.method) ? await readBody(req) : Buffer.alloc(0);
  const isProto = /protobuf/.test(req.headers['content-type'] || '');
  const body = isProto ? raw : raw.toString('utf8');
  let code = 200;
  const origWriteHead = res.writeHead.bind(res);
  res.writeHead = (c, ...rest) => { code = c; return origWriteHead(c, ...rest); };
  try {
    await route(req, res, url, parts, body);
  } catch (e) {
    status(res, 500, 'InternalError', `fake-kube-api: ${e && e.stack || e}`);
  } finally {
    if (!url.pathname.startsWith('/_')) record(req, isProto ? protoSummary(raw) : body, code);
  }
}

async function route(req, res, url, parts, body) {
  const p = url.pathname;
  // test endpoints
  if (p === '/_stats') return send(res, 200, stats);
  if (p === '/_reset' && req.method === 'POST') {
    stats.creates = {}; stats.updates = {}; stats.deletes = {}; stats.total = 0; stats.requests = []; stats.accessReviews = [];
    return send(res, 200, { ok: true });
  }
  if (p === '/_objects') {
    const out = {};
    for (const [k, m] of store) out[k] = [...m.values()];
    return send(res, 200, out);
  }
  // discovery & misc
  if (req.method === 'GET') {
    if (p === '/version') return send(res, 200, VERSION);
    if (p === '/healthz' || p === '/readyz' || p === '/livez') return send(res, 200, 'ok', { 'content-type': 'text/plain' });
    if (p === '/api') return send(res, 200, apiVersions(req));
    if (p === '/apis') return send(res, 200, groupList());
    if (parts[0] === 'api' && parts.length === 2) {
      const rl = resourceList('', parts[1]);
      return rl ? send(res, 200, rl) : status(res, 404, 'NotFound', 'the server could not find the requested resource');
    }
    if (parts[0] === 'apis' && parts.length === 2) {
      const g = GROUPS.find((x) => x.group === parts[1]);
      if (!g) return status(res, 404, 'NotFound', 'the server could not find the requested resource');
      return send(res, 200, groupList().groups.find((x) => x.name === parts[1]));
    }
    if (parts[0] === 'apis' && parts.length === 3) {
      const rl = resourceList(parts[1], parts[2]);
      return rl ? send(res, 200, rl) : status(res, 404, 'NotFound', 'the server could not find the requested resource');
    }
  }
  if ((parts[0] === 'api' && parts.length >= 3) || (parts[0] === 'apis' && parts.length >= 4)) {
    return resource(req, res, url, parseResourcePath(parts), body);
  }
  return status(res, 404, 'NotFound', 'the server could not find the requested resource');
}

function resource(req, res, url, r, body) {
  const { info, version } = r;
  let { ns, name } = r;
  if (!info) return status(res, 404, 'NotFound', 'the server could not find the requested resource');
  if (r.sub) return status(res, 404, 'NotFound', `fake-kube-api: subresource ${r.sub} not implemented`);
  if (!info.namespaced && ns) return status(res, 404, 'NotFound', 'the server could not find the requested resource');
  const key = resKey(info.plural, info.group);
  const b = bucket(key);
  const dryRun = url.searchParams.has('dryRun');

  // SelfSubjectAccessReview / RulesReview: everything is allowed.
  if (info.plural === 'selfsubjectaccessreviews' && req.method === 'POST') {
    let o;
    try { o = Buffer.isBuffer(body) ? decodeAccessReview(body) : JSON.parse(body || '{}'); } catch (e) {
      return status(res, 400, 'BadRequest', `fake-kube-api: cannot decode access review: ${e.message}`);
    }
    stats.accessReviews.push(o.spec || {});
    if (stats.accessReviews.length > 200) stats.accessReviews.splice(0, stats.accessReviews.length - 200);
    return send(res, 201, { ...o, kind: info.kind, apiVersion: gvString(info.group, version), metadata: { creationTimestamp: null }, status: opts.denyAccessReviews
      ? { allowed: false, denied: true, reason: 'fake-kube-api --deny-access-reviews' }
      : { allowed: true, reason: 'fake-kube-api allows everything' } });
  }
  if (info.plural === 'selfsubjectrulesreviews' && req.method === 'POST') {
    let o = {};
    try { if (!Buffer.isBuffer(body)) o = JSON.parse(body || '{}'); } catch { /* ignore */ }
    return send(res, 201, { ...o, kind: info.kind, apiVersion: gvString(info.group, version), status: { resourceRules: [{ verbs: ['*'], apiGroups: ['*'], resources: ['*'] }], nonResourceRules: [{ verbs: ['*'], nonResourceURLs: ['*'] }], incomplete: false } });
  }

  if (!name) {
    // collection
    if (req.method === 'GET') {
      if (url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1') {
        return status(res, 405, 'MethodNotAllowed', 'fake-kube-api: watch not implemented');
      }
      let items = [...b.values()]
        .filter((o) => !info.namespaced || !ns || o.metadata.namespace === ns)
        .filter((o) => matchLabels(o, url.searchParams.get('labelSelector')))
        .filter((o) => matchFields(o, url.searchParams.get('fieldSelector')))
        .map((o) => asVersion(o, info, version));
      items.sort((a, b2) => objKey(a.metadata.namespace, a.metadata.name).localeCompare(objKey(b2.metadata.namespace, b2.metadata.name)));
      const limit = Number(url.searchParams.get('limit') || 0);
      if (limit > 0) items = items.slice(0, limit);
      if (wantsTable(req)) return send(res, 200, toTable(items, info));
      return send(res, 200, {
        apiVersion: gvString(info.group, version), kind: `${info.kind}List`,
        metadata: { resourceVersion: String(rv) }, items,
      });
    }
    if (req.method === 'POST') {
      let obj;
      try { obj = parseBody(req, body); } catch (e) { return status(res, e.status || 400, e.status ? 'UnsupportedMediaType' : 'BadRequest', `fake-kube-api: body is not JSON: ${e.message}`); }
      if (!isObject(obj)) return status(res, 400, 'BadRequest', 'body must be an object');
      if (info.namespaced && !ns) return status(res, 404, 'NotFound', 'the server could not find the requested resource');
      if (obj.metadata?.namespace && info.namespaced && obj.metadata.namespace !== ns) {
        return status(res, 400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      }
      if (!obj.metadata?.name && !obj.metadata?.generateName) {
        return status(res, 422, 'Invalid', `${info.kind} "" is invalid: metadata.name: Required value: name or generateName is required`);
      }
      if (obj.metadata?.name && b.has(objKey(info.namespaced ? ns : '', obj.metadata.name))) {
        return status(res, 409, 'AlreadyExists', `${key} "${obj.metadata.name}" already exists`, { name: obj.metadata.name, group: info.group, kind: info.plural });
      }
      if (dryRun) return send(res, 201, finalizeNew(info, version, ns, obj));
      return send(res, 201, insert(info, version, ns, obj));
    }
    if (req.method === 'DELETE') {
      let n = 0;
      for (const [k, o] of b) if (!info.namespaced || !ns || o.metadata.namespace === ns) { b.delete(k); n++; }
      stats.deletes[key] = (stats.deletes[key] || 0) + n;
      return send(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success' });
    }
    return status(res, 405, 'MethodNotAllowed', `method ${req.method} not allowed on a collection`);
  }

  // single object
  const k = objKey(info.namespaced ? ns : '', name);
  const existing = b.get(k);
  if (req.method === 'GET') return existing ? send(res, 200, asVersion(existing, info, version)) : notFound(res, info, name);
  if (req.method === 'DELETE') {
    if (!existing) return notFound(res, info, name);
    if (!dryRun) { b.delete(k); bump('deletes', key); }
    return send(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, group: info.group, kind: info.plural, uid: existing.metadata.uid } });
  }
  if (req.method === 'PUT') {
    let obj;
    try { obj = parseBody(req, body); } catch (e) { return status(res, e.status || 400, e.status ? 'UnsupportedMediaType' : 'BadRequest', `fake-kube-api: body is not JSON: ${e.message}`); }
    if (!existing) return notFound(res, info, name);
    obj.metadata = { ...obj.metadata, name, uid: existing.metadata.uid, creationTimestamp: existing.metadata.creationTimestamp, resourceVersion: String(++rv) };
    if (info.namespaced) obj.metadata.namespace = ns;
    obj.apiVersion = gvString(info.group, version); obj.kind = info.kind;
    if (!dryRun) { b.set(k, obj); bump('updates', key); }
    return send(res, 200, obj);
  }
  if (req.method === 'PATCH') {
    const ct = (req.headers['content-type'] || '').split(';')[0].trim();
    let patch;
    try { patch = parseBody(req, body); } catch (e) {
      return status(res, 415, 'UnsupportedMediaType', `fake-kube-api: patch body must be JSON (${ct}): ${e.message}`);
    }
    if (ct === 'application/apply-patch+yaml' || ct === 'application/apply-patch+json') {
      // server-side apply: create when absent, else merge.
      if (!existing) {
        if (dryRun) return send(res, 201, finalizeNew(info, version, ns, patch));
        patch.metadata = { ...patch.metadata, name };
        return send(res, 201, insert(info, version, ns, patch));
      }
      const merged = mergePatch(existing, patch);
      merged.metadata = { ...merged.metadata, resourceVersion: String(++rv), uid: existing.metadata.uid };
      merged.apiVersion = gvString(info.group, version);
      if (!dryRun) { b.set(k, merged); bump('updates', key); }
      return send(res, 200, merged);
    }
    if (!existing) return notFound(res, info, name);
    if (ct === 'application/json-patch+json') return status(res, 415, 'UnsupportedMediaType', 'fake-kube-api: json-patch not implemented');
    // merge-patch and strategic-merge-patch are both treated as JSON merge patch
    const merged = mergePatch(existing, patch);
    merged.metadata = { ...merged.metadata, resourceVersion: String(++rv), uid: existing.metadata.uid };
    merged.apiVersion = gvString(info.group, version);
    if (!dryRun) { b.set(k, merged); bump('updates', key); }
    return send(res, 200, merged);
  }
  return status(res, 405, 'MethodNotAllowed', `method ${req.method} not allowed`);
}

// ---------------------------------------------------------------- server
const server = http.createServer((req, res) => { handle(req, res); });
server.keepAliveTimeout = 30_000;
server.listen(opts.port, '127.0.0.1', () => {
  const port = server.address().port;
  if (opts.kubeconfigOut) {
    fs.writeFileSync(opts.kubeconfigOut, [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: fake-kube-api',
      '  cluster:',
      `    server: http://127.0.0.1:${port}`,
      'contexts:',
      '- name: fake-kube-api',
      '  context:',
      '    cluster: fake-kube-api',
      '    user: fake-user',
      '    namespace: default',
      'current-context: fake-kube-api',
      'users:',
      '- name: fake-user',
      '  user:',
      '    token: fake-token',
      'preferences: {}',
      '',
    ].join('\n'));
  }
  process.stdout.write(JSON.stringify({ port }) + '\n');
});

function shutdown(why) {
  process.stderr.write(`fake-kube-api: exiting (${why})\n`);
  server.close();
  server.closeAllConnections?.();
  if (logStream) logStream.end();
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
