// The file sink fuzzed against the memory sink: random rounds of every encoding, applied by each decoder
// (addon and twin) into a real file and into memory, must leave the same bytes and the same held hashes
// after every batch, and the source's bytes once every page has gone. The shapes cover what the file
// sink does differently: runs of consecutive RAW pages longer than IOV_MAX (1024) and than the twin's
// 1 MiB run, batches whose built pages (LZ4, DELTA, DUP) overflow the addon's 16 MiB arena, zero pages
// punched as holes over written ones, and pages in random order (runs broken at every step).
// Seed: PAGEWIRE_FUZZ_SEED (printed); rounds per shape scale with PAGEWIRE_FUZZ_RUNS / 400. Last, a file
// that takes a write short (a file size limit in a child process): what came before lands, then the
// sink's error rejects the batch.
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ApplyStatus, loadAddon, type NativeBinding } from '../../dist/src/native/binding.js';
import { twin } from '../../dist/src/native/twin/index.js';
import { ROOT, randomWorkload, tempDir } from '../helpers.js';

const SEED = Number(process.env.PAGEWIRE_FUZZ_SEED ?? 31337);
const SCALE = Number(process.env.PAGEWIRE_FUZZ_RUNS ?? 400) / 400;
const addon = loadAddon();
const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** EncodeResult slots. */
const [BYTES, RECORDS, , DELTA, DUP, LZ4, RAW] = [0, 1, 2, 3, 4, 5, 6];

interface Shape {
  name: string;
  pageSize: number;
  pageCount: number;
  rounds: number;
  /** What round 1 must hold for the shape to test what it names. */
  firstRound: (counts: number[]) => boolean;
  fill: (work: ReturnType<typeof randomWorkload>) => void;
}

const shapes: Shape[] = [
  {
    name: 'RAW runs past IOV_MAX and past the twin 1 MiB run', pageSize: 512, pageCount: 3000, rounds: 12,
    firstRound: (c) => c[RAW]! > 2048, fill: (work) => { randomFillSync(work.region); },
  },
  {
    name: 'built pages past the addon 16 MiB arena', pageSize: 2 ** 18, pageCount: 96, rounds: 6,
    // 64 pages of 256 KiB fill the arena.
    firstRound: (c) => c[LZ4]! + c[DUP]! + c[DELTA]! > 64,
    fill: (work) => { for (let p = 0; p < 96; p++) work.edit(p, 3); },
  },
  {
    name: 'mixed pages in any order', pageSize: 4096, pageCount: 700, rounds: 30,
    firstRound: (c) => c[RECORDS] === 700, fill: (work) => { for (let e = 0; e < 2000; e++) work.edit(); },
  },
];

async function fuzz(engine: NativeBinding, shape: Shape, seed: number): Promise<void> {
  const { pageSize, pageCount } = shape;
  const work = randomWorkload(seed, pageSize, pageCount);
  shape.fill(work);
  const encoder = new addon.PageEncoder(pageSize, pageCount, pageSize * pageCount);
  const sent = new BigUint64Array(pageCount);
  const out = new Uint8Array(pageCount * (pageSize + 20));
  const memory = new Uint8Array(pageSize * pageCount);
  const heldInMemory = new BigUint64Array(pageCount);
  const heldInFile = new BigUint64Array(pageCount);
  const path = join(tmp.dir, `${engine.kind}-${pageSize}-${seed}.img`);
  const fd = openSync(path, 'w+');
  try {
    ftruncateSync(fd, pageSize * pageCount);
    const rounds = Math.max(2, Math.round(shape.rounds * SCALE));
    for (let round = 0; round < rounds; round++) {
      const last = round === rounds - 1;
      if (round > 0) for (let e = work.rnd(pageCount); e > 0; e--) work.edit();
      // Round 1 and the last send every page in order, as the source does; the others a random set in
      // random order (the decoder takes any order; the file sink's runs break at every step).
      const indices = round === 0 || last ? Uint32Array.from({ length: pageCount }, (_, i) => i) : work.someIndices();
      const counts = encoder.encodeSync(new DataView(work.region.buffer), indices, false, out, sent);
      if (round === 0) expect(shape.firstRound(counts), `round 1 of '${shape.name}': ${counts}`).toBe(true);
      const records = out.subarray(0, counts[BYTES]);
      const context = `${engine.kind}, '${shape.name}', seed ${seed}, round ${round + 1}`;
      const inMemory = engine.applyPagesSync(memory, pageSize, pageCount, records, counts[RECORDS]!, heldInMemory);
      // The file sink both ways: on the pool, and on the calling thread.
      const inFile = round % 2 === 0
        ? await engine.applyPages(fd, pageSize, pageCount, records, counts[RECORDS]!, heldInFile)
        : engine.applyPagesSync(fd, pageSize, pageCount, records, counts[RECORDS]!, heldInFile);
      expect(inMemory, context).toEqual([ApplyStatus.Ok, 0, counts[RECORDS]]);
      expect(inFile, context).toEqual(inMemory);
      expect(heldInFile, context).toEqual(heldInMemory);
      expect(Buffer.compare(readFileSync(path), memory), context).toBe(0);
    }
    expect(Buffer.compare(memory, work.region), `${engine.kind}, '${shape.name}': the source's bytes at the end`).toBe(0);
  } finally {
    closeSync(fd);
  }
}

