# Multi-stage build: compile in the Rust image, run in a small non-root Debian image.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY docs ./docs
RUN cargo build --release --locked && strip target/release/tollgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tollgate --create-home tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
USER 10001:10001
ENV RUST_LOG=info
VOLUME ["/var/lib/tollgate"]
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["run", "--config", "/etc/tollgate/tollgate.yaml", "--log-format", "json"]
