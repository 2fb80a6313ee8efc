# The pg-dts worker (and the dts CLI, REST API and codec endpoint) for docker-compose.yml or any
# container platform. Node 22 LTS; runs as the unprivileged `node` user; compiled JavaScript only
# (no TypeScript runtime, no dev dependencies in the final image).
FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
RUN npm ci --loglevel=warn --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY activities ./activities
COPY workflows ./workflows
COPY worker ./worker
COPY client ./client
COPY connection ./connection
RUN npm run build

FROM node:22-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
# Two malloc arenas instead of up to 8 per core for the worker's many threads (V8, libuv, Temporal's
# core): ~30 MB less RSS measured under load and on a 1 GiB transaction (BENCHMARKS.md).
ENV MALLOC_ARENA_MAX=2
ENV PG_DTS_HEALTH_FILE=/tmp/pg-dts-worker.alive
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --loglevel=warn --no-audit --no-fund
COPY --from=build /src/lib ./lib
COPY bin ./bin
# The workflow bundle built once here: a worker that bundled at start would hold ~100 MB more.
RUN node lib/worker/build-bundle.js
# `dts` on PATH in the container (`docker compose exec worker dts status <id>`); `npx dts` would look
# for the unrelated `dts` package in the registry.
RUN ln -s /app/bin/dts.js /usr/local/bin/dts && ln -s /app/bin/dts.js /usr/local/bin/pg-dts
USER node
# The worker touches PG_DTS_HEALTH_FILE every 10 s while it polls its task queue.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "const s = require('fs').statSync(process.env.PG_DTS_HEALTH_FILE); process.exit(Date.now() - s.mtimeMs < 60000 ? 0 : 1)"]
# node directly (no npm launcher process): about 100 MB less than `npm run worker`; the same young
# generation as it (worker/config.ts MAIN_SEMI_SPACE_MB).
CMD ["node", "--max-semi-space-size=32", "lib/worker/main.js"]
