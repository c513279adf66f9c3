import { defineConfig } from 'vitest/config';

// The package test (test-package/): packs this checkout and installs the tarball into scratch projects.
// Kept out of `npm test` because packing compiles the addon again (about a minute on 2 cores).
export default defineConfig({
  test: {
    include: ['test-package/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 300_000,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
