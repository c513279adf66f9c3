// RoundFlusher: pre-copy rounds made durable in the background, one persist() at a time.
import { describe, expect, it } from 'vitest';
import { StorageError } from '../dist/src/index.js';
import { RoundFlusher } from '../dist/src/target/round-flusher.js';
import type { TargetImage } from '../dist/src/target/target-image.js';

/** An embedder's image whose persist() settles when the test says so. */
function controlledImage() {
  const pending: Array<{ resolve(): void; reject(e: Error): void }> = [];
  let calls = 0;
  const image = {
    persist: () => {
      calls += 1;
      return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }));
    },
  } as unknown as TargetImage;
  const next = async () => {
    while (pending.length === 0) await new Promise((r) => setImmediate(r));
    return pending.shift()!;
  };
  return { image, next, calls: () => calls };
}

describe('RoundFlusher', () => {
  it('runs one persist at a time, and one more for the rounds that ended meanwhile', async () => {
    const { image, next, calls } = controlledImage();
    const flusher = new RoundFlusher(image);
    flusher.flush();
    flusher.flush();
    flusher.flush();
    (await next()).resolve();
    (await next()).resolve();
    await flusher.settled();
    expect(calls()).toBe(2);
  });

  it('reports a failed persist at the next flush and at settled(), and persists no more', async () => {
    const { image, next, calls } = controlledImage();
    const flusher = new RoundFlusher(image);
    flusher.flush();
    (await next()).reject(new StorageError('cannot fsync: EIO'));
    await expect(flusher.settled()).rejects.toThrow(/cannot fsync: EIO/);
    expect(() => flusher.flush()).toThrow(StorageError);
    expect(() => flusher.check()).toThrow(StorageError);
    expect(calls()).toBe(1);
  });
});
