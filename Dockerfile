# syntax=docker/dockerfile:1
# Herald's image: the compiled server (dist/) run by plain node under tini, as the unprivileged
# `node` user, with production dependencies only. `docker build -t herald .`, then
# `docker run -p 8080:8080 -e DATABASE_URL=postgres://… herald`; docker-compose.yml runs it
# next to a PostgreSQL 17. test/dockerfile.test.ts runs these steps without Docker, so a
# change here that breaks the image breaks that test.

# ---- build: install everything, compile, then drop the development dependencies ----
FROM node:20-bookworm-slim AS build
WORKDIR /app
# The manifests first, so the dependency layer is reused until they change. No scripts yet:
# `prepare` would build, and the source is not here.
COPY package.json package-lock.json ./
COPY packages/client/package.json packages/client/
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
# `npm rebuild` runs the install scripts skipped above (the embedded PostgreSQL's library
# symlinks among them); the build writes packages/client/dist, dist/ and dist/web.
RUN npm rebuild && npm run build
# node_modules for the runtime stage: what `npm ci --omit=dev` would install, with the
# install scripts already run (a fresh `npm ci --ignore-scripts` there would leave the
# embedded PostgreSQL without its library symlinks).
RUN npm prune --omit=dev --no-audit --no-fund

# ---- runtime ----
FROM node:20-bookworm-slim AS runtime
# tini is PID 1: it passes SIGTERM/SIGINT to node (a PID 1 node would not get the default
# handling) and reaps orphans. Herald stops its embedded PostgreSQL itself.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
# HERALD_DATA_DIR: the embedded PostgreSQL (when DATABASE_URL is unset) and the file bucket
# live there; mount a volume on /data to keep them.
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 HERALD_DATA_DIR=/data
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/packages/client/package.json packages/client/
COPY --from=build /app/packages/client/dist packages/client/dist/
COPY --from=build /app/node_modules node_modules/
COPY --from=build /app/dist dist/
COPY --from=build /app/sql sql/
COPY --from=build /app/web/static web/static/
COPY --from=build /app/bin bin/
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 8080
# /readyz: the database answers and the listener is connected (docs/operations.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["tini", "--", "node", "dist/cli.js"]
CMD ["serve"]
