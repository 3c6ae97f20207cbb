# swift-fetch container image: the CLI, the node daemon and the init container in one image.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t swift-fetch .
#   docker run --rm swift-fetch pull hf://Qwen/Qwen2.5-0.5B-Instruct --store /data
#
# Every stage starts from the same Node image, so the native better-sqlite3 module compiled in
# the builder has exactly the ABI of the runtime's Node. BASE_IMAGE swaps that image where Docker
# Hub is out of reach: `.ci/build-base.sh` bootstraps an equivalent from the Debian archive and
# `.ci/build-image.sh` builds this file on it with podman (docs/kubernetes.md). Whatever the base,
# it must provide node, npm, the Node headers under node's prefix, apt-get and useradd, as the
# official Debian-based images do.
#
# The Node major follows package.json's engines (>=20.19): Node 20 on Debian trixie is what the
# local base gets from the distribution and what the image tests run.

ARG BASE_IMAGE=node:20.20.2-trixie-slim

# --- toolchain: Node plus what node-gyp needs to compile better-sqlite3 ---------------------
FROM ${BASE_IMAGE} AS toolchain
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Compile native modules here instead of downloading prebuilt binaries: the result is built for
# this exact Node and libc, and the build needs no host beyond the npm registry.
ENV npm_config_build_from_source=true \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false
COPY package.json package-lock.json ./

# --- build: all dependencies, TypeScript compiled to dist/ ----------------------------------
FROM toolchain AS build
# tsc needs the packages and their types, not their install scripts: skipping them saves
# compiling better-sqlite3 a second time (prod-deps compiles the copy the runtime gets).
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# --- prod-deps: production dependencies only (native modules compiled) ----------------------
FROM toolchain AS prod-deps
# The headers of the running Node sit under its prefix in the official images (/usr/local) and
# in the Debian-built base (/usr, libnode-dev); pointing node-gyp there keeps it from downloading
# them from nodejs.org.
RUN --mount=type=cache,target=/root/.npm \
    npm_config_nodedir="$(node -p 'require("path").resolve(process.execPath, "../..")')" \
    npm ci --omit=dev \
 # The runtime loads build/Release/better_sqlite3.node; the SQLite sources and the compiler's
 # intermediates (25 MB) stay behind.
 && rm -rf node_modules/better-sqlite3/deps node_modules/better-sqlite3/src \
      node_modules/better-sqlite3/build/deps node_modules/better-sqlite3/build/Release/obj.target \
      node_modules/better-sqlite3/build/Release/.deps node_modules/better-sqlite3/build/Release/test_extension.node

# --- runtime ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
# tini reaps zombies and forwards signals: Node as PID 1 would ignore SIGTERM and the daemon
# would lose its chance to checkpoint in-flight chunks before the kubelet's SIGKILL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID (not the image's `node` user, 1000) so hostPath directories can be
# chowned to it from the chart and runAsNonRoot can verify it without /etc/passwd.
# `swift-fetch` on PATH runs the package's bin shim under tini, so ENTRYPOINT ["swift-fetch"]
# gets a proper PID 1 and `kubectl exec ... swift-fetch ls` works the same way.
RUN groupadd --system --gid 10001 swift-fetch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/swift-fetch --no-create-home \
      --shell /usr/sbin/nologin swift-fetch \
 && mkdir -p /var/lib/swift-fetch/store /var/lib/swift-fetch/state /var/lib/swift-fetch/imports /etc/swift-fetch \
 && chown -R 10001:10001 /var/lib/swift-fetch \
 && printf '%s\n' '#!/bin/sh' \
      'exec /usr/bin/tini -s -- node /app/bin/swift-fetch.js "$@"' > /usr/local/bin/swift-fetch \
 && chmod 0755 /usr/local/bin/swift-fetch

WORKDIR /app
# The store and the resume state in the directories made for them above (a volume each), not
# under $HOME: `docker run -v store:/var/lib/swift-fetch/store IMAGE pull ...` just works.
ENV NODE_ENV=production \
    SWIFT_FETCH_STORE=/var/lib/swift-fetch/store \
    SWIFT_FETCH_STATE_DIR=/var/lib/swift-fetch/state
USER 10001:10001
EXPOSE 7070
ENTRYPOINT ["swift-fetch"]
CMD ["--help"]

# What changes least comes first: a commit that only touches src/ rebuilds dist/ and the layers
# from here on, nothing else.
COPY --from=prod-deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY --from=build /app/dist ./dist

ARG BASE_IMAGE
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="swift-fetch" \
      org.opencontainers.image.description="Resumable, verified, peer-to-peer model distribution for Hugging Face and ModelScope repos" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
