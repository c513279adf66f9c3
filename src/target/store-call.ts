// Calls into an embedder's VerifiedPageStore: whatever one throws fails the migration as a StorageError.
import { StorageError } from '../errors.js';

/** The message of anything thrown, Error or not. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Runs `work`; a throw or rejection becomes StorageError (PW_ERR_STORAGE) with it as cause. */
export async function storeCall<T>(what: string, work: () => T): Promise<Awaited<T>> {
  try {
    return await work();
  } catch (cause) {
    throw new StorageError(`the page store failed to ${what}: ${messageOf(cause)}`, { cause });
  }
}
