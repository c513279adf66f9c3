// etcd v3 through its JSON gateway (POST /v3/..., keys and values in base64, int64 fields as decimal
// strings) over Node's fetch. Not the etcd3 package: it pulls in a gRPC and protobuf tree
// (@grpc/grpc-js, protobufjs, ...) for the few calls needed here, which are plain HTTP, and the gateway
// is etcd's documented API.
import { CoordinatorError } from '../errors.js';
import { checkMs, checkNumber, invalid } from '../option-checks.js';

/** A key as etcd holds it: key and value as UTF-8 text, `lease` the lease id ('0' when it has none). */
export interface EtcdKeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: string;
}

/** The default bound on each request, from sending it to reading the whole answer. */
const DEFAULT_TIMEOUT_MS = 1000;

/** etcd's gRPC status for an unknown lease, as the gateway reports it in `code`. */
const GRPC_NOT_FOUND = 5;

type Json = Record<string, unknown>;

interface RawKeyValue {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}

const toBase64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const fromBase64 = (text: string | undefined) => Buffer.from(text ?? '', 'base64').toString('utf8');

function keyValue(raw: RawKeyValue | undefined): EtcdKeyValue | undefined {
  if (raw === undefined) return undefined;
  return {
    key: fromBase64(raw.key), value: fromBase64(raw.value), createRevision: Number(raw.create_revision ?? 0),
    modRevision: Number(raw.mod_revision ?? 0), version: Number(raw.version ?? 0), lease: raw.lease ?? '0',
  };
}

function checkKey(key: unknown): void {
  if (typeof key !== 'string' || key === '') throw invalid('key', 'a non-empty string', key);
}

function checkLeaseId(name: string, leaseId: unknown): void {
  if (typeof leaseId !== 'string' || !/^[0-9]{1,19}$/.test(leaseId)) throw invalid(name, 'a lease id (decimal digits)', leaseId);
}

/** The system error under fetch's "fetch failed" when there is one, else what fetch threw. */
const underneath = (error: unknown) => (error instanceof Error && error.cause instanceof Error ? error.cause : error);

/** What an error says, on one line (a dual-stack connect's AggregateError has no message, only a code). */
function reasonOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  return (error.message || (error as NodeJS.ErrnoException).code || error.name).replace(/\s+/g, ' ');
}

/** The gateway's error body `{error, code, message}` (a stream's error is `{error: {message, grpc_code}}`). */
function etcdErrorOf(body: Json): { message: string; code: number } | undefined {
  const error = body.error;
  if (error === undefined || error === '') return undefined;
  if (typeof error === 'object' && error !== null) {
    const nested = error as Json;
    return { message: String(nested.message ?? JSON.stringify(nested)), code: Number(nested.grpc_code ?? -1) };
  }
  return { message: String(body.message ?? error), code: Number(body.code ?? -1) };
}

/** The few etcd v3 calls a node needs to hold a lease and a key, each one HTTP request. */
export class EtcdClient {
  /** The endpoint, as given but without a trailing slash. */
  readonly endpoint: string;
  private readonly timeoutMs: number;

