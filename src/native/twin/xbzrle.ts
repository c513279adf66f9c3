// XBZRLE (QEMU docs/xbzrle.txt), the DELTA payload: alternating runs of unchanged bytes (zrun: a
// ULEB128 length) and changed bytes (nzrun: a length, then the new bytes). The encoder emits the
// canonical form both implementations agree on: maximal runs, a first zrun of 0 when byte 0 changed,
// no trailing zrun, nothing at all for identical pages, minimal lengths.

/** Longest length the decoder reads: 4 ULEB128 bytes, 28 bits. */
const MAX_LENGTH_BYTES = 4;

function ulebLength(value: number): number {
  let bytes = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    bytes++;
  }
  return bytes;
}

function putUleb(out: Uint8Array, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 0x80);
  }
  out[at++] = value;
  return at;
}

/** A 32-bit view of the page when it is 4-aligned, to skip unchanged bytes a word at a time. */
function wordsOf(page: Uint8Array): Uint32Array | undefined {
  return page.byteOffset % 4 === 0 ? new Uint32Array(page.buffer, page.byteOffset, page.length >>> 2) : undefined;
}

/** End of the run of equal bytes from pos. */
function equalRunEnd(a: Uint8Array, b: Uint8Array, aWords: Uint32Array | undefined,
  bWords: Uint32Array | undefined, pos: number): number {
  const end = b.length;
  if (aWords && bWords) {
    while (pos % 4 !== 0 && pos < end && a[pos] === b[pos]) pos++;
    if (pos % 4 === 0) {
      let word = pos / 4;
      while (word < bWords.length && aWords[word] === bWords[word]) word++;
      pos = word * 4;
    }
  }
  while (pos < end && a[pos] === b[pos]) pos++;
  return pos;
}

/** End of the run of differing bytes from pos, looking no further than stop. */
function changedRunEnd(a: Uint8Array, b: Uint8Array, pos: number, stop: number): number {
  while (pos < stop && a[pos] !== b[pos]) pos++;
  return pos;
}

/**
 * XBZRLE of oldPage -> newPage (the same length) into out[at, at + limit). Returns its length, or -1 as
 * soon as it is known to need more than limit bytes (out's bytes up to limit are then scratch).
 */
export function xbzrleEncode(oldPage: Uint8Array, newPage: Uint8Array, out: Uint8Array, at: number,
  limit: number): number {
  const size = newPage.length;
  const oldWords = wordsOf(oldPage);
  const newWords = oldWords && wordsOf(newPage);
  let written = 0;
  let pos = 0;
  for (;;) {
    const changeStart = equalRunEnd(oldPage, newPage, oldWords, newWords, pos);
    if (changeStart === size) return written;
    const zrun = changeStart - pos;
    // Room left for the changed bytes once both lengths take their first byte.
    const room = limit - written - ulebLength(zrun) - 1;
    if (room < 1) return -1;
    const changeEnd = changedRunEnd(oldPage, newPage, changeStart, Math.min(size, changeStart + room + 1));
    const nzrun = changeEnd - changeStart;
    const runBytes = ulebLength(zrun) + ulebLength(nzrun) + nzrun;
    if (written + runBytes > limit) return -1;
    let o = putUleb(out, putUleb(out, at + written, zrun), nzrun);
    for (let i = changeStart; i < changeEnd; i++) out[o++] = newPage[i];
    written += runBytes;
    pos = changeEnd;
  }
}

/** Reads the ULEB128 lengths of a payload, refusing any longer than MAX_LENGTH_BYTES. */
class LengthReader {
  at = 0;
  constructor(private readonly bytes: Uint8Array) {}

  get done(): boolean {
    return this.at === this.bytes.length;
  }

  /** The next length, or -1 when it is too long or the payload ends inside it. */
  next(): number {
    let value = 0;
    for (let i = 0; i < MAX_LENGTH_BYTES && this.at < this.bytes.length; i++) {
      const byte = this.bytes[this.at++];
      value |= (byte & 0x7f) << (7 * i);
      if (byte < 0x80) return value;
    }
    return -1;
  }
}

/**
 * Applies an XBZRLE payload to page in place. Returns false when the payload is malformed (see section 4:
 * lengths over 4 bytes, a zrun of 0 after the first run, an nzrun of 0, a missing nzrun, runs past the
 * page or bytes past the payload); page may then be partly changed, so decode into a copy.
 */
export function xbzrleDecode(payload: Uint8Array, page: Uint8Array): boolean {
  const lengths = new LengthReader(payload);
  let pos = 0;
  while (!lengths.done) {
    const zrun = lengths.next();
    // pos is 0 only before the first run: every nzrun moves it on.
    if (zrun < 0 || (zrun === 0 && pos !== 0) || lengths.done) return false;
    const nzrun = lengths.next();
    if (nzrun <= 0 || pos + zrun + nzrun > page.length || lengths.at + nzrun > payload.length) return false;
    page.set(payload.subarray(lengths.at, lengths.at + nzrun), pos + zrun);
    lengths.at += nzrun;
    pos += zrun + nzrun;
  }
  return true;
}
