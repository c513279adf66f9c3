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

  private constructor(private readonly client: EtcdClient, readonly name: string, private readonly leaseId: string,
    private readonly ttlMs: number, readonly token: number, grantedAt: number) {
    this.validUntil = grantedAt + ttlMs;
  }

  /**
   * Takes the workload's key under a new lease: when nobody holds it, or when it is this very copy's,
   * left by its activation as a standby (no lease). Anything else is another copy's: FencedError.
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
    return this.lost ?? new FencedError(`lost the lease on ${this.name}: it could not be renewed`);
  }

  /**
   * Keeps the lease alive; calls `onLost` once, a margin (a quarter of the TTL) before the lease may
   * expire without a renewal, or at once when etcd says it is gone. Returns a function that stops.
   */
  watch(onLost: () => Promise<void>): () => void {
    const renewEvery = this.ttlMs / 4;
    let stopped = false;
    let renewing = false;
    const lose = (error: FencedError) => {
      if (stopped) return;
      stopped = true;
      this.lost = error;
      clearInterval(check);
      clearInterval(renew);
      void onLost();
    };
    const renew = setInterval(() => {
      if (renewing) return;
      renewing = true;
      const sentAt = performance.now();
      this.client.keepAlive(this.leaseId).then((ttlSeconds) => {
        if (ttlSeconds <= 0) lose(new FencedError(`the lease on ${this.name} expired: another copy may run it now`));
        else this.validUntil = Math.max(this.validUntil, sentAt + ttlSeconds * 1000);
      }, () => undefined).finally(() => { renewing = false; });
    }, renewEvery);
    const check = setInterval(() => {
      if (performance.now() >= this.validUntil - renewEvery) {
        lose(new FencedError(`could not renew the lease on ${this.name} in time (etcd unreachable?): stopped the workload before it could expire`));
      }
    }, CHECK_MS);
    return () => {
      stopped = true;
      clearInterval(check);
      clearInterval(renew);
    };
  }
}
