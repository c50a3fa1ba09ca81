#!/usr/bin/env python3
"""Check tollgate-oracle against the real kubernetes-mcp-server release binary.

Not part of CI: run it by hand when the oracle or the upstream version changes.
It starts tests/peers/fake-kube-api.mjs (which logs every request body) and the
server on loopback, sends texts from `tollgate-oracle gen` through
resources_create_or_update, and compares the server-side-apply PATCH bodies the
server sends (and its refusals) with what the oracle predicted. Then it sends a
few raw JSON-RPC bodies and compares which object got applied.

  python3 tests/oracle/crosscheck.py KMS_BINARY [SEED [COUNT]]

KMS_BINARY is the npm package's bin/kubernetes-mcp-server-linux-amd64.
Exit status 1 on any disagreement.
"""
import collections, json, os, shutil, subprocess, sys, tempfile, time, urllib.error, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
kms = sys.argv[1]
seed = sys.argv[2] if len(sys.argv) > 2 else "1"
count = int(sys.argv[3]) if len(sys.argv) > 3 else 500
oracle = subprocess.run([f"{REPO}/scripts/oracle.sh"], capture_output=True, text=True, check=True).stdout.strip()
work = tempfile.mkdtemp(prefix="oracle-crosscheck-")
log, kubeconfig = f"{work}/kube.log", f"{work}/kubeconfig"
open(log, "w").close()


def lines(text):
    # Only "\n" ends a line: str.splitlines() would also split on U+0085/U+2028.
    return [l for l in text.split("\n") if l]


def run_oracle(*args, stdin=""):
    return lines(subprocess.run([oracle, *args], input=stdin, capture_output=True, text=True, check=True).stdout)


fake = subprocess.Popen(["node", f"{REPO}/tests/peers/fake-kube-api.mjs", "--port", "0", "--kubeconfig-out", kubeconfig,
                         "--log", log, "--max-lifetime", "3600"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
kube_port = json.loads(fake.stdout.readline())["port"]
mcp_port = 38000 + os.getpid() % 1000
server = subprocess.Popen([kms, "--port", str(mcp_port), "--bind-address", "127.0.0.1", "--kubeconfig", kubeconfig,
                           "--toolsets", "core,config,kubevirt", "--log-file", f"{work}/kms.log"], stdin=subprocess.DEVNULL)
session = None


def post(raw):
    """POST a raw body to /mcp; returns the first SSE data message or an HTTP error string."""
    global session
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    if session:
        headers["Mcp-Session-Id"] = session
    try:
        r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{mcp_port}/mcp", raw, headers), timeout=30)
    except urllib.error.HTTPError as e:
        return {"http_error": e.code}
    session = r.headers.get("Mcp-Session-Id") or session
    for line in lines(r.read().decode()):
        if line.startswith("data: "):
            return json.loads(line[6:])
    return None


log_pos = 0


def requests_of_case(n):
    """The fake API's log lines up to a marker request, so each case gets exactly its own requests."""
    global log_pos
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{kube_port}/api/v1/namespaces/mark{n}/configmaps/x", timeout=5)
    except urllib.error.HTTPError:
        pass
    for _ in range(1000):
        with open(log, "rb") as f:
            f.seek(log_pos)
            data = f.read()
        i = data.find(f"/namespaces/mark{n}/".encode())
        if i >= 0:
            end = data.find(b"\n", i) + 1
            log_pos += end
            return [json.loads(l) for l in data[:end].split(b"\n") if l]
        time.sleep(0.005)
    sys.exit("the fake API never logged marker %d" % n)


def patches_of_case(n):
    return [json.loads(r["body"]) for r in requests_of_case(n) if r["method"] == "PATCH"]


canon = lambda v: json.dumps(v, sort_keys=True)
failed = False
try:
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{mcp_port}/healthz", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    post(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "crosscheck", "version": "0"}}}).encode())
    post(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    requests_of_case(0)

    # 1. Generated manifests through resources_create_or_update.
    texts = [json.loads(l) for l in run_oracle("gen", "--seed", seed, "--count", str(count))]
    answers = [json.loads(l) for l in run_oracle("batch", stdin="".join(
        json.dumps({"mode": "manifest", "input": t}) + "\n" for t in texts))]
    stats, reasons, bad = collections.Counter(), collections.Counter(), []
    for n, (text, want) in enumerate(zip(texts, answers), 1):
        reply = post(json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
            "name": "resources_create_or_update", "arguments": {"resource": text}}}).encode())
        patches = patches_of_case(n)
        result = reply.get("result", {})
        said = "".join(c.get("text", "") for c in result.get("content", []))
        if "error" in want:
            ok = result.get("isError") and not patches and (
                said == want["error"] or f"failed to create or update resources: {want['error']}" in said)
            kind = "refused with the same error"
        else:
            objs = want["ok"]
            # Objects are applied in order; an apply-time error (unknown kind,
            # empty name) stops the rest, so the bodies must be a prefix.
            ok = len(patches) <= len(objs) and all(canon(p) == canon(o) for p, o in zip(patches, objs))
            ok = ok and (len(patches) == len(objs)) != bool(result.get("isError"))
            kind = "same objects applied" if not result.get("isError") else "same objects up to an apply-time error"
            if result.get("isError"):
                reasons[said.rsplit(": ", 1)[-1][:60]] += 1
        stats[kind if ok else "DISAGREE"] += 1
        if not ok and len(bad) < 5:
            bad.append({"case": n, "text": text, "oracle": want, "patches": patches, "server": said[:400]})
    print(json.dumps({"seed": seed, "count": count, "results": stats, "apply_time_errors": reasons.most_common(6)}, indent=1))
    for b in bad:
        print(json.dumps(b, ensure_ascii=False))
    failed = bool(bad)

    # 2. Raw JSON-RPC bodies: which ConfigMap gets applied shows how the
    # server read the body.
    def cm(name):
        return json.dumps(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\n")
    call = '{"jsonrpc":"2.0","id":%d,"method":"tools/call",'
    bodies = [
        call % 1 + '"params":{"name":"resources_create_or_update","arguments":{"resource":%s,"resource":%s}}}' % (cm("first"), cm("last")),
        call % 2 + '"params":{"name":"resources_create_or_update","arguments":{"resource":%s}},'
                   '"params":{"name":"resources_create_or_update","arguments":{"resource":%s}}} trailing' % (cm("p1"), cm("p2")),
        call % 3 + '"params":{"Name":"pods_list","name":"resources_create_or_update","Arguments":{"resource":%s},'
                   '"arguments":{"Resource":"x","resource":%s}}}' % (cm("upper"), cm("lower")),
        call % 4 + '"params":{"name":"resources_create_or_update","arguments":["x"]}}',
    ]
    for n, body in enumerate(bodies, count + 1):
        reply = post(body.encode())
        applied = [p["metadata"]["name"] for p in patches_of_case(n)]
        want = json.loads(run_oracle("read-json", stdin=body)[0])
        if "ok" in want:
            resource = want["ok"]["params"]["arguments"]["resource"]
            objs = json.loads(run_oracle("read-manifest", stdin=resource)[0])["ok"]
            ok = applied == [o["metadata"]["name"] for o in objs]
        else:
            ok = not applied and want["error"] in json.dumps(reply)
        print(("agree   " if ok else "DISAGREE"), "body", n - count, "applied", applied, "oracle", json.dumps(want)[:160])
        failed |= not ok
finally:
    server.terminate()
    fake.terminate()
    server.wait()
    fake.wait()
if failed:
    print(f"logs kept in {work}")
else:
    shutil.rmtree(work)
sys.exit(1 if failed else 0)
