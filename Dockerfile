# The pg-dts worker (and the dts CLI) for docker-compose.yml or any container platform.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
# Two malloc arenas instead of up to 8 per core for the worker's many threads (V8, libuv, Temporal's
# core): ~30 MB less RSS measured under load and on a 1 GiB transaction (BENCHMARKS.md).
ENV MALLOC_ARENA_MAX=2
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY activities ./activities
COPY workflows ./workflows
COPY worker ./worker
COPY client ./client
COPY test/harness ./test/harness
COPY bin ./bin
COPY tsconfig.json ./
# The workflow bundle built once here: a worker that bundled at start would hold ~100 MB more.
RUN npm run build:bundle
USER node
# node directly (no npm, no tsx launcher process): about 100 MB less than `npm run worker`.
CMD ["node", "--require", "tsx/cjs", "worker/main.ts"]
