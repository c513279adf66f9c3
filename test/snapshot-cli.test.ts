// The snapshot commands spawned as an operator would: snapshot under a 200 MB/s writer (and of an image
// with disks), restore (by the addon and by the TypeScript twin), inspect and clone; broken chains, files
// that are no snapshot (or no longer whole), and an --out that names a file of the chain being read,
// refused with one line on stderr, a failed JSON object, and every file left as it was.
import { randomFillSync } from 'node:crypto';
import {
  closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Snapshotter, writeMixedImage } from '../dist/src/index.js';
import { lastJson, sha256File, spawnCli } from './helpers.js';
import {
  Guest, MiB, brokenChains, firstDifferentPage, restoredState, sha256, shmDir, smallChain, tempFilesIn, thrown,
} from './snapshot-helpers.js';

const tmp = shmDir();
afterAll(() => tmp.cleanup());
let cases = 0;
const PREVIOUS = Buffer.from('what --out held before\n');

function caseDir(): string {
  const dir = join(tmp.dir, `case-${++cases}`);
  mkdirSync(dir);
  return dir;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, unknown>;
}

/** Runs the CLI to its exit (the test's timeout bounds it); `json` is its last stdout line, if any. */
async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const run = spawnCli(args, env);
  const code = await run.exit;
  const stdout = run.stdout();
  let json: Record<string, unknown> = {};
  try { json = lastJson(stdout); } catch { /* no JSON: left empty */ }
  return { code, stdout, stderr: run.stderr(), json };
}

/**
 * A failure as the CLI reports one: a non-zero exit, one line on stderr ending with the error code, and
 * (with --json) a failed object last on stdout. `errorCode` pins the code where the failure is a snapshot's.
 */
function expectFailure(run: Run, errorCode: string | undefined, what: string, mentions: string[] = []): void {
  expect(run.code, `${what}: ${run.stderr}`).not.toBe(0);
  expect(run.code, `${what}: ${run.stderr}`).not.toBe(null);
  const lines = run.stderr.trim().split('\n');
  expect(lines.length, `${what}: ${run.stderr}`).toBe(1);
  expect(lines[0], what).toMatch(new RegExp(`^pagewire: .+ \\(${errorCode ?? 'PW_ERR_[A-Z_]+'}\\)$`));
  for (const mention of mentions) expect(lines[0], what).toContain(mention);
  expect(run.json, what).toMatchObject({ status: 'failed', errorCode: errorCode ?? expect.stringMatching(/^PW_ERR_/) });
}

/** An existing --out file, whose bytes a failed restore must leave as they were. */
function existingOut(dir: string, name = 'out.img'): string {
  const out = join(dir, name);
  writeFileSync(out, PREVIOUS);
  return out;
}

