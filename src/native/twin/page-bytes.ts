// Whole-page comparisons, done by Buffer.compare (a native memcmp that stops at the first difference).

const zeroPages = new Map<number, Uint8Array>();

/** A page of size zero bytes, shared: never write to it. */
export function zeroPage(size: number): Uint8Array {
  let page = zeroPages.get(size);
  if (!page) {
    page = new Uint8Array(size);
    zeroPages.set(size, page);
  }
  return page;
}

export function isZeroPage(page: Uint8Array): boolean {
  return Buffer.compare(page, zeroPage(page.length)) === 0;
}

/**
 * The encoder's test for pages LZ4 is not tried on (docs/PROTOCOL.md section 4): n = min(64, size)
 * bytes sampled at k * floor(size / n); more than 3/4 of them distinct looks like random data.
 */
export function looksIncompressible(page: Uint8Array): boolean {
  const n = Math.min(64, page.length);
  if (n === 0) return false;
  const stride = Math.floor(page.length / n);
  const seen = new Uint8Array(256);
  let distinct = 0;
  for (let k = 0; k < n; k++) {
    const b = page[k * stride]!;
    if (seen[b] === 0) {
      seen[b] = 1;
      distinct++;
    }
  }
  return 4 * distinct > 3 * n;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}
