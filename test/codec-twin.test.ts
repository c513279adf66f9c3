// The addon and its TypeScript twin against the shared vectors (test/vectors/codec.json), against each
// other on random workloads, and against hostile batches.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ApplyStatus, loadAddon, type NativeBinding } from '../dist/src/native/binding.js';
import { twin } from '../dist/src/native/twin/index.js';
import { randomWorkload } from './helpers.js';

interface Vectors {
  xxh64: { input: string; hash: string }[];
  xbzrle: { name: string; pageSize: number; old: string; new: string; limit: number; encoded: string | null }[];
  lz4: { name: string; page: string; compressed: string | null }[];
  batches: {
    pageSize: number; pageCount: number; cacheBytes: number;
    steps: { region: string; indices: number[]; skipZero: boolean; records: string; result: number[]; sentDigest: string }[];
  };
  ownership: {
    pageSize: number; pageCount: number; region: string;
    cases: { name: string; stream: number; streams: number; records: string; recordCount: number; result: number[]; written: number[] }[];
  };
}

const REGENERATE = 'if the format changed on purpose, regenerate with `npm run build && node test/vectors/generate.mjs`';
const vectors = JSON.parse(readFileSync(new URL('./vectors/codec.json', import.meta.url), 'utf8')) as Vectors;
const addon = loadAddon();
const implementations: [string, NativeBinding][] = [['addon', addon], ['twin', twin]];
const bytes = (hex: string) => new Uint8Array(Buffer.from(hex, 'hex'));
const hex = (data: Uint8Array) => Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex');

describe.each(implementations)('%s against the shared vectors', (_, engine) => {
  it('hashes as XXH64', () => {
    for (const v of vectors.xxh64) expect(engine.xxh64(bytes(v.input)).toString(16).padStart(16, '0')).toBe(v.hash);
  });

  it('encodes and decodes every XBZRLE vector, QEMU\'s documented example included', () => {
    expect(vectors.xbzrle[0]!.encoded).toBe('e9070f0102030405060708090a0b0c0d0e0f030167010169');
    for (const v of vectors.xbzrle) {
      const out = new Uint8Array(v.limit);
      const lengths = new Int32Array(1);
      engine.xbzrleEncodePages(bytes(v.old), bytes(v.new), v.pageSize, v.limit, out, lengths);
      expect(lengths[0]! < 0 ? null : hex(out.subarray(0, lengths[0])), `${v.name}; ${REGENERATE}`).toBe(v.encoded);
      if (v.encoded === null) continue;
      const page = bytes(v.old);
      expect(engine.xbzrleDecodePages(bytes(v.encoded), v.limit, Int32Array.of(v.encoded.length / 2), page, v.pageSize)).toBe(-1);
      expect(hex(page), v.name).toBe(v.new);
    }
  });

  it('compresses and decompresses every LZ4 vector', () => {
    for (const v of vectors.lz4) {
      const page = bytes(v.page);
      const out = new Uint8Array(page.length);
      const lengths = new Int32Array(1);
      engine.lz4CompressPages(page, page.length, out, page.length, lengths);
      expect(lengths[0] === 0 ? null : hex(out.subarray(0, lengths[0])), `${v.name}; ${REGENERATE}`).toBe(v.compressed);
      if (v.compressed === null) continue;
      const back = new Uint8Array(page.length);
      expect(engine.lz4DecompressPages(bytes(v.compressed), page.length, Int32Array.of(v.compressed.length / 2), back, page.length)).toBe(-1);
      expect(hex(back)).toBe(v.page);
    }
  });

  it('replays the batch vectors byte for byte, and each batch applies to the image it describes', () => {
    const { pageSize, pageCount, cacheBytes, steps } = vectors.batches;
    const encoder = new engine.PageEncoder(pageSize, pageCount, cacheBytes);
    const sent = new BigUint64Array(pageCount);
    const target = new Uint8Array(pageCount * pageSize);
    const held = new BigUint64Array(pageCount);
    for (const [n, step] of steps.entries()) {
      const region = bytes(step.region);
      const out = new Uint8Array(step.indices.length * (pageSize + 20));
      encoder.bulk = step.bulk;
      encoder.lz4 = step.lz4;
      const result = encoder.encodeSync(new DataView(region.buffer), Uint32Array.from(step.indices), step.skipZero, out, sent);
      expect(result, `step ${n + 1}; ${REGENERATE}`).toEqual(step.result);
      expect(hex(out.subarray(0, result[0])), `step ${n + 1}; ${REGENERATE}`).toBe(step.records);
      expect(engine.xxh64(new Uint8Array(sent.buffer)).toString(16)).toBe(step.sentDigest);
      const [status] = engine.applyPagesSync(target, pageSize, pageCount, bytes(step.records), result[1], held);
      expect(status).toBe(0);
      for (const page of step.indices) {
        expect(hex(target.subarray(page * pageSize, (page + 1) * pageSize))).toBe(hex(region.subarray(page * pageSize, (page + 1) * pageSize)));
      }
    }
  });
});

