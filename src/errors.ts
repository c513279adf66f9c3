// Every failure a caller can act on has its own class and a stable string `code`. Errors that come from
// the peer keep the peer's code in `remoteCode`, so the reason travels across the wire intact.

export interface PagewireErrorOptions {
  cause?: unknown;
}

/**
 * Marks every pagewire error, whichever installed copy of the package made it (a Symbol.for key is the
 * same in every copy, as undici brands its errors), so that instanceof works across copies.
 */
const kPagewireError = Symbol.for('pagewire.error');

export class PagewireError extends Error {
  readonly code: string = 'PW_ERR';
  constructor(message: string, options?: PagewireErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }

  get [kPagewireError](): true {
    return true;
  }

  /**
   * `error instanceof PagewireError` (or a subclass) also holds for an error made by another installed
   * copy of pagewire, whose classes are other objects: a branded error is an instance of this class when
   * a class of the same name is in its prototype chain. Every subclass inherits this.
   */
  static [Symbol.hasInstance](value: unknown): boolean {
    if (Function.prototype[Symbol.hasInstance].call(this, value)) return true;
    if (typeof value !== 'object' || value === null || (value as Record<symbol, unknown>)[kPagewireError] !== true) return false;
    for (let proto = Object.getPrototypeOf(value); proto !== null; proto = Object.getPrototypeOf(proto)) {
      if (Object.hasOwn(proto, 'constructor') && proto.constructor.name === this.name) return true;
    }
    return false;
  }
}

/** A user-supplied argument or option is invalid. */
export class InvalidArgumentError extends PagewireError {
  override readonly code = 'PW_ERR_INVALID_ARGUMENT';
}

/** The C++ addon is missing or failed to load. */
export class NativeUnavailableError extends PagewireError {
  override readonly code = 'PW_ERR_NATIVE';
}

/** The peer did not prove it holds the pre-shared key, or only one side has a key. */
export class AuthError extends PagewireError {
  override readonly code = 'PW_ERR_AUTH';
}

/** The first bytes of a connection are not a pagewire handshake (garbage, wrong magic, wrong order). */
export class HandshakeError extends PagewireError {
  override readonly code = 'PW_ERR_HANDSHAKE';
}

/** The peers share no protocol version. */
export class VersionError extends PagewireError {
  override readonly code = 'PW_ERR_VERSION';
}

/** The target cannot hold the region the source offers. */
export class CapacityError extends PagewireError {
  override readonly code = 'PW_ERR_CAPACITY';
}

/** A frame or record read from the network is malformed (bad type, length, index, encoding). */
export class ProtocolError extends PagewireError {
  override readonly code = 'PW_ERR_PROTOCOL';
}

/** A page's contents do not match the xxHash64 its record carries, or the region digest differs. */
export class ChecksumError extends PagewireError {
  override readonly code = 'PW_ERR_CHECKSUM';
  /** The page whose check failed; -1 for the region digest. */
  readonly pageIndex: number;
  constructor(message: string, pageIndex: number, options?: PagewireErrorOptions) {
    super(message, options);
    this.pageIndex = pageIndex;
  }
}

/** Nothing arrived within the allowed time. */
export class TimeoutError extends PagewireError {
  override readonly code = 'PW_ERR_TIMEOUT';
}

/** The rounds stopped converging and the source was told to give up rather than pause for longer. */
export class ConvergenceError extends PagewireError {
  override readonly code = 'PW_ERR_NOT_CONVERGING';
}

/** The caller aborted (AbortSignal, SIGINT, SIGTERM). */
export class AbortedError extends PagewireError {
  override readonly code = 'PW_ERR_ABORTED';
}

/** The connection closed or failed under us, or could not be opened (refused, unknown host); `cause` is the system error. */
export class ConnectionError extends PagewireError {
  override readonly code = 'PW_ERR_CONNECTION';
}

/** The target could not listen on its host and port (in use, not an address of this machine); `cause` is the system error. */
export class ListenError extends PagewireError {
  override readonly code = 'PW_ERR_LISTEN';
}

/** An embedder's hook threw or rejected; `hook` names it and `cause` is what it threw. */
export class HookError extends PagewireError {
  override readonly code = 'PW_ERR_HOOK';
  /** The hook that failed: 'pause', 'resume', 'deviceState', 'throttle', 'onDeviceState', 'onCommitted', 'onActivate'. */
  readonly hook: string;
  constructor(hook: string, thrown: unknown) {
    super(`the ${hook} hook failed: ${thrown instanceof Error ? thrown.message : String(thrown)}`, { cause: thrown });
    this.hook = hook;
  }
}

/** The peer reported a failure; its code and reason are kept. */
export class PeerError extends PagewireError {
  override readonly code = 'PW_ERR_PEER';
  /**
   * The code the peer failed with, as it sent it: `PW_ERR_CHECKSUM` when the target found a bad page,
   * `PW_ERR_HOOK` when the source's pause hook threw, and so on (`PW_ERR` for a failure the peer could not
   * code). The table of codes is in docs/PROTOCOL.md, section 7.
   */
  readonly remoteCode: string;
  constructor(remoteCode: string, reason: string) {
    super(`peer failed: ${reason} (${remoteCode})`);
    this.remoteCode = remoteCode;
  }
}

/** Reading or writing the region's file failed. */
export class StorageError extends PagewireError {
  override readonly code = 'PW_ERR_STORAGE';
}

/** The region's memory changed size during the migration (a WebAssembly.Memory grew). */
export class RegionChangedError extends PagewireError {
  override readonly code = 'PW_ERR_REGION_CHANGED';
}

/**
 * The switch-over could not be confirmed after the point of no return. `state` tells an operator which
 * side may hold the live copy; neither side runs a second copy on its own.
 */
export class SwitchoverError extends PagewireError {
  override readonly code = 'PW_ERR_SWITCHOVER';
  readonly state: string;
  /** Where a verified but uncommitted image was kept, when there is one. */
  readonly inDoubtImage: string | undefined;
  constructor(message: string, state: string, options?: PagewireErrorOptions & { inDoubtImage?: string }) {
    super(message, options);
    this.state = state;
    this.inDoubtImage = options?.inDoubtImage;
  }
}

/** The coordinator (etcd) could not be reached or refused a request; the message names the endpoint and the call. */
export class CoordinatorError extends PagewireError {
  override readonly code = 'PW_ERR_COORDINATOR';
}

/**
 * This node's claim to run the workload is stale or was taken: its lease expired, or another copy holds
 * the coordinator's key.
 */
export class FencedError extends PagewireError {
  override readonly code = 'PW_ERR_FENCED';
}

/** A snapshot file is not whole: truncated, torn, or changed since it was written (a digest or a page hash does not match). */
export class SnapshotCorruptError extends PagewireError {
  override readonly code = 'PW_ERR_SNAPSHOT_CORRUPT';
}

/** An incremental snapshot's chain is broken: a parent file is missing, or is not the snapshot it was taken on. */
export class SnapshotChainError extends PagewireError {
  override readonly code = 'PW_ERR_SNAPSHOT_CHAIN';
}

/** Wraps anything unexpected so callers always see a PagewireError with a code. */
export function asPagewireError(error: unknown): PagewireError {
  if (error instanceof PagewireError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const wrapped = new PagewireError(message, { cause: error });
  return wrapped;
}
