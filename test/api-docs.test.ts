// The API reference builds from the TSDoc without a warning (typedoc.json treats warnings as errors), so
// an export whose signature names an unexported type, or a broken {@link}, fails the suite.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, spawnCommand, tempDir } from './helpers.js';

describe('npm run docs', () => {
  it('builds the API reference from src/index.ts without warnings', async () => {
    const { dir, cleanup } = tempDir('pagewire-api-docs-');
    try {
      // Into a temp directory, so the test never overwrites a docs/api the reader built.
      const typedoc = spawnCommand(process.execPath, [join(ROOT, 'node_modules', 'typedoc', 'bin', 'typedoc'),
        '--options', join(ROOT, 'typedoc.json'), '--tsconfig', join(ROOT, 'tsconfig.json'), '--out', dir]);
      const code = await typedoc.exit;
      const output = typedoc.stdout() + typedoc.stderr();
      expect(output).not.toMatch(/\[warning\]|\[error\]/);
      expect(code, output).toBe(0);
    } finally {
      cleanup();
    }
  });
});
