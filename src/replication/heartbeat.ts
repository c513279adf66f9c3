// Heartbeats on the replication connection, both ways: whenever this side has written nothing for an
// interval, it sends HEARTBEAT, so the peer's silence timer (its failover timeout) only fires when this
// side, or the link, is really gone.
import type { FramedConnection } from '../transport/framed-connection.js';
import { MessageType } from '../wire/messages.js';
import { encodeEpochNumber } from '../wire/replication-messages.js';

/** How often a side looks whether it has written anything; silent, it sends a heartbeat. */
export const HEARTBEAT_INTERVAL_MS = 100;
/**
 * The shortest failover timeout. A live side writes at least every two intervals (a write just after
 * one look is seen only at the look after next); three leave one interval for the network and a busy
 * event loop.
 */
export const MIN_FAILOVER_TIMEOUT_MS = 3 * HEARTBEAT_INTERVAL_MS;

export class Heartbeat {
  private readonly timer: NodeJS.Timeout;
  private lastWritten: number;

  constructor(connection: FramedConnection, epoch: () => number) {
    this.lastWritten = connection.bytesWritten;
    this.timer = setInterval(() => {
      if (connection.bytesWritten === this.lastWritten) {
        // A failed send means the connection is failing: its owner hears about it from its own reads.
        connection.send(MessageType.Heartbeat, encodeEpochNumber(epoch())).catch(() => undefined);
      }
      this.lastWritten = connection.bytesWritten;
    }, HEARTBEAT_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
