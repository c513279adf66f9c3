// Writes test/vectors/codec.json: inputs, and the bytes both implementations must produce for them.
// Run by hand after a deliberate format change (`npm run build && node test/vectors/generate.mjs`),
// then read the diff. The expected bytes come from the addon; the script refuses to write them unless
// the TypeScript twin produces the same, and it checks QEMU's documented XBZRLE example by hand.
import { writeFileSync } from 'node:fs';
import { loadAddon } from '../../dist/src/native/binding.js';
import { twin } from '../../dist/src/native/twin/index.js';

const addon = loadAddon();
const hex = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
let seed = 20261123;
const rnd = (n) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
const randomPage = (size) => Uint8Array.from({ length: size }, () => rnd(256));
const textPage = (size, tag) => Uint8Array.from(Buffer.alloc(size, `{"key":"${tag}","value":${tag.length * 7},"tags":["a","b"]}\n`));

function same(what, a, b) {
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${what}: addon and twin differ:\n${JSON.stringify(a)}\n${JSON.stringify(b)}`);
  return a;
}

// XXH64 of whole inputs.
const xxh64 = ['', 'abc', Buffer.alloc(512).toString('hex'), hex(randomPage(37)), hex(randomPage(4096))].map((input) => {
  const bytes = input === 'abc' ? Buffer.from('abc') : Buffer.from(input, 'hex');
  const hash = same('xxh64', addon.xxh64(bytes).toString(16).padStart(16, '0'), twin.xxh64(bytes).toString(16).padStart(16, '0'));
  return { input: hex(bytes), hash };
});

// XBZRLE pairs; limit pageSize / 4 (the encoder's threshold).
function xbzrleCase(name, pageSize, old, next) {
  const limit = pageSize / 4;
  const run = (engine) => {
    const out = new Uint8Array(limit);
    const lengths = new Int32Array(1);
    engine.xbzrleEncodePages(old, next, pageSize, limit, out, lengths);
    return lengths[0] < 0 ? null : hex(out.subarray(0, lengths[0]));
  };
  return { name, pageSize, old: hex(old), new: hex(next), limit, encoded: same(`xbzrle ${name}`, run(addon), run(twin)) };
}
const qemuOld = new Uint8Array(4096);
const qemuNew = new Uint8Array(4096);
qemuOld.set(Buffer.from('05060708090a0b0c0d0e0f101112136800006b006d', 'hex'), 1001);
qemuNew.set(Buffer.from('0102030405060708090a0b0c0d0e0f680000670069', 'hex'), 1001);
const edited = (base, edits) => { const copy = Uint8Array.from(base); for (const [at, value] of edits) copy[at] = value; return copy; };
const base = randomPage(512);
const xbzrle = [
  xbzrleCase('qemu docs/xbzrle.txt example', 4096, qemuOld, qemuNew),
  xbzrleCase('identical pages', 512, base, Uint8Array.from(base)),
  xbzrleCase('first byte changed', 512, base, edited(base, [[0, base[0] ^ 1]])),
  xbzrleCase('last byte changed', 512, base, edited(base, [[511, base[511] ^ 1]])),
  xbzrleCase('one-byte gaps between changes', 512, base, edited(base, [[10, base[10] ^ 1], [12, base[12] ^ 1], [14, base[14] ^ 1]])),
  xbzrleCase('a zero run needing two ULEB128 bytes', 512, base, edited(base, [[300, base[300] ^ 0xff]])),
  xbzrleCase('64 changed bytes', 512, base, edited(base, Array.from({ length: 64 }, (_, i) => [200 + i, base[200 + i] ^ 0x5a]))),
  xbzrleCase('every other byte changed: over the limit', 512, base, edited(base, Array.from({ length: 256 }, (_, i) => [2 * i, base[2 * i] ^ 1]))),
];
const qemu = xbzrle[0];
if (qemu.encoded !== 'e9070f0102030405060708090a0b0c0d0e0f030167010169') throw new Error(`QEMU example encodes as ${qemu.encoded}`);

// LZ4 blocks of single pages (the lz4 package's compressBlock); null: no match found.
function lz4Case(name, page) {
  const run = (engine) => {
    const out = new Uint8Array(page.length);
    const lengths = new Int32Array(1);
    engine.lz4CompressPages(page, page.length, out, page.length, lengths);
    return lengths[0] === 0 ? null : hex(out.subarray(0, lengths[0]));
  };
  return { name, page: hex(page), compressed: same(`lz4 ${name}`, run(addon), run(twin)) };
}
const sparse = new Uint8Array(4096);
sparse.set(randomPage(40), 1000);
const lz4 = [
  lz4Case('text 512', textPage(512, 'x')),
  lz4Case('text 4096', textPage(4096, 'record')),
  lz4Case('mostly zero 4096', sparse),
  lz4Case('repeating 16-byte pattern 4096', Uint8Array.from({ length: 4096 }, (_, i) => (i % 16) * 17)),
  lz4Case('random 4096: no match', randomPage(4096)),
];

// Batches: a sequence of encode calls on one encoder with a small cache (8 slots), so eviction,
// DELTA, DUP, LZ4, ZERO and RAW all occur. Each step gives the region as it is, the call, and the result.
const PAGE = 512;
const PAGES = 24;
const CACHE = 8 * PAGE;
const region = new Uint8Array(PAGES * PAGE);
const put = (p, bytes) => region.set(bytes, p * PAGE);
for (let p = 0; p < PAGES; p++) {
  const kind = p % 4;
  if (kind === 1) put(p, textPage(PAGE, `page${p}`));
  else if (kind === 2) put(p, randomPage(PAGE));
  else if (kind === 3) put(p, region.subarray(2 * PAGE, 3 * PAGE).slice()); // duplicates of page 2
}
// Diverse bytes that LZ4 could still shrink: the encoder's sampling test sends it RAW, untried.
const pattern = randomPage(255);
put(21, Uint8Array.from({ length: PAGE }, (_, i) => pattern[i % 255]));
const steps = [];
const encoders = { addon: new addon.PageEncoder(PAGE, PAGES, CACHE), twin: new twin.PageEncoder(PAGE, PAGES, CACHE) };
const sent = { addon: new BigUint64Array(PAGES), twin: new BigUint64Array(PAGES) };
function step(indices, skipZero, bulk = false, lz4 = true) {
  const run = (name, engine) => {
    const out = new Uint8Array(indices.length * (PAGE + 20));
    encoders[name].bulk = bulk;
    encoders[name].lz4 = lz4;
    const result = encoders[name].encodeSync(new DataView(region.buffer), Uint32Array.from(indices), skipZero, out, sent[name]);
    return { records: hex(out.subarray(0, result[0])), result, sentDigest: engine.xxh64(new Uint8Array(sent[name].buffer)).toString(16) };
  };
  const expected = same(`batch step ${steps.length + 1}`, run('addon', addon), run('twin', twin));
  steps.push({ region: hex(region), indices, skipZero, bulk, lz4, ...expected });
}
const all = Array.from({ length: PAGES }, (_, i) => i);
step(all, true, true); // round 1: fills the 8 slots, evicts nothing
for (const p of [1, 2, 5, 6]) for (let i = 0; i < 64; i++) region[p * PAGE + 100 + i] ^= 0x33; // small edits
put(4, new Uint8Array(PAGE)); // a page becomes zero
put(8, region.subarray(5 * PAGE, 6 * PAGE).slice()); // a copy of a page just edited
step([1, 2, 4, 5, 6, 8, 22, 23], false);
for (let p = 0; p < PAGES; p += 3) region[p * PAGE + rnd(PAGE)] ^= 0x80;
step(all.slice().reverse(), false);
step(all, false); // nothing changed since: every page is a DELTA of zero bytes or a ZERO
for (const p of [1, 9, 13]) put(p, textPage(PAGE, `rewritten${p}`));
step([1, 9, 13], false, false, false); // LZ4 off: rewritten text pages go RAW

// Batches applied as stream `stream` of `streams` (docs/PROTOCOL.md section 2): a record of another
// stream's page, or a DUP of one, refuses the whole batch before any record of it is applied. Records
// are written by hand with true hashes, so that without the ownership pass the records before the bad
// one would be applied. 4 stripes of 256 pages of 64 bytes: with 3 streams, stripe k is stream k mod 3.
const OWN_PAGE = 64;
const OWN_PAGES = 4 * 256;
const ownRegion = Uint8Array.from({ length: OWN_PAGES * OWN_PAGE }, () => rnd(256));
const record = (page, encoding, payload, hashOf) => {
  const header = new DataView(new ArrayBuffer(20));
  header.setUint32(0, page, true);
  header.setUint8(4, encoding);
  header.setUint32(8, payload.length, true);
  header.setBigUint64(12, addon.xxh64(hashOf), true);
  return Buffer.concat([new Uint8Array(header.buffer), payload]);
};
const ownPage = (p) => ownRegion.subarray(p * OWN_PAGE, (p + 1) * OWN_PAGE);
const raw = (p) => record(p, 1, ownPage(p), ownPage(p));
const dup = (p, from) => record(p, 3, Buffer.from(Uint32Array.of(from).buffer), ownPage(from));
function ownershipCase(name, stream, streams, parts, recordCount = parts.length) {
  const records = Buffer.concat(parts);
  const run = (engine) => {
    const target = Uint8Array.from(ownRegion);
    for (let p = 0; p < OWN_PAGES; p++) target.fill(0, p * OWN_PAGE, p * OWN_PAGE + 8); // every page differs from the source
    const before = Uint8Array.from(target);
    const held = new BigUint64Array(OWN_PAGES);
    const result = engine.applyPagesSync(target, OWN_PAGE, OWN_PAGES, Uint8Array.from(records), recordCount, held, stream, streams);
    const written = [];
    for (let p = 0; p < OWN_PAGES; p++) {
      if (Buffer.compare(target.subarray(p * OWN_PAGE, (p + 1) * OWN_PAGE), before.subarray(p * OWN_PAGE, (p + 1) * OWN_PAGE)) !== 0) written.push(p);
    }
    return { result, written };
  };
  return { name, stream, streams, records: hex(records), recordCount, ...same(`ownership ${name}`, run(addon), run(twin)) };
}
const ownership = {
  pageSize: OWN_PAGE, pageCount: OWN_PAGES, region: hex(ownRegion),
  cases: [
    ownershipCase('its own pages apply', 1, 3, [raw(256), raw(257), dup(258, 256), raw(500)]),
    ownershipCase('a page of another stream after two of its own', 0, 3, [raw(0), raw(1), raw(300)]),
    ownershipCase('a DUP of another stream\'s page after one of its own', 1, 3, [raw(256), dup(257, 600)]),
    ownershipCase('a page of another stream outside the region', 0, 3, [raw(0), record(5000, 0, new Uint8Array(0), new Uint8Array(OWN_PAGE))]),
    ownershipCase('an index out of range of its own stripes', 0, 3, [raw(0), record(4700, 0, new Uint8Array(0), new Uint8Array(OWN_PAGE))]),
    ownershipCase('a DUP of a short payload is judged by the decoder', 0, 3, [raw(0), record(1, 3, Buffer.from([0, 1]), ownPage(1))]),
    ownershipCase('no record past a cut header is judged', 0, 3, [raw(0), Buffer.from(raw(300).subarray(0, 19))], 2),
    ownershipCase('a single stream owns every page', 0, 1, [raw(0), raw(300), dup(700, 300)]),
  ],
};

writeFileSync(new URL('./codec.json', import.meta.url), `${JSON.stringify({
  note: 'Generated by test/vectors/generate.mjs; see docs/PROTOCOL.md section 4 for the formats.',
  xxh64, xbzrle, lz4, batches: { pageSize: PAGE, pageCount: PAGES, cacheBytes: CACHE, steps }, ownership,
}, null, 1)}\n`);
console.log(`wrote ${steps.length} batch steps, ${xbzrle.length} XBZRLE, ${lz4.length} LZ4, ${xxh64.length} XXH64, ` +
  `${ownership.cases.length} stream ownership vectors`);
