# One image for all three services; compose.yaml picks the binary per service:
#   docker build -t coachwire .
#   docker run --rm coachwire coachwire-persister --help
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binaries are
# copied out in the same step because a cache mount isn't part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --workspace --locked \
 && mkdir -p /out \
 && cp target/release/coachwire-ingest target/release/coachwire-persister target/release/coachwire-fanout /out/

FROM debian:bookworm-slim
# ca-certificates: TLS to Postgres, NATS and the OTLP collector.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home coachwire
COPY --from=builder /out/ /usr/local/bin/
USER coachwire
# The services default to 127.0.0.1, unreachable from outside a container:
# compose.yaml sets COACHWIRE_LISTEN / COACHWIRE_ADMIN_LISTEN to 0.0.0.0.
CMD ["coachwire-ingest"]
