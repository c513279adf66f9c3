// Downtime of a 64 MiB WebAssembly.Memory moved with hash tracking (no dirty bitmap: every page hashed
// and compared with the hash last sent, once more inside the pause), next to the same migration with
// a dirty bitmap. The target is a memory image in a worker thread; a few pages are written after each
// pre-copy round, so the final round has work. Prints one line per run and the medians, then JSON.
//   node dist/bench/hash-tracking.js [--runs 9] [--mib 64] [--dirty-pages 64]
import { randomFillSync } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import {
  DirtyBitmap, MemoryRegion, MigrationSource, codecKind, type DowntimeBreakdown, type WasmMemory,
} from '../src/index.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '9' }, mib: { type: 'string', default: '64' }, 'dirty-pages': { type: 'string', default: '64' } },
});
const runs = Number(values.runs);
const bytes = Number(values.mib) * 2 ** 20;
const dirtyPages = Number(values['dirty-pages']);
const WASM_PAGE = 65536;
// Node's WebAssembly global, which the project's lib settings do not type.
const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => WasmMemory } })
  .WebAssembly;

type Mode = 'hash' | 'bitmap';

interface Run { downtimeMs: number; finalSyncMs: number; expectedDowntimeMs: number; rounds: number; breakdown: DowntimeBreakdown }

async function startTarget(): Promise<{ port: number; done: Promise<void> }> {
  const worker = new Worker(new URL('./hash-tracking-target.js', import.meta.url), { workerData: { bytes } });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', (m: { port: number }) => resolve(m.port));
    worker.once('error', reject);
  });
  const done = new Promise<void>((resolve, reject) => {
    worker.once('message', (m: { ok: boolean; error?: string }) => (m.ok ? resolve() : reject(new Error(m.error))));
    worker.once('error', reject);
  }).finally(() => worker.terminate());
  return { port, done };
}

async function migrate(mode: Mode, seed: number): Promise<Run> {
  const memory = new Memory({ initial: bytes / WASM_PAGE, maximum: bytes / WASM_PAGE });
  const view = new Uint8Array(memory.buffer);
  randomFillSync(view);
  const region = MemoryRegion.fromMemory(memory);
  const bitmap = mode === 'bitmap' ? new DirtyBitmap(region.pageCount) : undefined;
  const { port, done } = await startTarget();
  const source = new MigrationSource({
    region, dirtyBitmap: bitmap, host: '127.0.0.1', port, hooks: { pause: () => {}, resume: () => {} },
  });
  // The guest keeps writing: the same pages in both modes, so only the tracking differs.
  let state = seed;
  source.on('round', () => {
    for (let i = 0; i < dirtyPages; i++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      const page = state % region.pageCount;
      view[page * region.pageSize] ^= 0xff;
      bitmap?.mark(page);
    }
  });
  const summary = await source.run();
  await done;
  return {
    downtimeMs: summary.downtimeMs, finalSyncMs: summary.downtime.finalSyncMs, expectedDowntimeMs: summary.expectedDowntimeMs,
    rounds: summary.rounds, breakdown: summary.downtime,
  };
}

function breakdown(parts: DowntimeBreakdown): string {
  return Object.entries(parts).map(([name, ms]) => `${name.replace(/Ms$/, '')} ${ms.toFixed(1)}`).join(', ');
}

const results: Record<Mode, Run[]> = { hash: [], bitmap: [] };
console.log(`${bytes / 2 ** 20} MiB WebAssembly.Memory, ${dirtyPages} pages written per round, codec ${codecKind()}, ${runs} runs each`);
for (let i = 0; i < runs; i++) {
  for (const mode of ['hash', 'bitmap'] as const) {
    const run = await migrate(mode, 1 + i);
    results[mode].push(run);
    console.log(`${mode.padEnd(6)} run ${i + 1}: downtime ${run.downtimeMs.toFixed(1)} ms (final sync ${run.finalSyncMs.toFixed(1)} ms, ` +
      `expected ${run.expectedDowntimeMs.toFixed(1)} ms, ${run.rounds} rounds; ${breakdown(run.breakdown)})`);
  }
}
const medians = Object.fromEntries((['hash', 'bitmap'] as const).map((mode) => [mode, {
  downtimeMs: median(results[mode].map((r) => r.downtimeMs)),
  finalSyncMs: median(results[mode].map((r) => r.finalSyncMs)),
  expectedDowntimeMs: median(results[mode].map((r) => r.expectedDowntimeMs)),
}]));
for (const [mode, m] of Object.entries(medians)) {
  console.log(`median ${mode.padEnd(6)}: downtime ${m.downtimeMs.toFixed(1)} ms, final sync ${m.finalSyncMs.toFixed(1)} ms, ` +
    `expected ${m.expectedDowntimeMs.toFixed(1)} ms`);
}
console.log(JSON.stringify({ bytes, dirtyPages, runs, codec: codecKind(), medians, results }));
