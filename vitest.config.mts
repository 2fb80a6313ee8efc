import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Temporal workers crash inside worker threads; forks are required (DESIGN.md §4).
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    // Integration files each start their own clusters and dev server; two cores, so run files one at a time.
    fileParallelism: false,
  },
});