describe('pagewire snapshot / restore / inspect / clone', () => {
  it('snapshots an image under a 200 MB/s writer; the restore holds the sha256 and the write counter read inside the pause', async () => {
    const dir = caseDir();
    const image = join(dir, 'guest.img');
    writeMixedImage(image, { size: 16 * MiB, seed: 1 });
    const full = join(dir, 'full.snap');
    const inc = join(dir, 'inc.snap');

    const taken = await cli(['snapshot', '--image', image, '--out', full, '--workload', 'rate=200MB/s,seed=1', '--json']);
    expect(taken.code, taken.stderr).toBe(0);
    const s = taken.json;
    expect(s).toMatchObject({ status: 'completed', parentId: null, pageSize: 4096, pagesTotal: 4096, codec: 'addon' });
    expect(s.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(s.workloadWrites as number).toBeGreaterThan(0);
    expect(s.counter as number).toBeGreaterThan(0);

    // Another process, another writer (its counter carries on from the image): the changes are found by hashes.
    const next = await cli(['snapshot', '--image', image, '--out', inc, '--base', full, '--workload', 'rate=200MB/s,seed=2', '--json']);
    expect(next.code, next.stderr).toBe(0);
    const i = next.json;
    expect(i).toMatchObject({ status: 'completed', parentId: s.id, changesFoundBy: 'hashes' });
    expect(i.counter as number).toBeGreaterThan(s.counter as number);
    expect(i.fileBytes as number).toBeLessThan(s.fileBytes as number);

    const restores = await Promise.all([
      cli(['restore', full, '--out', join(dir, 'full.img'), '--json', '--sha256']),
      cli(['restore', inc, '--out', join(dir, 'inc.img'), '--json', '--sha256']),
      cli(['restore', inc, '--out', join(dir, 'inc-twin.img'), '--json', '--sha256'], { PAGEWIRE_NO_NATIVE: '1' }),
      cli(['inspect', inc, '--json']),
    ]);
    for (const [name, run, taken] of [['full.img', restores[0], s], ['inc.img', restores[1], i], ['inc-twin.img', restores[2], i]] as const) {
      expect(run.code, `${name}: ${run.stderr}`).toBe(0);
      const bytes = readFileSync(join(dir, name));
      expect(sha256(bytes), name).toBe(taken.sha256);
      expect(run.json.sha256, name).toBe(taken.sha256);
      // The counter the writer keeps in the image's first 8 bytes, as the pause hook read it.
      expect(bytes.readBigUInt64LE(0), name).toBe(BigInt(taken.counter as number));
    }
    expect(restores[1]!.json).toMatchObject({ status: 'completed', id: i.id, chain: 2 });

    const inspected = restores[3]!;
    expect(inspected.code, inspected.stderr).toBe(0);
    expect(inspected.json).toMatchObject({ status: 'verified', id: i.id });
    expect((inspected.json.chain as Array<{ id: string }>).map((layer) => layer.id)).toEqual([i.id, s.id]);
    expect(tempFilesIn(dir)).toEqual([]);
  });

  it('snapshots an image and its disks; restore gives each back to its own --out and --disk-out, and wants one file per region', async () => {
    const dir = caseDir();
    const image = join(dir, 'guest.img');
    writeMixedImage(image, { size: 4 * MiB, seed: 3 });
    const truths = [readFileSync(image)];
    // A sparse disk (a few data pages in holes) and a small one full of data.
    const disks = [join(dir, 'disk-0.img'), join(dir, 'disk-1.img')];
    const sparse = Buffer.alloc(8 * MiB);
    for (let page = 5; page < 2048; page += 97) randomFillSync(sparse, page * 4096, 4096);
    writeFileSync(disks[0]!, Buffer.alloc(0));
    truncateSync(disks[0]!, sparse.length);
    const fd = openSync(disks[0]!, 'r+');
    for (let page = 5; page < 2048; page += 97) writeSync(fd, sparse, page * 4096, 4096, page * 4096);
    closeSync(fd);
    truths.push(sparse, randomFillSync(Buffer.alloc(2 * MiB)));
    writeFileSync(disks[1]!, truths[2]!);
    const snap = join(dir, 'guest.snap');
    const taken = await cli(['snapshot', '--image', image, '--disk', disks[0]!, '--disk', disks[1]!, '--out', snap, '--json']);
    expect(taken.code, taken.stderr).toBe(0);
    expect(taken.json).toMatchObject({ status: 'completed', pagesTotal: 1024 + 2048 + 512 });
    expect(taken.json.sha256).toBe(sha256(truths[0]!));
    const outs = ['out.img', 'disk-0.out', 'disk-1.out'].map((name) => join(dir, name));
    const [restored, short] = await Promise.all([
      cli(['restore', snap, '--out', outs[0]!, '--disk-out', outs[1]!, '--disk-out', outs[2]!, '--json', '--sha256']),
      cli(['restore', snap, '--out', join(dir, 'alone.img'), '--json']),
    ]);
    expect(restored.code, restored.stderr).toBe(0);
    for (const [i, out] of outs.entries()) {
      expect(sha256File(out), out).toBe(sha256(truths[i]!));
      expect((restored.json.regions as Array<{ sha256: string }>)[i]!.sha256, out).toBe(sha256(truths[i]!));
    }
    expectFailure(short, undefined, 'restore of three regions into one file', ['3 regions']);
    expect(existsSync(join(dir, 'alone.img'))).toBe(false);
    expect(tempFilesIn(dir)).toEqual([]);
    // The sparse disk's restore stays sparse: its runs of 96 zero pages (at least 64, in one window) are
    // holes, so it allocates about its 22 data pages.
    expect(statSync(outs[1]!).blocks * 512, 'bytes allocated by the restored sparse disk').toBeLessThan(MiB);
  });

  it('clones an incremental snapshot into another directory; the clone restores to the state at its pause', async () => {
    const dir = caseDir();
    const elsewhere = caseDir();
    const { child: inc, childTruth } = await smallChain(dir, 21, { bytes: 4 * MiB, changes: 100 });
    const clone = join(elsewhere, 'inc-clone.snap');
    const cloned = await cli(['clone', inc, '--out', clone, '--json']);
    expect(cloned.code, cloned.stderr).toBe(0);
    expect(cloned.json).toMatchObject({ status: 'completed', path: clone });
    expect(['reflink', 'sparse-copy']).toContain(cloned.json.method);
    if (cloned.json.method === 'sparse-copy') {
      expect(statSync(clone).blocks).toBeLessThanOrEqual(statSync(inc).blocks);
      expect(cloned.json.fileBytes as number).toBeLessThanOrEqual(statSync(inc).blocks * 512);
    }
    const restored = await cli(['restore', clone, '--out', join(elsewhere, 'inc.img'), '--json']);
    expect(restored.code, restored.stderr).toBe(0);
    expect(sha256File(join(elsewhere, 'inc.img'))).toBe(sha256(childTruth));
    expect([...tempFilesIn(dir), ...tempFilesIn(elsewhere)]).toEqual([]);
  });

  it('refuses to restore (or inspect) an incremental snapshot whose parent is missing, another snapshot, or changed', async () => {
    const root = caseDir();
    const chains = await brokenChains(root, 30);
    const altered = chains.find((c) => c.name === 'parent altered')!;
    const [inspected, ...runs] = await Promise.all([
      cli(['inspect', altered.child, '--json']),
      ...chains.map((c) => cli(['restore', c.child, '--out', existingOut(c.dir), '--json'])),
    ]);
    for (const [k, c] of chains.entries()) {
      expectFailure(runs[k]!, 'PW_ERR_SNAPSHOT_CHAIN', `restore, ${c.name}`, [c.parent]);
      expect(runs[k]!.stderr, c.name).toMatch(c.reason);
      expect(readFileSync(join(c.dir, 'out.img')).equals(PREVIOUS), c.name).toBe(true);
      expect(tempFilesIn(c.dir), c.name).toEqual([]);
    }
    expectFailure(inspected!, 'PW_ERR_SNAPSHOT_CHAIN', 'inspect, parent altered', [altered.parent]);
  });

  it('fails with one line, a failed JSON object and --out untouched on a file that is no snapshot, a truncated one, or none', async () => {
    const dir = caseDir();
    const guest = new Guest(MiB, 22);
    const good = join(dir, 'good.snap');
    await new Snapshotter({ region: guest.region, hooks: guest.hooks() }).take(good);
    const notSnapshot = join(dir, 'random.bin');
    writeFileSync(notSnapshot, randomFillSync(Buffer.alloc(256 * 1024)));
    const size = statSync(good).size;
    const truncated = [Math.floor(size / 2), size - 1].map((length) => {
      const path = join(dir, `cut-${length}.snap`);
      copyFileSync(good, path);
      truncateSync(path, length);
      return path;
    });
    const missing = join(dir, 'missing.snap');
    const cases = [
      ['restore of a file that is no snapshot', ['restore', notSnapshot, '--out', existingOut(dir, 'out-1.img'), '--json'], 'PW_ERR_SNAPSHOT_CORRUPT'],
      ['restore of a snapshot cut in half', ['restore', truncated[0]!, '--out', existingOut(dir, 'out-2.img'), '--json'], 'PW_ERR_SNAPSHOT_CORRUPT'],
      ['restore of a snapshot short of its last byte', ['restore', truncated[1]!, '--out', existingOut(dir, 'out-3.img'), '--json'], 'PW_ERR_SNAPSHOT_CORRUPT'],
      ['inspect of a missing file', ['inspect', missing, '--json'], undefined],
    ] as const;
    const runs = await Promise.all([...cases.map(([, args]) => cli([...args])), cli(['inspect', missing])]);
    for (const [k, [what, args, code]] of cases.entries()) expectFailure(runs[k]!, code, what, [args[1]]);
    // Without --json, the one line on stderr and nothing on stdout.
    const plain = runs[cases.length]!;
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toMatch(/^pagewire: .*missing\.snap.* \(PW_ERR_[A-Z_]+\)\n$/);
    expect(plain.stdout).toBe('');
    for (const n of [1, 2, 3]) expect(readFileSync(join(dir, `out-${n}.img`)).equals(PREVIOUS), `out-${n}.img`).toBe(true);
    expect(tempFilesIn(dir)).toEqual([]);
  });

  it('refuses --out naming a file of the chain the command reads (snapshot --base, clone, restore), leaving the chain whole', async () => {
    const attempts: Array<[string, (c: { image: string; parent: string; child: string }) => string[]]> = [
      ['snapshot --out inc.snap --base inc.snap', (c) => ['snapshot', '--image', c.image, '--out', c.child, '--base', c.child, '--json']],
      ['snapshot --out base.snap --base inc.snap', (c) => ['snapshot', '--image', c.image, '--out', c.parent, '--base', c.child, '--json']],
      ['clone inc.snap --out base.snap', (c) => ['clone', c.child, '--out', c.parent, '--json']],
      ['restore inc.snap --out base.snap', (c) => ['restore', c.child, '--out', c.parent, '--json']],
    ];
    const chains = await Promise.all(attempts.map(async (_, k) => {
      const dir = caseDir();
      const c = await smallChain(dir, 60 + k);
      // The image the snapshot command maps: the guest's bytes since its last pause.
      const image = join(dir, 'guest.img');
      c.guest.scribble(10);
      writeFileSync(image, c.guest.memory);
      return { ...c, dir, image, before: [sha256File(c.parent), sha256File(c.child)] };
    }));
    const runs = await Promise.all(attempts.map(([, args], k) => cli(args(chains[k]!))));
    const problems: string[] = [];
    for (const [k, [what]] of attempts.entries()) {
      const c = chains[k]!;
      const run = runs[k]!;
      if (run.code === 0) problems.push(`${what} exited 0: ${run.stdout.trim()}`);
      else if (run.stderr.trim().split('\n').length !== 1 || run.json.status !== 'failed') {
        problems.push(`${what} failed without one line and a failed JSON: ${run.stderr}`);
      }
      if (sha256File(c.parent) !== c.before[0] || sha256File(c.child) !== c.before[1]) {
        problems.push(`${what} changed the chain's files (exit ${run.code}: ${run.stderr.trim()})`);
      }
      const restored = await thrown(async () => {
        if (firstDifferentPage((await restoredState(c.child, c.dir))[0]!, c.childTruth) !== -1) throw new Error('restored to other bytes');
      });
      if (restored !== undefined) problems.push(`${what}: inc.snap no longer restores: ${(restored as Error).message}`);
      if (tempFilesIn(c.dir).length > 0) problems.push(`${what} left ${tempFilesIn(c.dir).join(', ')}`);
    }
    expect(problems).toEqual([]);
  });
});
