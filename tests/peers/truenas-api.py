#!/usr/bin/env python3
"""A stand-in for the TrueNAS REST API (v2.0), just large enough for the
TrueNAS MCP server of the tests (iflow-mcp-vespo92-truenas-mcp-server,
pinned in tests/peers/requirements.txt) to start, list and clone, and to
count every write that reaches it.

What it models, and why it is faithful where the tests look (docs/stdio.md
has the comparison with the real middleware):
- `Authorization: Bearer KEY` with the API key, else 401, as TrueNAS does;
- `GET /api/v2.0/system/info` with a SCALE version string (the server
  registers its VM tools only for SCALE);
- `GET /api/v2.0/zfs/snapshot`, `/pool`, `/pool/dataset`, `/vm`, `/app`
  (reads);
- `POST /api/v2.0/zfs/snapshot/clone` with `{snapshot, dataset_dst,
  dataset_properties?}`: the real method's arguments. The snapshot must
  exist, the target must not, and unknown fields are refused (422, as the
  middleware's validation does); success answers `true`, like the real API,
  and creates the dataset.
- Every POST/PUT/DELETE counts as a write, answered or not.

`GET /_standin/counts` (no auth: it is the test's window, not TrueNAS's)
answers `{"writes": N, "clones": N, "datasets": [...]}`.

Lifetime rules of tests/peers: 127.0.0.1 only, `--port 0` picks a port and
the first stdout line is `{"port": N}`, `--max-lifetime` seconds (default
600), exits when a piped stdin reaches EOF.
"""

import argparse
import json
import os
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/api/v2.0"


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.writes = 0
        self.clones = 0
        self.datasets = ["tank", "tank/vms", "tank/vms/golden"]
        self.snapshots = ["tank/vms/golden@base"]

    def dataset(self, name):
        return {
            "id": name,
            "name": name,
            "pool": name.split("/")[0],
            "type": "FILESYSTEM",
            "used": {"parsed": 1024, "value": "1K"},
            "available": {"parsed": 1 << 40, "value": "1T"},
            "origin": {"value": ""},
        }


STATE = State()


def snapshot(name):
    dataset, snap = name.split("@", 1)
    return {
        "id": name,
        "name": name,
        "dataset": dataset,
        "snapshot_name": snap,
        "pool": dataset.split("/")[0],
        "type": "SNAPSHOT",
        "properties": {"creation": {"parsed": {"$date": 1700000000000}}},
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "truenas-standin/1"
    protocol_version = "HTTP/1.1"
    api_key = ""

    def log_message(self, fmt, *args):
        sys.stderr.write("truenas-api: " + (fmt % args) + "\n")

    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return ValueError

    def authorized(self):
        if self.headers.get("Authorization") == f"Bearer {self.api_key}":
            return True
        self.answer(401, {"message": "Not authenticated"})
        return False

    def path_only(self):
        return self.path.split("?", 1)[0]

    def do_GET(self):
        path = self.path_only()
        if path == "/_standin/counts":
            with STATE.lock:
                return self.answer(
                    200,
                    {"writes": STATE.writes, "clones": STATE.clones, "datasets": list(STATE.datasets)},
                )
        if not self.authorized():
            return None
        if not path.startswith(PREFIX):
            return self.answer(404, {"message": "Not found"})
        path = path[len(PREFIX):]
        with STATE.lock:
            if path == "/system/info":
                return self.answer(200, {
                    "version": "TrueNAS-SCALE-24.10.2.2",
                    "hostname": "truenas-standin",
                    "uptime_seconds": 1.0,
                    "physmem": 17179869184,
                    "cores": 2,
                })
            if path == "/zfs/snapshot":
                return self.answer(200, [snapshot(s) for s in STATE.snapshots])
            if path == "/pool":
                return self.answer(200, [{"id": 1, "name": "tank", "status": "ONLINE", "healthy": True}])
            if path == "/pool/dataset":
                return self.answer(200, [STATE.dataset(d) for d in STATE.datasets])
            if path == "/vm":
                return self.answer(200, [{"id": 1, "name": "golden", "status": {"state": "STOPPED"}}])
            if path == "/app":
                return self.answer(200, [])
        return self.answer(404, {"message": f"Not found: {path}"})

    def write(self):
        with STATE.lock:
            STATE.writes += 1
        if not self.authorized():
            return None
        path = self.path_only()[len(PREFIX):]
        body = self.body()
        if body is ValueError:
            return self.answer(400, {"message": "Invalid JSON"})
        if self.command == "POST" and path == "/zfs/snapshot/clone":
            return self.clone(body)
        return self.answer(404, {"message": f"Not found: {path}"})

    def clone(self, body):
        if not isinstance(body, dict):
            return self.answer(422, {"zfs.snapshot.clone": [["snapshot", "Field required", 22]]})
        unknown = sorted(set(body) - {"snapshot", "dataset_dst", "dataset_properties"})
        if unknown:
            return self.answer(422, {
                "zfs.snapshot.clone": [[f"zfs_snapshot_clone.{k}", "Extra inputs are not permitted", 22] for k in unknown]
            })
        snap, dst = body.get("snapshot"), body.get("dataset_dst")
        if not isinstance(snap, str) or not isinstance(dst, str):
            return self.answer(422, {"zfs.snapshot.clone": [["snapshot", "Field required", 22]]})
        with STATE.lock:
            if snap not in STATE.snapshots:
                return self.answer(422, {"message": f"[ENOENT] Snapshot {snap} does not exist"})
            if dst in STATE.datasets:
                return self.answer(422, {"message": f"[EEXIST] dataset {dst} already exists"})
            STATE.datasets.append(dst)
            STATE.clones += 1
        return self.answer(200, True)

    do_POST = write
    do_PUT = write
    do_DELETE = write


def watch_stdin():
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--max-lifetime", type=float, default=600)
    p.add_argument("--ignore-stdin", action="store_true")
    args = p.parse_args()
    Handler.api_key = args.api_key
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    threading.Timer(args.max_lifetime, lambda: os._exit(0)).start()
    if not args.ignore_stdin:
        threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
