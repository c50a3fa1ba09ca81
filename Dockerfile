# syntax=docker/dockerfile:1
#
# One image for both roles: `tollgate controller` (the Deployment) and
# `tollgate proxy` (the injected sidecar). A static musl binary on an empty
# base: nothing to patch but tollgate itself, and small enough that injecting
# the sidecar does not slow pod start-up.
#
#   docker build -t <your-registry>/tollgate:0.1.0 .
#
# Alpine's Rust targets musl natively (x86_64 or aarch64, whichever the build
# runs on), and a musl binary is static by default. musl rather than a static
# glibc: musl's resolver needs no NSS modules at run time, and the sidecar
# looks up the controller's Service name.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# ring (rustls' crypto) compiles C and assembly: it needs a C toolchain and
# musl's headers.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# The release profile keeps line tables for local debugging; the image drops
# them and the symbol table (138 MiB -> 28 MiB at 006227d; a panic still reports its
# file and line). Cache mounts keep the crate downloads and the build between
# builds; the binary is copied out because the target dir is not part of the
# layer.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
# The commit for `tollgate_build_info` (the context has no .git):
# --build-arg TOLLGATE_COMMIT=$(git rev-parse --short=12 HEAD)
ARG TOLLGATE_COMMIT=unknown
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tollgate \
 && cp target/release/tollgate /tollgate \
 && /tollgate --version

FROM scratch
COPY --from=build /tollgate /tollgate
# The chart's securityContext runs as 65532 too; the image says so itself so
# it also runs as non-root without one.
USER 65532:65532
ENTRYPOINT ["/tollgate"]
