# One image for all three services; compose.yaml picks the binary per service:
#   docker build -t coachwire .
#   docker run --rm coachwire coachwire-persister --help
# and one for the AI coach bot (compose.yaml's `coach`): docker build --target coach .
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

# The client library (for the coach) and the web demo's page with it bundled in.
FROM node:20-bookworm-slim AS clients
WORKDIR /src/clients
COPY clients/js/package.json clients/js/package-lock.json js/
COPY clients/web/package.json clients/web/package-lock.json web/
# PUPPETEER_SKIP_DOWNLOAD: the page's browser tests are not run here.
RUN PUPPETEER_SKIP_DOWNLOAD=1 npm --prefix js ci && PUPPETEER_SKIP_DOWNLOAD=1 npm --prefix web ci
COPY clients/js js
COPY clients/web web
RUN npm --prefix js run build && npm --prefix web run build && npm --prefix js prune --omit=dev

# The coach bot as the demo's Coach (a fixed id of demo mode, role ai). It mints its own
# token with coachwire-ingest and COACHWIRE_JWT_SECRET, as scripts/run-stack.sh does.
FROM node:20-bookworm-slim AS coach
COPY --from=builder /out/coachwire-ingest /usr/local/bin/
COPY --from=clients /src/clients/js /opt/coachwire/clients/js
USER node
ENV COACH_USER=d3e0c0ac-0000-4000-8000-000000000004
CMD ["sh", "-c", "COACH_TOKEN=$(coachwire-ingest token --user \"$COACH_USER\" --role ai --ttl 24h) exec node /opt/coachwire/clients/js/examples/coach-bot/bot.mjs"]

FROM debian:bookworm-slim
# ca-certificates: TLS to Postgres, NATS and the OTLP collector.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home coachwire
COPY --from=builder /out/ /usr/local/bin/
# The web demo's page (served when COACHWIRE_DEMO=true).
COPY --from=clients /src/clients/web/public /usr/local/share/coachwire/demo
USER coachwire
# The services default to 127.0.0.1, unreachable from outside a container:
# compose.yaml sets COACHWIRE_LISTEN / COACHWIRE_ADMIN_LISTEN to 0.0.0.0.
CMD ["coachwire-ingest"]
