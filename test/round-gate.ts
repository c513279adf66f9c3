// Makes "the workload wrote during every pre-copy round" a fact instead of a hope about how a writer
// thread gets scheduled: a FaultProxy hold that keeps each pre-copy round's ROUND_ACK from the source
// until the workload has provably written, and marked, a page after that round's dirty pages were taken
// (the source takes them before it sends ROUND_BEGIN, and scans again only once ROUND_ACK is back). A
// slow machine only makes a round longer. The final round's ACK is never held: the workload is paused.
import { readFileSync } from 'node:fs';
import type { SyntheticWorkload } from '../dist/src/index.js';
import { MessageType, STOP_AND_COPY, parseRoundAck } from '../dist/src/wire/messages.js';
import type { FaultProxyOptions } from './fault-proxy.js';

/** Called as ROUND_BEGIN r reaches the proxy: returns whether a marked write has happened since. */
export type WrittenSince = () => () => boolean;

/** How often a held ROUND_ACK looks again. */
const LOOK_EVERY_MS = 5;

export function gateRoundsOnWrites(writtenSince: WrittenSince): Required<Pick<FaultProxyOptions, 'hold'>> {
  const written = new Map<number, () => boolean>();
  return {
    hold(frame) {
      if (frame.connection !== 0) return undefined;
      if (frame.direction === 'to-target' && frame.type === MessageType.RoundBegin) {
        if ((frame.payload.readUInt32LE(4) & STOP_AND_COPY) === 0) written.set(frame.payload.readUInt32LE(0), writtenSince());
        return undefined;
      }
      const check = frame.direction === 'to-source' && frame.type === MessageType.RoundAck
        ? written.get(parseRoundAck(frame.payload)) : undefined;
      if (!check) return undefined;
      return new Promise<void>((resolve) => {
        const look = () => {
          let done: boolean;
          try {
            done = check();
          } catch {
            return; // the test is over (its files are gone): the ACK stays held, nothing looks again
          }
          if (done) resolve();
          else setTimeout(look, LOOK_EVERY_MS);
        };
        look();
      });
    },
  };
}

/**
 * For a SyntheticWorkload in this process. Its writer adds to the count once per slice of at most 2048
 * writes (SLICE_WRITES), after marking them; a slice may have begun before the pages were taken, so a
 * count more than 2048 above the one at ROUND_BEGIN means a second slice, begun afterwards, is marked.
 */
export function workloadWrites(workload: SyntheticWorkload): WrittenSince {
  return () => {
    const base = workload.writes;
    return () => workload.writes - base > 2048;
  };
}

/**
 * For a writer in another process mapping the image file: compares the file with a copy read at
 * ROUND_BEGIN until `pages` pages changed since. Each changed page had a write after the pages were
 * taken, and the writer marks a page before it writes the next, so all but the last of them are
 * marked. withData counts only pages with data at ROUND_BEGIN (the encoder caches those: changed, they
 * go again as DELTA).
 */
export function imageWrites(path: string, pageSize: number, { pages = 2, withData = false } = {}): WrittenSince {
  const zero = Buffer.alloc(pageSize);
  const page = (bytes: Buffer, at: number) => bytes.subarray(at, at + pageSize);
  return () => {
    const before = readFileSync(path);
    const watched: number[] = [];
    for (let at = 0; at < before.length; at += pageSize) if (!withData || !page(before, at).equals(zero)) watched.push(at);
    return () => {
      const now = readFileSync(path);
      return watched.filter((at) => !page(before, at).equals(page(now, at))).length >= pages;
    };
  };
}
