# syntax=docker/dockerfile:1
# docker build -t meshgate:0.1.0 .   (the image deploy/kustomization.yaml and `meshgate kube-inject` name)
# One image for the gateways (`meshgate run ...`), the sidecar (`meshgate run --mode sidecar ...`) and its
# init step (`meshgate iptables --apply`, run as root with NET_ADMIN and NET_RAW). test/unit/deploy/
# dockerfile.test.ts checks this file against the repository.
#
# Build stage: install exactly the locked dependencies and compile TypeScript.
FROM node:20-bookworm-slim AS build
WORKDIR /app
# A C toolchain for the SO_ORIGINAL_DST addon that `npm ci` builds (native/origdst, scripts/build-native.js).
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY native ./native
RUN npm ci
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev && mkdir -p native/origdst/build/Release

# Runtime stage: the compiled gateway, production dependencies, non-root uid 1337 (Istio's proxy uid).
FROM node:20-bookworm-slim AS runtime
# A 2 MiB young generation (V8's default grows to 16 MiB per semi-space): about 30 MiB less peak RSS
# under load at the same throughput (docs/benchmarks.md).
ENV NODE_ENV=production NODE_OPTIONS=--max-semi-space-size=2
WORKDIR /app
# iptables for `meshgate iptables --apply` (the sidecar's init step, run with NET_ADMIN); curl because
# Istio's proxy image has it and runbooks use it (`kubectl exec POD -c istio-proxy -- curl localhost:15000/stats`).
RUN apt-get update && apt-get install -y --no-install-recommends iptables curl ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
# The addon (sidecar capture); the directory exists even if it did not build, which only sidecar mode needs.
COPY --from=build /app/native/origdst/build/Release ./native/origdst/build/Release
COPY package.json ./
COPY bin ./bin
COPY config ./config
# meshgate, and `pilot-agent` (request, wait: src/pilot-agent.ts) so Istio runbooks and hooks keep working.
RUN ln -s /app/bin/meshgate /usr/local/bin/meshgate \
 && ln -s /app/bin/pilot-agent /usr/local/bin/pilot-agent \
 && groupadd --gid 1337 istio-proxy && useradd --uid 1337 --gid 1337 --no-create-home istio-proxy
USER 1337:1337
# Gateway listeners (Service targetPorts), sidecar capture outbound and inbound, status, metrics (the agent port
# 15020, which Prometheus annotations name, is not declared by the manifests either, as in Istio).
# (The admin port 15000 listens on loopback only.)
EXPOSE 8080 8443 31400 15001 15006 15021 15090
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
  CMD node -e "require('http').get('http://127.0.0.1:15021/healthz/ready',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"
ENTRYPOINT ["meshgate"]
CMD ["run", "--config", "/app/config"]
