# syntax=docker/dockerfile:1
#
# The `cchc` binary in a small Debian image. Used by docker-compose.yml;
# alone: docker build -t cchc-pipeline . && docker run --rm cchc-pipeline --help
# Needs BuildKit (the default builder of Docker 23+ and of `docker compose`)
# for the cache mounts below.

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS build

# rdkafka builds librdkafka from source (./configure && make, python3 for its
# linker script), with OpenSSL built from source too (its `ssl-vendored`
# feature, for SASL and TLS; perl and make) and linked statically, and links
# the system zlib (its default `libz` feature): no cmake. sqlx's SQLite is
# bundled.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential perl pkg-config python3 zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole context (less .dockerignore): the crate embeds files from outside
# src/ at compile time (migrations/, docs/openapi.json) and its manifest names
# bench targets, so a hand-picked subset breaks as soon as the layout moves.
COPY . .

# Cargo's registry and target/ live in cache mounts, so a rebuild after a
# source change recompiles only this crate, not its ~300 dependencies. The
# target/ mount is not part of the image: the binary is copied out of it, with
# its DWARF (the release profile keeps line tables for profiling) stripped.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin cchc \
    && objcopy --strip-debug target/release/cchc /usr/local/bin/cchc

# ---- run --------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates for webhook receivers and Kafka brokers whose certificates
# a public CA signed; curl for the health check in docker-compose.yml. The
# binary itself needs only libc, libgcc and zlib (OpenSSL is linked in),
# which the base image has.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cchc \
    && useradd --system --uid 10001 --gid cchc --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin cchc

WORKDIR /app
COPY --from=build /usr/local/bin/cchc /usr/local/bin/cchc
COPY config/ /app/config/
# var/ is where `cchc demo` writes its SQLite file; the service itself keeps
# no state in the container.
RUN install -d -o cchc -g cchc /app/var

USER cchc:cchc
EXPOSE 8080
ENTRYPOINT ["cchc"]
CMD ["run", "--config", "config/compose.toml"]