  /**
   * @param endpoint etcd's client URL, `http://127.0.0.1:2379` (http or https).
   * @param options.timeoutMs bound on each request, 1000 ms unless set.
   */
  constructor(endpoint: string, options: { timeoutMs?: number } = {}) {
    let url: URL | undefined;
    try {
      url = new URL(endpoint);
    } catch {
      // refused below
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw invalid('endpoint', "an http(s) URL such as 'http://127.0.0.1:2379'", endpoint);
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    checkMs('options.timeoutMs', timeoutMs);
    this.endpoint = endpoint.replace(/\/+$/, '');
    this.timeoutMs = timeoutMs;
  }

  /** A new lease; etcd may grant more than `ttlSeconds` (it raises short TTLs to its minimum). */
  async grantLease(ttlSeconds: number): Promise<{ id: string; ttlSeconds: number }> {
    checkNumber('ttlSeconds', ttlSeconds, { whole: true });
    const body = await this.call('/v3/lease/grant', { TTL: ttlSeconds });
    if (body.ID === undefined) throw this.failure('/v3/lease/grant', 'the answer has no lease ID');
    return { id: String(body.ID), ttlSeconds: Number(body.TTL ?? 0) };
  }

  /** One keepalive round: the TTL in seconds granted from now, 0 when the lease no longer exists. */
  async keepAlive(leaseId: string): Promise<number> {
    checkLeaseId('leaseId', leaseId);
    // A stream on the gateway: one answer per request sent, wrapped in `result`; an unknown lease has no TTL.
    const body = await this.call('/v3/lease/keepalive', { ID: leaseId });
    const ttl = Number((body.result as Json | undefined)?.TTL ?? 0);
    return ttl > 0 ? ttl : 0;
  }

  /** Revokes the lease and deletes its keys; a lease already gone is not an error. */
  async revokeLease(leaseId: string): Promise<void> {
    checkLeaseId('leaseId', leaseId);
    await this.call('/v3/lease/revoke', { ID: leaseId }, true);
  }

  /** The key, or undefined when it does not exist. */
  async get(key: string): Promise<EtcdKeyValue | undefined> {
    checkKey(key);
    const body = await this.call('/v3/kv/range', { key: toBase64(key) });
    return keyValue((body.kvs as RawKeyValue[] | undefined)?.[0]);
  }

  /**
   * Puts the key only if it does not exist. On success `revision` is the put's (the key's modRevision);
   * otherwise `current` is the key as it is.
   */
  createIfAbsent(key: string, value: string, leaseId?: string): Promise<{ succeeded: boolean; revision: number; current?: EtcdKeyValue }> {
    return this.putIf(key, { target: 'CREATE', create_revision: '0' }, value, leaseId);
  }

  /**
   * Puts the key only if its modRevision is `modRevision` (0: only if it does not exist). On success
   * `revision` is the put's (the key's new modRevision); otherwise `current` is the key as it is, if any.
   */
  putIfModRevision(key: string, modRevision: number, value: string, leaseId?: string): Promise<{ succeeded: boolean; revision: number; current?: EtcdKeyValue }> {
    checkNumber('modRevision', modRevision, { zeroAllowed: true, whole: true });
    return this.putIf(key, { target: 'MOD', mod_revision: String(modRevision) }, value, leaseId);
  }

  /** Deletes the key only if its modRevision is `modRevision`; whether it did. */
  async deleteIfModRevision(key: string, modRevision: number): Promise<boolean> {
    checkKey(key);
    checkNumber('modRevision', modRevision, { zeroAllowed: true, whole: true });
    const body = await this.call('/v3/kv/txn', {
      compare: [{ key: toBase64(key), result: 'EQUAL', target: 'MOD', mod_revision: String(modRevision) }],
      success: [{ request_delete_range: { key: toBase64(key) } }],
    });
    return body.succeeded === true;
  }

  /** One txn: if `compare` holds for the key, put it; else read it. */
  private async putIf(key: string, compare: Json, value: string, leaseId: string | undefined) {
    checkKey(key);
    if (typeof value !== 'string') throw invalid('value', 'a string', value);
    if (leaseId !== undefined) checkLeaseId('leaseId', leaseId);
    const put: Json = { key: toBase64(key), value: toBase64(value) };
    if (leaseId !== undefined) put.lease = leaseId;
    const body = await this.call('/v3/kv/txn', {
      compare: [{ key: toBase64(key), result: 'EQUAL', ...compare }],
      success: [{ request_put: put }],
      failure: [{ request_range: { key: toBase64(key) } }],
    });
    const revision = Number((body.header as Json | undefined)?.revision ?? 0);
    if (body.succeeded === true) return { succeeded: true, revision };
    const responses = body.responses as { response_range?: { kvs?: RawKeyValue[] } }[] | undefined;
    return { succeeded: false, revision, current: keyValue(responses?.[0]?.response_range?.kvs?.[0]) };
  }

  /**
   * POSTs `request` to `path` and returns the JSON answer. Every failure is a CoordinatorError; with
   * `notFoundOk`, etcd's NotFound answer resolves instead (with an empty object).
   */
  private async call(path: string, request: Json, notFoundOk = false): Promise<Json> {
    let status: number;
    let text: string;
    try {
      const response = await fetch(`${this.endpoint}${path}`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(request),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      status = response.status;
      text = await response.text();
    } catch (error) {
      const cause = underneath(error);
      const timedOut = cause instanceof Error && cause.name === 'TimeoutError';
      throw this.failure(path, timedOut ? `no answer within ${this.timeoutMs} ms` : reasonOf(cause), cause);
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (error) {
      throw this.failure(path, `HTTP ${status}, not JSON: ${JSON.stringify(text.slice(0, 80))}`, error);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw this.failure(path, `HTTP ${status}, not a JSON object: ${JSON.stringify(text.slice(0, 80))}`);
    }
    const etcdError = etcdErrorOf(body as Json);
    if (etcdError !== undefined) {
      if (notFoundOk && etcdError.code === GRPC_NOT_FOUND) return {};
      throw this.failure(path, `etcd said ${JSON.stringify(etcdError.message)} (code ${etcdError.code})`);
    }
    if (status !== 200) throw this.failure(path, `HTTP ${status}`);
    return body as Json;
  }

  private failure(path: string, what: string, cause?: unknown): CoordinatorError {
    return new CoordinatorError(`etcd ${this.endpoint}: POST ${path} failed: ${what}`, cause === undefined ? undefined : { cause });
  }
}
