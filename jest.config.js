/** Jest runs TypeScript through swc; @middy/* and hyparquet* are ESM-only, so they are transformed too (FACTS.md). */
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: '<rootDir>/test/support/node-realm-environment.cjs',
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  transform: {
    '^.+\\.(t|j|mj)s$': [
      '@swc/jest',
      { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } },
    ],
  },
  transformIgnorePatterns: [
    '/node_modules/(?!(@middy|hyparquet|hyparquet-writer|hyparquet-compressors|hysnappy|fzstd)/)',
  ],
  moduleFileExtensions: ['ts', 'js', 'mjs', 'cjs', 'json', 'node'],
  // Build outputs (the packaged service's copy, Node 22, the runtime client) are not modules of the tests.
  modulePathIgnorePatterns: ['<rootDir>/.build/'],
  testTimeout: 60_000,
  // Two cores: more workers only thrash the onnxruntime thread pools.
  maxWorkers: 2,
};
