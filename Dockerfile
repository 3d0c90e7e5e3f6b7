# syntax=docker/dockerfile:1
#
# One image for every ringvisor runtime (dom0, domu, hwsim, switch, chaos, health); the
# compose service's `command` picks the runtime:  docker run --rm ringvisor:local help
#
# Stage 1 installs every dependency (TypeScript included) and builds dist/ with its .built
# stamps; stage 2 keeps only what running needs: production node_modules, dist/, and the
# sources that the source maps point at.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build --------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Manifests first so the `npm ci` layer is reused until a dependency changes.
COPY package.json package-lock.json ./
COPY packages/shared/package.json packages/shared/
COPY packages/hwsim/package.json packages/hwsim/
COPY packages/dom0/package.json packages/dom0/
COPY packages/domU/package.json packages/domU/
RUN npm ci --no-audit --no-fund
COPY tsconfig.base.json ./
COPY bin/ bin/
COPY packages/ packages/
# ensure-built runs `tsc -b` and then writes packages/*/dist/.built, the stamps the CLI compares
# with the sources' mtimes on every start. Then drop devDependencies (typescript, vitest, tsx…).
RUN node bin/ensure-built.mjs \
 && test -f packages/shared/dist/.built -a -f packages/hwsim/dist/.built \
         -a -f packages/dom0/dist/.built -a -f packages/domU/dist/.built \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime ------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ringvisor" \
      org.opencontainers.image.description="Hypervisor I/O emulator: one image for dom0, guests (domu), hwsim, the LAN switch and chaos; the command selects the runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.documentation="docs/deploy.md"
ENV NODE_ENV=production \
    NODE_OPTIONS=--enable-source-maps
WORKDIR /app
# Application files stay owned by root: the runtime user can read them but not change them.
COPY --from=build /app/package.json /app/package-lock.json /app/tsconfig.base.json ./
COPY --from=build /app/bin/ bin/
# node_modules holds the workspace symlinks (node_modules/@ringvisor/* -> packages/*); COPY keeps them.
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/packages/shared/package.json /app/packages/shared/tsconfig.json packages/shared/
COPY --from=build /app/packages/shared/src/ packages/shared/src/
COPY --from=build /app/packages/shared/dist/ packages/shared/dist/
COPY --from=build /app/packages/hwsim/package.json /app/packages/hwsim/tsconfig.json packages/hwsim/
COPY --from=build /app/packages/hwsim/src/ packages/hwsim/src/
COPY --from=build /app/packages/hwsim/dist/ packages/hwsim/dist/
COPY --from=build /app/packages/dom0/package.json /app/packages/dom0/tsconfig.json packages/dom0/
COPY --from=build /app/packages/dom0/src/ packages/dom0/src/
COPY --from=build /app/packages/dom0/dist/ packages/dom0/dist/
# The dashboard's page (index.html, app.js, style.css): each dom0's control endpoint serves it.
COPY --from=build /app/packages/dom0/dashboard/ packages/dom0/dashboard/
COPY --from=build /app/packages/domU/package.json /app/packages/domU/tsconfig.json packages/domU/
COPY --from=build /app/packages/domU/src/ packages/domU/src/
COPY --from=build /app/packages/domU/dist/ packages/domU/dist/
# Example configs (straight from the build context: editing one does not rebuild dist/).
COPY examples/ examples/
COPY LICENSE ./
# bin/ringvisor.mjs calls ensureBuilt() on every start: it rebuilds only when a file under
# packages/*/src or a packages/*/tsconfig.json is newer than packages/*/dist/.built. Re-stamp
# after every COPY above so that is never true in this image (whatever mtimes COPY kept), then
# prove it: typescript is gone, so `help` fails here, at build time, if ensure-built would
# try to rebuild at run time.
# /app/.ringvisor is where the disk images live (compose mounts a volume there); it is created
# owned by `node` so a fresh named volume starts out writable by the runtime user.
RUN touch packages/shared/dist/.built packages/hwsim/dist/.built packages/dom0/dist/.built packages/domU/dist/.built \
 && node bin/ringvisor.mjs help > /dev/null \
 && mkdir -p /app/.ringvisor \
 && chown node:node /app/.ringvisor
USER node
# Ports: 7000 dom0 (guests, hwsim, health, CLI), 7100 the LAN switch. Listeners default to
# 127.0.0.1; containers pass --listen 0.0.0.0:PORT explicitly.
EXPOSE 7000 7100
# Each compose service defines its own healthcheck (dom0 and switch answer `ringvisor health`;
# guests and hwsim are clients with nothing to probe).
HEALTHCHECK NONE
ENTRYPOINT ["node", "bin/ringvisor.mjs"]
CMD ["help"]
