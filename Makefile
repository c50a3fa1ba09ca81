# tollgate — `make demo` shows it working, `make test` proves it.
SHELL := bash
CARGO ?= cargo

.PHONY: all build demo demo-standalone e2e test test-deps differential lint fmt clippy fuzz generate bench bench-data-path bench-wrk bench-policy bench-controller cluster-up cluster-down image clean

all: build

build:
	$(CARGO) build --locked --bin tollgate

## demo: the product's real job on a one-node Kubernetes built here: helm install, label,
## deploy kubernetes-mcp-server, kubectl apply the policy, an agent, kubectl get mtp,
## PromQL over the denials (the e2e test, narrated). The first run builds for minutes.
demo: test-deps
	$(CARGO) test --locked --test e2e_node -- --nocapture

## demo-standalone: no Kubernetes: `tollgate proxy --policy examples/vm-clone-cap.yaml`
## in front of kubernetes-mcp-server on a loopback kube-apiserver, driven by a scripted agent
demo-standalone: build
	scripts/demo-standalone.sh

## e2e: the one-node end-to-end test alone (part of `make test`)
e2e: test-deps
	$(CARGO) test --locked --test e2e_node

## test: formatting, lints, unit and integration tests (installs the Node test peers first)
test: test-deps lint
	$(CARGO) test --locked --no-fail-fast

## fuzz: the property tests of the parsers and policy loading (crates/*/tests/properties.rs)
## with many more cases than `make test` runs (a few hundred); FUZZ_CASES per property.
FUZZ_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked --release \
	    -p tollgate-mcp -p tollgate-policy --test properties

test-deps:
	scripts/test-deps.sh
	scripts/cluster/build.sh >/dev/null
	scripts/oracle.sh >/dev/null
	scripts/prometheus.sh >/dev/null

## differential: the readers' differential tests on a large corpus (several seeds;
## `make test` runs 3,000 cases of one)
DIFFERENTIAL_CASES ?= 100000
differential: test-deps
	for seed in 1 2 3; do \
		TOLLGATE_ORACLE_SEED=$$seed TOLLGATE_ORACLE_CASES=$(DIFFERENTIAL_CASES) \
			$(CARGO) test --locked --test reader_oracle || exit 1; \
	done

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

## generate: the CRD from the Rust types (a test fails when crds/ is stale)
generate:
	$(CARGO) run --locked --quiet --bin tollgate -- crdgen --out crds
	scripts/render-manifests.sh

## bench: data path vs direct/nginx/Intercept (own load generator, and wrk + Lua against a
## fixed-response nginx), policy engine, controller push (not part of `make test`).
## Results: target/bench/*.jsonl and *.md; summarised in docs/benchmarks.md.
BENCH_ROUNDS ?= 2
bench: bench-policy bench-controller bench-data-path bench-wrk

bench-data-path:
	scripts/bench/setup.sh
	scripts/bench/run.sh --rounds $(BENCH_ROUNDS)

# --managed: also tollgate following a controller on a test control plane
# (file mode and managed mode side by side; builds the control plane once).
bench-wrk:
	scripts/cluster/build.sh >/dev/null
	scripts/bench/wrk.sh --managed

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

## image: tollgate:dev (the Dockerfile, around a static release build) and
## kubernetes-mcp-server:0.0.67, loaded into the running node (make cluster-up);
## plus the node's own images (pause, CoreDNS, test images).
image: test-deps
	scripts/node/images.sh >/dev/null
	scripts/image/product.sh

clean:
	$(CARGO) clean
