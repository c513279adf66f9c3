// The extra streams a migration being set up waits for: which JOIN may take which stream (the migration,
// the session secret's proof, a stream not yet joined), the JOINED answer, and the wait for all of them.
import { timingSafeEqual } from 'node:crypto';
import { AuthError, HandshakeError, TimeoutError, asPagewireError } from '../errors.js';
import type { FramedConnection } from '../transport/framed-connection.js';
import { joinProof } from '../transport/session-secret.js';
import { MAX_PAYLOAD_BYTES, MessageType, type Join, type parseJoin } from '../wire/messages.js';

export function unknownJoin(): HandshakeError {
  return new HandshakeError('JOIN names no migration this target is setting up');
}

export function joinTooLate(): HandshakeError {
  return new HandshakeError('JOIN came too late: the migration is not waiting for it');
}

export class JoinRegistry {
  private readonly joined = new Map<number, FramedConnection>();
  /** Cleared when the wait ends: a JOIN after that finds no migration being set up. */
  private waiting = true;
  private complete: (() => void) | undefined;

  /** `secret` and `welcomeKey`: what each JOIN proves, the session secret over this connection set's WELCOME key. */
  constructor(private readonly migrationId: Buffer, readonly expected: number, private readonly secret: Buffer,
    private readonly welcomeKey: Buffer) {}

  /** Throws unless `join` names this migration and a stream not yet joined, and proves the session secret. */
  check(join: ReturnType<typeof parseJoin>): void {
    if (!this.waiting || !timingSafeEqual(this.migrationId, join.migrationId)) {
      throw unknownJoin();
    }
    if (!timingSafeEqual(join.proof, joinProof(this.secret, this.welcomeKey, join.head))) {
      throw new AuthError('JOIN does not prove the session secret: it does not come from the source of this migration');
    }
    if (join.stream < 1 || join.stream > this.expected || this.joined.has(join.stream)) {
      throw new HandshakeError(`JOIN names stream ${join.stream}; streams 1..${this.expected} may join, once each`);
    }
  }

  /** Takes a JOIN that passed check() and authenticated, and answers JOINED. */
  admit(connection: FramedConnection, join: Join): void {
    // The migration may have failed, or the stream joined, while this one authenticated.
    if (!this.waiting || this.joined.has(join.stream) || !this.migrationId.equals(join.migrationId)) {
      void connection.sendErrorAndClose(joinTooLate());
      return;
    }
    this.joined.set(join.stream, connection);
    // The source sends this stream's pages only after JOINED, so Node has read nothing past it.
    connection.readNatively();
    connection.send(MessageType.Joined).then(() => {
      connection.maxPayload = MAX_PAYLOAD_BYTES;
      if (this.joined.size === this.expected) this.complete?.();
    }, () => {
      // The stream may join again on a new connection.
      if (this.joined.get(join.stream) === connection) this.joined.delete(join.stream);
    });
  }

  /**
   * Waits until every extra stream has joined (within `timeoutMs`), while still hearing the control
   * connection: a source's ERROR there, or stop(), ends the wait at once. Returns them in stream order.
   */
  async wait(control: FramedConnection, timeoutMs: number): Promise<FramedConnection[]> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await control.guard(new Promise<void>((resolve, reject) => {
        this.complete = resolve;
        timer = setTimeout(() => reject(new TimeoutError(
          `only ${this.joined.size} of ${this.expected} extra streams joined within ${timeoutMs} ms`)), timeoutMs);
      }));
    } catch (error) {
      for (const connection of this.joined.values()) connection.fail(asPagewireError(error));
      throw error;
    } finally {
      clearTimeout(timer);
      this.waiting = false;
    }
    return [...this.joined.keys()].sort((a, b) => a - b).map((stream) => this.joined.get(stream)!);
  }
}
