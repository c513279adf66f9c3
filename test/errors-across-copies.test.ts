// An embedder's tree can hold two installed copies of pagewire (one of theirs, one under another
// dependency); an error made by one copy must pass `instanceof` against the other copy's classes.
// Two copies of the built errors module, each in a directory of its own, stand for the two installs.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './helpers.js';

type Errors = typeof import('../dist/src/errors.js');

const temp = tempDir('pagewire-errors-');
afterAll(() => temp.cleanup());

async function installedCopy(name: string): Promise<Errors> {
  const dir = join(temp.dir, name, 'node_modules', 'pagewire', 'dist', 'src');
  mkdirSync(dir, { recursive: true });
  // Without its source map comment, as the package ships it (no maps).
  const built = readFileSync(join(ROOT, 'dist', 'src', 'errors.js'), 'utf8');
  writeFileSync(join(dir, 'errors.js'), built.replace(/^\/\/# sourceMappingURL=.*$/m, ''));
  return await import(pathToFileURL(join(dir, 'errors.js')).href) as Errors;
}

const a = await installedCopy('a');
const b = await installedCopy('b');

describe('pagewire errors across two installed copies', () => {
  it('are two copies: their classes are different objects', () => {
    expect(a.PagewireError).not.toBe(b.PagewireError);
  });

  it('an error of one copy is an instance of the same class and of PagewireError in the other', () => {
    const checksum = new a.ChecksumError('page 3 differs', 3);
    expect(checksum instanceof b.ChecksumError).toBe(true);
    expect(checksum instanceof b.PagewireError).toBe(true);
    expect(checksum instanceof Error).toBe(true);
    expect(checksum.code).toBe('PW_ERR_CHECKSUM');
    expect(checksum.pageIndex).toBe(3);

    const peer = new b.PeerError('PW_ERR_STORAGE', 'disk full');
    expect(peer instanceof a.PeerError).toBe(true);
    expect(peer instanceof a.PagewireError).toBe(true);
    expect(peer.remoteCode).toBe('PW_ERR_STORAGE');
  });

  it('an error is not an instance of another subclass, in either copy', () => {
    const timeout = new a.TimeoutError('no reply');
    expect(timeout instanceof b.ChecksumError).toBe(false);
    expect(timeout instanceof a.ChecksumError).toBe(false);
    expect(timeout instanceof b.TimeoutError).toBe(true);
    // A bare PagewireError (as asPagewireError wraps) is no subclass's instance.
    const wrapped = a.asPagewireError(new RangeError('odd'));
    expect(wrapped instanceof b.PagewireError).toBe(true);
    expect(wrapped instanceof b.TimeoutError).toBe(false);
  });

  it("the other copy's asPagewireError keeps the error and its code instead of wrapping it", () => {
    const aborted = new a.AbortedError('aborted by the caller');
    expect(b.asPagewireError(aborted)).toBe(aborted);
    expect(b.asPagewireError(aborted).code).toBe('PW_ERR_ABORTED');
  });

  it('what is not a pagewire error is no instance, even with a pagewire code or class name', () => {
    class TimeoutError extends Error {
      readonly code = 'PW_ERR_TIMEOUT';
    }
    for (const value of [new TimeoutError('x'), { code: 'PW_ERR_TIMEOUT', name: 'TimeoutError' }, new Error('x'), null, undefined, 'PW_ERR', 42]) {
      expect(value instanceof b.TimeoutError).toBe(false);
      expect(value instanceof b.PagewireError).toBe(false);
    }
  });
});
