// HELD: every page's hash as this side holds it, region by region, in frames of at most
// HELD_PAGES_PER_FRAME hashes (a resume's target, a standby at the start of each sync).
import type { FramedConnection } from '../transport/framed-connection.js';
import { HELD_PAGES_PER_FRAME, MessageType, encodeHeld } from '../wire/messages.js';

export async function sendHeld(connection: FramedConnection, lastRound: number, regions: readonly BigUint64Array[]): Promise<void> {
  for (const [region, heldHashes] of regions.entries()) {
    for (let first = 0; first < heldHashes.length; first += HELD_PAGES_PER_FRAME) {
      const count = Math.min(HELD_PAGES_PER_FRAME, heldHashes.length - first);
      await connection.send(MessageType.Held, encodeHeld(lastRound, region, first, heldHashes.subarray(first, first + count)));
    }
  }
}
