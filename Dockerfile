# syntax=docker/dockerfile:1
#
# Breakwater image: a resilience sidecar for the Twilio and Vapi APIs.
#
#   docker build -t breakwater .
#   docker run --rm -p 127.0.0.1:8080:8080 -e INTEGRATIONS_STUB_MODE=true breakwater   # loopback: the proxy injects credentials
#
# Two stages: `build` has the dev dependencies (tsc) and compiles src/ into dist/; `runtime`
# installs the production dependencies from the lockfile and takes only the compiled output.
# See docs/deployment.md; `node scripts/lint-dockerfile.mjs` checks this file.

# ---------------------------------------------------------------------------------------------
FROM node:24-bookworm-slim AS build
WORKDIR /app

# Dependencies first, in their own layer, so a source-only change does not reinstall them.
# --ignore-scripts: `prepare` (the build) needs src/, which is not copied yet; it runs below.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---------------------------------------------------------------------------------------------
FROM node:24-bookworm-slim AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="breakwater" \
      org.opencontainers.image.description="Resilience sidecar for the Twilio and Vapi APIs: circuit breakers, rate limits, correlation IDs, safe retries, metrics." \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/node:24-bookworm-slim"

# ADMIN_HOST=0.0.0.0: the HEALTHCHECK, Prometheus and the kubelet must reach /healthz, /readyz
# and /metrics from outside the process. Publish only the proxy port; keep 9090 private.
ENV NODE_ENV=production \
    PROXY_HOST=0.0.0.0 \
    PROXY_PORT=8080 \
    ADMIN_HOST=0.0.0.0 \
    ADMIN_PORT=9090

WORKDIR /app

# Production dependencies only, exactly as locked. --ignore-scripts: `prepare` would run tsc,
# which is a dev dependency and absent here; dist/ comes from the build stage instead.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

# Files stay owned by root: the runtime user can read the code and policy but not change them.
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY config ./config
# The policy the container starts with; mount a file over it (or pass --config) to replace it.
COPY config/policy.yaml /etc/breakwater/policy.yaml

# The base image's `node` user, by number so Kubernetes `runAsNonRoot` can verify it.
USER 1000:1000

EXPOSE 8080 9090

# node itself, since the slim image has no curl. Reads ADMIN_PORT at run time (exec form does
# not expand variables, node does). /healthz means "the process lives"; readiness is /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.ADMIN_PORT || 9090) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]

# SIGTERM starts the drain: readiness goes 503, in-flight requests finish, the process exits 0
# within the policy's drainTimeout (25 s by default; give the container at least 30 s).
STOPSIGNAL SIGTERM

ENTRYPOINT ["node", "/app/bin/breakwater.js"]
CMD ["start", "--config", "/etc/breakwater/policy.yaml"]
