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

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}
