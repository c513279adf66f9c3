// The primary's claim to run the workload, through the coordinator (etcd): a key bound to a lease that
// it keeps alive. The key's revision when taken is the fencing token every epoch carries. The lease is
// counted as gone from the last keep-alive's sending plus its TTL, and the workload is stopped a
// margin before that, so that by the time etcd lets a standby take the key, this copy writes nothing.
import { FencedError } from '../errors.js';
import type { EtcdClient, EtcdKeyValue } from '../coordinator/etcd-client.js';

/** etcd's shortest lease with its default timings (1.5 x the election timeout, rounded up). */
export const DEFAULT_LEASE_TTL_SECONDS = 2;
/** How often the deadline is checked. */
const CHECK_MS = 50;

/** The coordinator key of a replicated workload. */
export function ownerKey(name: string): string {
  return `/pagewire/${name}/owner`;
}

/** Which copy of the workload an owner key names: this host and the image's path. */
export interface OwnerRecord {
  copy: string;
}

export function parseOwner(kv: EtcdKeyValue): OwnerRecord {
  try {
    const parsed = JSON.parse(kv.value) as Partial<OwnerRecord>;
    if (typeof parsed.copy === 'string') return { copy: parsed.copy };
  } catch { /* not ours */ }
  return { copy: `unknown (${kv.value.slice(0, 60)})` };
}

export class PrimaryLease {
  private validUntil: number;
  private lost: FencedError | undefined;
  private readonly lostListeners = new Set<() => void>();
  private readonly timers: NodeJS.Timeout[];
  private renewing = false;

  private constructor(private readonly client: EtcdClient, readonly name: string, private readonly leaseId: string,
    ttlMs: number, readonly token: number, grantedAt: number) {
    this.validUntil = grantedAt + ttlMs;
    const renewEvery = ttlMs / 4;
    // Renewed from the moment it is held, whoever uses it and whenever.
    this.timers = [setInterval(() => this.renew(), renewEvery), setInterval(() => {
      if (performance.now() >= this.validUntil - renewEvery) {
        this.lose(new FencedError(`could not renew the lease on ${name} in time (etcd unreachable?): the workload must stop before it can expire`));
      }
    }, CHECK_MS)];
  }

  /**
   * Takes the workload's key under a new lease: when nobody holds it, or when it is this very copy's,
   * left by its activation as a standby (no lease). Anything else is another copy's: FencedError. The
   * lease is kept alive from here until release(), or until it is lost (see onLost).
   */
  static async acquire(client: EtcdClient, name: string, copy: string, ttlSeconds = DEFAULT_LEASE_TTL_SECONDS): Promise<PrimaryLease> {
    const key = ownerKey(name);
    const value = JSON.stringify({ copy } satisfies OwnerRecord);
    const grantedAt = performance.now();
    const lease = await client.grantLease(ttlSeconds);
    let taken = await client.createIfAbsent(key, value, lease.id);
    const holder = taken.current;
    if (!taken.succeeded && holder && holder.lease === '0' && parseOwner(holder).copy === copy) {
      taken = await client.putIfModRevision(key, holder.modRevision, value, lease.id);
    }
    if (!taken.succeeded) {
      await client.revokeLease(lease.id).catch(() => undefined);
      const current = taken.current ?? holder;
      throw new FencedError(`${name} is held by ${current ? parseOwner(current).copy : 'another copy'}` +
        `${current ? ` (fencing token ${current.modRevision})` : ''}: this copy may not run it; ` +
        'start it as a standby of the copy that runs, to be protected again');
    }
    return new PrimaryLease(client, name, lease.id, lease.ttlSeconds * 1000, taken.revision, grantedAt);
  }

  /** Why the workload had to stop. */
  lostError(): FencedError {
    return this.lost ?? new FencedError(`lost the lease on ${this.name}`);
  }

  /**
   * Calls `listener` once the lease is lost: a quarter of the TTL before it could expire without a
   * renewal (counted from each keep-alive's sending), or at once when etcd says it is gone. The
   * workload must stop then. Returns a function that unsubscribes.
   */
  onLost(listener: () => void): () => void {
    if (this.lost) queueMicrotask(listener);
    else this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  /** Stops renewing and gives the key up at once: a standby may take over now. */
  async release(): Promise<void> {
    this.stopTimers();
    await this.client.revokeLease(this.leaseId);
  }

  private renew(): void {
    if (this.renewing || this.lost) return;
    this.renewing = true;
    const sentAt = performance.now();
    this.client.keepAlive(this.leaseId).then((ttlSeconds) => {
      if (ttlSeconds <= 0) this.lose(new FencedError(`the lease on ${this.name} expired: another copy may run it now`));
      else this.validUntil = Math.max(this.validUntil, sentAt + ttlSeconds * 1000);
    }, () => undefined).finally(() => { this.renewing = false; });
  }

  private lose(error: FencedError): void {
    if (this.lost) return;
    this.lost = error;
    this.stopTimers();
    for (const listener of this.lostListeners) listener();
    this.lostListeners.clear();
  }

  private stopTimers(): void {
    for (const timer of this.timers) clearInterval(timer);
  }
}
