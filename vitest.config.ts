import { defineConfig } from 'vitest/config';

// Two projects: fast unit tests (no kernel, no root) run first; kernel tests
// (namespaces, nft, BPF) run after, one file at a time because they create
// network namespaces and load programs.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'kernel',
          include: ['test/kernel/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
