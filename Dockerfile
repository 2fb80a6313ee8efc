# The pg-dts worker (and the dts CLI) for docker-compose.yml or any container platform.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY activities ./activities
COPY workflows ./workflows
COPY worker ./worker
COPY client ./client
COPY test/harness ./test/harness
COPY bin ./bin
COPY tsconfig.json ./
USER node
CMD ["npm", "run", "worker"]
