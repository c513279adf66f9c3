// An embedder's own target, built in a separate package that imports only 'pagewire' (the exports map
// allows nothing deeper): test/fixtures/embedder, type-checked with tsc and run as its own process.
import { cpSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, lastJson, spawnCommand, tempDir } from './helpers.js';

const tmp = tempDir('pagewire-embedder-');
afterAll(() => tmp.cleanup());

/** The fixture as a package of its own: its package.json and tsconfig, pagewire linked as npm link would. */
function embedderPackage(): string {
  const dir = join(tmp.dir, 'embedder');
  cpSync(join(ROOT, 'test', 'fixtures', 'embedder'), dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'embedder', private: true, type: 'module' }));
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'dist', skipLibCheck: true,
      types: ['node'], typeRoots: [join(ROOT, 'node_modules', '@types')],
    },
    include: ['*.ts'],
  }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(ROOT, join(dir, 'node_modules', 'pagewire'), 'dir');
  return dir;
}

/** Runs node with args; its stdout, or a throw with both outputs. */
async function node(args: string[]): Promise<string> {
  const child = spawnCommand(process.execPath, args);
  const code = await child.exit;
  if (code !== 0) throw new Error(`node ${args.join(' ')} exited ${code}:\n${child.stdout()}\n${child.stderr()}`);
  return child.stdout();
}

describe('a target written by an embedder against the public API', () => {
  it('type-checks against pagewire\'s root entry alone, and receives a live migration into a Map equal to the source at the pause point', async () => {
    const dir = embedderPackage();
    await node([join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir]);
    const result = lastJson(await node([join(dir, 'dist', 'migrate.js')]));
    expect(result).toMatchObject({
      deepImport: 'ERR_PACKAGE_PATH_NOT_EXPORTED', refusal: 'PW_ERR_PEER PW_ERR_CAPACITY', status: 'completed', targetStatus: 'completed',
      streams: 2, committed: true, equal: true,
    });
    expect(result.rounds).toBeGreaterThanOrEqual(3);
    for (const encoding of ['zeroPages', 'deltaPages', 'dupPages'] as const) expect(result[encoding], encoding).toBeGreaterThan(0);
  });
});