describe.each(implementations)('%s judging stream ownership', (_, engine) => {
  it('refuses a batch with a record of another stream\'s page (or a DUP of one) before applying any of it, as the vectors say', async () => {
    const { pageSize, pageCount, region, cases } = vectors.ownership;
    const statuses = new Set<number>();
    for (const v of cases) {
      for (const apply of [engine.applyPagesSync, engine.applyPages]) {
        const target = bytes(region);
        for (let p = 0; p < pageCount; p++) target.fill(0, p * pageSize, p * pageSize + 8);
        const before = Uint8Array.from(target);
        const held = new BigUint64Array(pageCount);
        const result = await apply(target, pageSize, pageCount, bytes(v.records), v.recordCount, held, v.stream, v.streams);
        expect(result, `${v.name}; ${REGENERATE}`).toEqual(v.result);
        const written = [];
        for (let p = 0; p < pageCount; p++) {
          if (hex(target.subarray(p * pageSize, (p + 1) * pageSize)) !== hex(before.subarray(p * pageSize, (p + 1) * pageSize))) written.push(p);
        }
        expect(written, v.name).toEqual(v.written);
        if (result[0] === ApplyStatus.WrongStream) expect(held.every((h) => h === 0n), v.name).toBe(true);
      }
      statuses.add(v.result[0]!);
    }
    expect(statuses.has(ApplyStatus.WrongStream) && statuses.has(ApplyStatus.Ok)).toBe(true);
  });
});

describe('addon and twin', () => {
  it('refuse the same stream arguments with the same errors', () => {
    const call = (engine: NativeBinding, stream: unknown, streams: unknown) => () =>
      engine.applyPagesSync(new Uint8Array(512), 512, 1, new Uint8Array(0), 0, new BigUint64Array(1), stream as number, streams as number);
    for (const [stream, streams, message] of [
      [0, 0, 'streams must be at least 1'], [3, 3, 'stream is too large (max 2)'], [1, undefined, 'stream is too large (max 0)'],
      [-1, 2, 'stream must be a non-negative safe integer'], [0, 2 ** 32 + 1, 'streams is too large (max 4294967296)'],
      ['0', 2, 'stream must be a number'], [0, null, 'streams must be a number'],
    ] as const) {
      for (const engine of [addon, twin]) expect(call(engine, stream, streams), `${engine.kind}: ${stream} of ${streams}`).toThrow(message);
    }
    for (const engine of [addon, twin]) expect(call(engine, 1, 2)()).toEqual([ApplyStatus.Ok, 0, 0]);
  });

  it('produce byte-identical batches on random workloads, and each decodes the other\'s', () => {
    for (const [pageSize, pageCount, cacheSlots, seed] of [[4096, 96, 32, 1], [512, 200, 50, 2], [4096, 64, 0, 3], [1024, 80, 200, 4]] as const) {
      const work = randomWorkload(seed, pageSize, pageCount);
      const encoders = [new addon.PageEncoder(pageSize, pageCount, cacheSlots * pageSize), new twin.PageEncoder(pageSize, pageCount, cacheSlots * pageSize)];
      const sent = [new BigUint64Array(pageCount), new BigUint64Array(pageCount)];
      // targets[0] receives the addon's batches decoded by the twin, targets[1] the twin's decoded by the addon.
      const targets = [new Uint8Array(pageSize * pageCount), new Uint8Array(pageSize * pageCount)];
      const held = [new BigUint64Array(pageCount), new BigUint64Array(pageCount)];
      const seen = new Set<string>();
      for (let p = 0; p < 4; p++) work.edit(p, 4); // some random pages, which only RAW can carry
      work.region.copyWithin(5 * pageSize, 0, pageSize); // and a copy of one, for DUP
      for (let round = 0; round < 12; round++) {
        for (let e = 0; e < 1 + work.rnd(40); e++) work.edit();
        const indices = round === 0 ? Uint32Array.from({ length: pageCount }, (_, i) => i) : work.someIndices();
        const outs = [0, 1].map(() => new Uint8Array(indices.length * (pageSize + 20)));
        const view = new DataView(work.region.buffer);
        // Round 0 is a first pass over the region, as the source's round 1.
        for (const encoder of encoders) encoder.bulk = round === 0;
        const results = [0, 1].map((i) => encoders[i]!.encodeSync(view, indices, false, outs[i]!, sent[i]!));
        expect(results[1], `seed ${seed} round ${round}`).toEqual(results[0]);
        expect(hex(outs[1]!.subarray(0, results[1]![0])), `seed ${seed} round ${round}`).toBe(hex(outs[0]!.subarray(0, results[0]![0])));
        ['zero', 'delta', 'dup', 'lz4', 'raw'].forEach((name, i) => { if (results[0]![2 + i]! > 0) seen.add(name); });
        for (const [i, decoder] of [twin, addon].entries()) {
          const [status] = decoder.applyPagesSync(targets[i]!, pageSize, pageCount, outs[i]!.subarray(0, results[i]![0]), results[i]![1], held[i]!);
          expect(status).toBe(0);
          for (const p of indices) {
            expect(hex(targets[i]!.subarray(p * pageSize, (p + 1) * pageSize))).toBe(hex(work.region.subarray(p * pageSize, (p + 1) * pageSize)));
          }
        }
      }
      // Every encoding occurred (DELTA and DUP only with a cache).
      expect([...seen].sort()).toEqual(cacheSlots > 0 ? ['delta', 'dup', 'lz4', 'raw', 'zero'] : ['lz4', 'raw', 'zero']);
    }
  });
});
