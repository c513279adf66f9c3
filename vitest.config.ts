import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // The machine has 2 cores; migrations spawn processes and worker threads of their own.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
