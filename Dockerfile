# syntax=docker/dockerfile:1
# tollgate container image (SPEC §9): build in the Rust image, run in a small non-root Debian image.
#
#   docker build -t tollgate .
#   docker run --rm -v /etc/tollgate:/etc/tollgate:ro -p 9464:9464 tollgate
#
# The config must set `listen: 0.0.0.0:9464` (the default 127.0.0.1:9464 is unreachable from outside
# the container, so probes and scrapes would fail). See docs/operations.md.
#
# Base images are pinned by tag; the toolchain is the one CI tests with. For reproducible builds pin
# the digests too (FROM rust:1.95.0-bookworm@sha256:…) and let Renovate or Dependabot bump them.
# Build and runtime are both Debian 12 (bookworm), so the glibc and OpenSSL the binary was linked
# against are the ones it runs with.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# libgit2 (https transport) and libssh2 link OpenSSL; zlib comes with the base image.
# Package versions are not pinned (hadolint DL3008): Debian 12's point and security updates are
# what we want, and pinned versions disappear from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
# Every target Cargo.toml declares must exist for the manifest to parse ([[bench]] included), even
# though only the binary is built.
COPY src ./src
COPY benches ./benches
# The registry and target caches survive between builds (BuildKit); the binary is copied out of the
# cached target folder in the same step, because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/tollgate /out/tollgate \
    && strip /out/tollgate

FROM debian:12.11-slim
# ca-certificates: HTTPS to git hosts and registries. libssl3: the binary's only non-base library
# (libc, libgcc_s, libm and zlib are in the base image). openssh-client: `ssh-keygen -Y sign` for
# `repositories.*.signing: {ssh_key_file: …}`. For OpenPGP commit signing build with
# --build-arg EXTRA_PACKAGES=gnupg.
ARG EXTRA_PACKAGES=""
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 openssh-client ${EXTRA_PACKAGES} \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tollgate --create-home \
       --shell /usr/sbin/nologin tollgate
COPY --from=build /out/tollgate /usr/local/bin/tollgate
# Numeric, so that Kubernetes' runAsNonRoot can check it without resolving a name.
USER 10001:10001
WORKDIR /var/lib/tollgate
ENV RUST_LOG=info \
    HOME=/var/lib/tollgate \
    TOLLGATE_CONFIG=/etc/tollgate/tollgate.yaml
# state_dir: git mirrors and caches only. Nothing here is the only copy of anything (git is the
# state): an anonymous volume or a Kubernetes emptyDir is enough.
VOLUME ["/var/lib/tollgate"]
EXPOSE 9464
STOPSIGNAL SIGTERM
# `docker run IMAGE validate` and `docker run IMAGE check --env prod IMAGE_REF` work too: every
# command takes its --config from TOLLGATE_CONFIG.
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["run", "--log-format", "json"]
