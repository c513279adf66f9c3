// What both ends of a QEMU hand-over share: waiting for QEMU's migration to end, and a clock both
// processes read alike, so the outage (source `stop` to target `cont`) can be measured across them.
import type { QmpClient } from './qmp-client.js';

const ENDED = new Set(['completed', 'failed', 'cancelled']);

/** Resolves with the status that ends QEMU's migration (MIGRATION events need the `events` capability). */
export function migrationEnded(qmp: QmpClient): Promise<string> {
  const ended = qmp.until((event) => event.event === 'MIGRATION' && ENDED.has(String(event.data?.status)))
    .then((event) => String(event.data!.status));
  // A wait given up on (the migration failed elsewhere) must not end the process when QEMU goes away.
  ended.catch(() => {});
  return ended;
}

/** Milliseconds since the epoch, to the microsecond: comparable between processes on one machine. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}
