// EtcdClient against a real etcd (test/etcd-server.ts): leases, the compare-and-put transactions a node
// claims its key with, and a lease that expires taking the key with it. Then the failures, each a
// CoordinatorError naming the endpoint: nothing listening, no answer, an answer that is not etcd's.
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoordinatorError, EtcdClient, InvalidArgumentError, PagewireError } from '../dist/src/index.js';
import { etcdAvailable, startEtcd, type RunningEtcd } from './etcd-server.js';

const hasEtcd = etcdAvailable();

/** Resolves once `condition` holds, polling; the test's own timeout bounds the wait. */
async function until(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await delay(25);
}

async function rejection(promise: Promise<unknown>): Promise<PagewireError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(CoordinatorError);
  expect((error as PagewireError).code).toBe('PW_ERR_COORDINATOR');
  expect((error as PagewireError).message).not.toMatch(/\n/);
  return error as PagewireError;
}

function listening<T extends Server | HttpServer>(server: T): Promise<T> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const portOf = (server: Server | HttpServer) => (server.address() as { port: number }).port;

describe.skipIf(!hasEtcd)('EtcdClient against a real etcd', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  beforeAll(async () => {
    etcd = await startEtcd();
    client = new EtcdClient(etcd.endpoint);
  });
  afterAll(() => etcd?.stop());

  it('grants a lease and keeps it alive', async () => {
    const lease = await client.grantLease(5);
    expect(lease.id).toMatch(/^[0-9]+$/);
    expect(lease.ttlSeconds).toBe(5);
    expect(await client.keepAlive(lease.id)).toBe(5);
    await client.revokeLease(lease.id);
  });

  it('creates a key only once; the second try sees the first value', async () => {
    const lease = await client.grantLease(30);
    const first = await client.createIfAbsent('/pw/once', 'node-a', lease.id);
    expect(first.succeeded).toBe(true);
    expect(first.current).toBeUndefined();
    const stored = await client.get('/pw/once');
    expect(stored).toEqual({
      key: '/pw/once', value: 'node-a', createRevision: first.revision, modRevision: first.revision, version: 1, lease: lease.id,
    });
    const second = await client.createIfAbsent('/pw/once', 'node-b');
    expect(second).toEqual({ succeeded: false, revision: first.revision, current: stored });
    await client.revokeLease(lease.id);
    expect(await client.get('/pw/once')).toBeUndefined();
  });

  it('a lease left to expire takes its key with it; keepAlive then answers 0', async () => {
    // etcd raises a short TTL to its minimum (2 s at the default heartbeat and election timeout).
    const lease = await client.grantLease(1);
    expect(lease.ttlSeconds).toBeGreaterThanOrEqual(1);
    expect((await client.createIfAbsent('/pw/expiring', 'node-a', lease.id)).succeeded).toBe(true);
    await until(async () => (await client.get('/pw/expiring')) === undefined);
    expect(await client.keepAlive(lease.id)).toBe(0);
    await client.revokeLease(lease.id); // already gone: not an error
    expect((await client.createIfAbsent('/pw/expiring', 'node-b')).succeeded).toBe(true);
  });

  it('puts and deletes only at the expected modRevision', async () => {
    const created = await client.createIfAbsent('/pw/guarded', 'v1');
    const moved = await client.putIfModRevision('/pw/guarded', created.revision, 'v2');
    expect(moved.succeeded).toBe(true);
    expect(moved.revision).toBeGreaterThan(created.revision);
    const current = await client.get('/pw/guarded');
    expect(current).toMatchObject({ value: 'v2', modRevision: moved.revision, createRevision: created.revision, version: 2, lease: '0' });
    const stale = await client.putIfModRevision('/pw/guarded', created.revision, 'v3');
    expect(stale).toEqual({ succeeded: false, revision: moved.revision, current });
    expect(await client.deleteIfModRevision('/pw/guarded', created.revision)).toBe(false);
    expect(await client.deleteIfModRevision('/pw/guarded', moved.revision)).toBe(true);
    expect(await client.get('/pw/guarded')).toBeUndefined();
    const absent = await client.putIfModRevision('/pw/guarded', moved.revision, 'v4');
    expect(absent.succeeded).toBe(false);
    expect(absent.current).toBeUndefined();
  });

  it('an error etcd answers with is a CoordinatorError carrying its message', async () => {
    const error = await rejection(client.createIfAbsent('/pw/orphan', 'v', '12345'));
    expect(error.message).toContain(etcd.endpoint);
    expect(error.message).toMatch(/POST \/v3\/kv\/txn failed: etcd said "etcdserver: requested lease not found" \(code 5\)/);
  });
});

describe('EtcdClient failures', () => {
  it('an endpoint that is not an http(s) URL is refused at construction', () => {
    for (const endpoint of ['127.0.0.1:2379', 'ftp://127.0.0.1:2379', '']) {
      expect(() => new EtcdClient(endpoint)).toThrow(InvalidArgumentError);
      expect(() => new EtcdClient(endpoint)).toThrow(/^endpoint must be an http\(s\) URL/);
    }
    expect(() => new EtcdClient('http://127.0.0.1:2379', { timeoutMs: 0 })).toThrow(/options\.timeoutMs must be/);
  });

  it('nothing listening', async () => {
    const closed = await listening(createServer());
    const port = portOf(closed);
    await new Promise((resolve) => closed.close(resolve));
    const error = await rejection(new EtcdClient(`http://127.0.0.1:${port}`).get('/pw/x'));
    expect(error.message).toMatch(new RegExp(`^etcd http://127\\.0\\.0\\.1:${port}: POST /v3/kv/range failed: .*ECONNREFUSED`));
  });

  it('a server that never answers', async () => {
    const held: Socket[] = [];
    const silent = await listening(createServer((socket) => { held.push(socket); }));
    try {
      const error = await rejection(new EtcdClient(`http://127.0.0.1:${portOf(silent)}`, { timeoutMs: 100 }).grantLease(5));
      expect(error.message).toMatch(/POST \/v3\/lease\/grant failed: no answer within 100 ms$/);
    } finally {
      for (const socket of held) socket.destroy();
      silent.close();
    }
  });

  it('answers that are not etcd JSON', async () => {
    const bodies: Record<string, [number, string]> = {
      '/v3/kv/range': [200, 'not json'],
      '/v3/lease/grant': [503, '{"header":{}}'],
      '/v3/lease/keepalive': [200, '[1]'],
    };
    const server = await listening(createHttpServer((request, response) => {
      const [status, body] = bodies[request.url ?? ''] ?? [404, ''];
      request.resume().on('end', () => response.writeHead(status).end(body));
    }));
    try {
      const client = new EtcdClient(`http://127.0.0.1:${portOf(server)}`);
      expect((await rejection(client.get('k'))).message).toMatch(/range failed: HTTP 200, not JSON: "not json"$/);
      expect((await rejection(client.grantLease(5))).message).toMatch(/grant failed: HTTP 503$/);
      expect((await rejection(client.keepAlive('7'))).message).toMatch(/keepalive failed: HTTP 200, not a JSON object: "\[1\]"$/);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
