# tollgate — `make demo` shows it working, `make test` proves it.
SHELL := bash
CARGO ?= cargo

.PHONY: all build demo test test-deps lint fmt clippy fuzz generate bench bench-data-path bench-policy bench-controller cluster-up cluster-down image clean

all: build

build:
	$(CARGO) build --locked --bin tollgate

## demo: kubernetes-mcp-server behind tollgate with examples/vm-clone-cap.yaml, driven by a scripted agent
demo: build
	scripts/demo.sh

## test: formatting, lints, unit and integration tests (installs the Node test peers first)
test: test-deps lint
	$(CARGO) test --locked

## fuzz: the property tests of the parsers and policy loading (crates/*/tests/properties.rs)
## with many more cases than `make test` runs (a few hundred); FUZZ_CASES per property.
FUZZ_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked --release \
	    -p tollgate-mcp -p tollgate-policy --test properties

test-deps:
	scripts/test-deps.sh
	scripts/cluster/build.sh >/dev/null

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

## generate: the CRD from the Rust types (a test fails when crds/ is stale)
generate:
	$(CARGO) run --locked --quiet --bin tollgate -- crdgen --out crds
	scripts/render-manifests.sh

## bench: data path vs direct/nginx/Intercept, policy engine, controller push (not part of `make test`).
## Results: target/bench/*.jsonl and *.md; summarised in docs/benchmarks.md.
BENCH_ROUNDS ?= 2
bench: bench-policy bench-controller bench-data-path

bench-data-path:
	scripts/bench/setup.sh
	scripts/bench/run.sh --rounds $(BENCH_ROUNDS)

bench-policy:
	$(CARGO) bench --locked --bench policy_engine

bench-controller:
	scripts/cluster/build.sh >/dev/null
	scripts/bench/controller.sh

## cluster-up / cluster-down: a real one-node Kubernetes (control plane, containerd,
## kubelet, kube-proxy, CoreDNS; images built here), as root, one per machine;
## target/cluster/kubeconfig. Tests' own loopback control planes: scripts/cluster/up.sh.
cluster-up:
	scripts/node/up.sh

cluster-down:
	scripts/node/down.sh

## image: the node's images (pause, CoreDNS, test images) as tarballs in the cache;
## with TOLLGATE_BIN=path/to/static/tollgate also localhost/tollgate:dev from the
## Dockerfile (its build stage replaced by that binary). Load them into the
## running node with scripts/image/import.sh.
TOLLGATE_BIN ?=
image:
	scripts/node/images.sh
	@if [ -n "$(TOLLGATE_BIN)" ]; then \
	    d=$$(mktemp -d) && cp "$(TOLLGATE_BIN)" "$$d/tollgate" && \
	    scripts/image/build.sh -t localhost/tollgate:dev -f Dockerfile --build-context build="$$d" "$$d"; \
	    rc=$$?; rm -rf "$$d"; exit $$rc; \
	fi

clean:
	$(CARGO) clean
