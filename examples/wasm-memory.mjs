// A WebAssembly instance's memory moved live. The instance keeps running (a burst of writes on every
// turn of the event loop) while its exported memory migrates over 127.0.0.1 into a fresh
// WebAssembly.Memory; no dirty bitmap: the source finds written pages by hashing them each round. Once
// migrated, a second instance of the same module runs on the target memory and carries on where the
// first one stopped.
//
//   node examples/wasm-memory.mjs
import { MemoryRegion, MigrationSource, MigrationTarget } from 'pagewire';
import { memoryTargetImage } from './lib/memory-target-image.mjs';

/** 16 WebAssembly pages of 64 KiB: 1 MiB, a whole number of pagewire's 4 KiB pages. */
const MEMORY_PAGES = 16;

const module = new WebAssembly.Module(scribblerModule());
const sourceMemory = new WebAssembly.Memory({ initial: MEMORY_PAGES });
const source = new WebAssembly.Instance(module, { env: { memory: sourceMemory } });

// The workload: 2000 stores a turn while it runs. pause() stops it at a turn boundary, as a VM's vCPUs
// stop between instructions; nothing else writes the memory.
let running = true;
const scribble = () => {
  if (!running) return;
  source.exports.run(2000);
  setImmediate(scribble);
};
scribble();

const targetMemory = new WebAssembly.Memory({ initial: MEMORY_PAGES });
const target = await MigrationTarget.listen({
  host: '127.0.0.1', port: 0, image: memoryTargetImage(MemoryRegion.fromMemory(targetMemory)),
});
const migration = new MigrationSource({
  // Its exported memory, read through its current buffer: a grow() during the migration fails it with
  // PW_ERR_REGION_CHANGED (and the instance goes on here) rather than move a truncated memory.
  region: MemoryRegion.fromMemory(source.exports.memory),
  host: '127.0.0.1', port: target.address.port,
  hooks: { pause: () => { running = false; }, resume: () => { running = true; scribble(); } },
});
let summary;
try {
  [summary] = await Promise.all([migration.run(), target.result]);
} finally {
  // After a failure before the hand-over, resume() restarted the workload; this example ends either way.
  running = false;
}

const same = Buffer.from(sourceMemory.buffer).equals(Buffer.from(targetMemory.buffer));
if (!same) throw new Error('the target memory differs from the paused instance\'s');
// The instance's state is its memory: a new instance over the migrated memory continues its sequence.
const stores = () => new Uint32Array(targetMemory.buffer, 0, 1)[0];
const before = stores();
new WebAssembly.Instance(module, { env: { memory: targetMemory } }).exports.run(1);
if (stores() !== before + 1) throw new Error(`the migrated instance did not continue: ${before} then ${stores()}`);
console.log(`wasm-memory: ${MEMORY_PAGES * 64} KiB of linear memory moved live after ${before} stores, ` +
  `${summary.rounds} rounds, target identical, instance continued there`);

/**
 * A module built byte by byte (no WebAssembly text compiler needed). It imports its memory as env.memory
 * and exports it again as `memory`, and exports run(count):
 *
 *   seed = mem32[0]
 *   repeat count times: seed += 1; mem32[4 + ((seed * 0x9E3779B1) & 0xFFFF8)] = seed
 *   mem32[0] = seed
 *
 * so every store lands on a pseudo-random word of the 1 MiB, and mem32[0] counts the stores.
 */
function scribblerModule() {
  const I32 = 0x7f;
  const op = {
    end: 0x0b, loop: 0x03, brIf: 0x0d, localGet: 0x20, localSet: 0x21, localTee: 0x22,
    i32Load: 0x28, i32Store: 0x36, i32Const: 0x41, i32Add: 0x6a, i32Sub: 0x6b, i32Mul: 0x6c, i32And: 0x71,
  };
  const [count, seed] = [0, 1]; // local indices: the parameter, then the one declared local
  const body = [
    1, 1, I32, // one declared local of type i32: seed
    op.i32Const, ...sleb(0), op.i32Load, 2, 0, op.localSet, seed,
    op.loop, 0x40,
    op.i32Const, ...sleb(4),
    op.localGet, seed, op.i32Const, ...sleb(1), op.i32Add, op.localTee, seed,
    op.i32Const, ...sleb(0x9e3779b1 | 0), op.i32Mul, op.i32Const, ...sleb(0xffff8), op.i32And, op.i32Add,
    op.localGet, seed, op.i32Store, 2, 0,
    op.localGet, count, op.i32Const, ...sleb(1), op.i32Sub, op.localTee, count, op.brIf, 0,
    op.end,
    op.i32Const, ...sleb(0), op.localGet, seed, op.i32Store, 2, 0,
    op.end,
  ];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0, // "\0asm", version 1
    ...section(1, vector([[0x60, 1, I32, 0]])), // types: (i32) -> ()
    ...section(2, vector([[...name('env'), ...name('memory'), 0x02, 0x00, ...uleb(MEMORY_PAGES)]])), // import memory, min 16 pages
    ...section(3, vector([[0]])), // function 0 has type 0
    ...section(7, vector([[...name('memory'), 0x02, 0], [...name('run'), 0x00, 0]])), // exports
    ...section(10, vector([[...uleb(body.length), ...body]])), // code
  ]);
}

function section(id, bytes) { return [id, ...uleb(bytes.length), ...bytes]; }
function vector(items) { return [...uleb(items.length), ...items.flat()]; }
function name(text) { return vector([...Buffer.from(text)].map((byte) => [byte])); }
function uleb(value) {
  const out = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
  return out;
}
function sleb(value) {
  const out = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}
