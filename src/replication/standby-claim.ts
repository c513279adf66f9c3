// The standby's side of fencing: a primary is served only while etcd shows its token as the owner
// key's current revision; and the standby takes over only by creating the key once the primary's lease
// has let it go. The key it creates has no lease: the activated copy owns the workload until its own
// `pagewire replicate` takes the key under a lease (PrimaryLease.acquire), whoever else comes back.
import { FencedError } from '../errors.js';
import type { EtcdClient } from '../coordinator/etcd-client.js';
import { ownerKey, parseOwner, type OwnerRecord } from './primary-lease.js';

export type TakeOver = { taken: true; token: number } | { taken: false };

export class StandbyClaim {
  constructor(private readonly client: EtcdClient, readonly name: string, private readonly copy: string) {}

  /** A primary's token must be the owner key's revision, under a lease; else FencedError. */
  async checkPrimary(token: number): Promise<void> {
    const owner = await this.client.get(ownerKey(this.name));
    if (!owner || owner.modRevision !== token || owner.lease === '0') {
      throw new FencedError(`stale fencing token ${token}: ${this.name} is ` +
        `${owner ? `held by ${parseOwner(owner).copy} at revision ${owner.modRevision}` : 'held by nobody'}; this primary may not replicate`);
    }
  }

  /**
   * Takes the key once no lease holds it; `{taken: false}` while one does (the primary, or a primary
   * started again). A copy that activated elsewhere holding it is FencedError: this standby must not run it.
   */
  async tryTakeOver(): Promise<TakeOver> {
    const key = ownerKey(this.name);
    const owner = await this.client.get(key);
    if (owner) {
      // Under a lease: a live primary holds it (this one, or one started again that may connect).
      if (owner.lease !== '0') return { taken: false };
      throw new FencedError(`${this.name} was taken by ${parseOwner(owner).copy} (revision ${owner.modRevision}): not activating`);
    }
    const result = await this.client.createIfAbsent(key, JSON.stringify({ copy: this.copy } satisfies OwnerRecord));
    if (result.succeeded) return { taken: true, token: result.revision };
    throw new FencedError(`${this.name} was taken by ${result.current ? parseOwner(result.current).copy : 'another copy'} meanwhile: not activating`);
  }
}