describe('the file sink against the memory sink', () => {
  for (const [kind, engine] of [['addon', addon], ['twin', twin]] as const) {
    it.each(shapes)(`${kind}: $name`, async (shape) => {
      console.log(`file sink fuzz (${kind}, ${shape.name}): PAGEWIRE_FUZZ_SEED=${SEED}`);
      await fuzz(engine, shape, SEED);
    }, 120_000);
  }
});

/** Applies a batch of records into a new file, in a child process whose files may grow to `limitKiB`. */
const APPLY_CHILD = `
const [kind, path, pageSize, pageCount, recordsPath, recordCount] = process.argv.slice(1);
const { readFileSync, openSync } = await import('node:fs');
const { loadAddon } = await import(process.env.ROOT + '/dist/src/native/binding.js');
const { twin } = await import(process.env.ROOT + '/dist/src/native/twin/index.js');
const engine = kind === 'addon' ? loadAddon() : twin;
const fd = openSync(path, 'w+');
try {
  const result = await engine.applyPages(fd, Number(pageSize), Number(pageCount), new Uint8Array(readFileSync(recordsPath)),
    Number(recordCount), new BigUint64Array(Number(pageCount)));
  console.log(JSON.stringify({ result }));
} catch (error) {
  console.log(JSON.stringify({ error: error.message }));
}
`;

describe('a file that takes writes short', () => {
  it.each(['addon', 'twin'] as const)('%s: the bytes before the limit land, then the write error rejects the batch', (kind) => {
    const pageSize = 4096;
    const pageCount = 32;
    const limitKiB = 42; // ten pages and a half: the run's write stops inside page 10
    const pages = randomFillSync(new Uint8Array(pageSize * pageCount));
    const out = new Uint8Array(pageCount * (pageSize + 20));
    const all = Uint32Array.from({ length: pageCount }, (_, i) => i);
    const [bytes, records, , , , , raw] = new addon.PageEncoder(pageSize, pageCount, 0)
      .encodeSync(pages, all, false, out, new BigUint64Array(pageCount));
    expect(raw).toBe(pageCount); // one run of RAW pages, written from the batch in one call
    const recordsPath = join(tmp.dir, `short-${kind}.records`);
    const path = join(tmp.dir, `short-${kind}.img`);
    writeFileSync(recordsPath, out.subarray(0, bytes));
    const child = spawnSync('bash', ['-c', `ulimit -f ${limitKiB}; exec "${process.execPath}" --input-type=module -e "$0" "$@"`,
      APPLY_CHILD, kind, path, String(pageSize), String(pageCount), recordsPath, String(records)],
    { encoding: 'utf8', env: { ...process.env, ROOT } });
    expect(child.status, child.stderr).toBe(0);
    const reported = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as { error?: string };
    expect(reported.error).toMatch(/writing pages failed: .*(File too large|EFBIG)/i);
    const written = readFileSync(path);
    expect(written.length).toBe(limitKiB * 1024);
    expect(Buffer.compare(written, pages.subarray(0, limitKiB * 1024))).toBe(0);
  });
});
