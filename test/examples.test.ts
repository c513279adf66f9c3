// Every program in examples/ runs as a reader would run it (`node examples/NAME.mjs`, importing
// 'pagewire' by the package's own name) and must exit 0 with its one result line.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, spawnCommand } from './helpers.js';

const EXAMPLES = join(ROOT, 'examples');

/** The result line each example prints; an example without one here fails the suite. */
const RESULT_LINES: Record<string, RegExp> = {
  'worker-threads.mjs': /^worker-threads: 16 MiB moved while 2 writers made [1-9]\d* writes, \d+ rounds, downtime [\d.]+ ms, target identical$/,
  'wasm-memory.mjs': /^wasm-memory: 1024 KiB of linear memory moved live after [1-9]\d* stores, \d+ rounds, target identical, instance continued there$/,
  'custom-target-image.mjs':
    /^custom-target-image: refused an oversized source \(PW_ERR_CAPACITY\), then committed 4 MiB by swapping buffers after \d+ rounds; target identical$/,
  'unix-socket.mjs':
    /^unix-socket: 2 migrations \(4 and 8 MiB, 2 streams each, keyed\) served one after another over a socket in the temp directory, targets identical$/,
};

const programs = readdirSync(EXAMPLES).filter((name) => name.endsWith('.mjs')).sort();

describe('examples/', () => {
  it('has a result line to check for every program', () => {
    expect(programs).toEqual(Object.keys(RESULT_LINES).sort());
  });

  it.each(programs)('%s runs to its result line and exits 0', async (name) => {
    const run = spawnCommand(process.execPath, [join(EXAMPLES, name)]);
    const code = await run.exit;
    expect(code, run.stderr()).toBe(0);
    expect(run.stdout().trim().split('\n')).toEqual([expect.stringMatching(RESULT_LINES[name]!)]);
  });
});
