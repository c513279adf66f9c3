// TLS 1.3 with certificates (test/fixtures/tls): the target's certificate checked by the source, and
// with a CA on the target, the source's client certificate too. Real sockets on 127.0.0.1.
import { randomFillSync } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, readTlsFiles, type PagewireError, type TlsCertificates,
} from '../dist/src/index.js';
import { ROOT, lastJson, sha256File, spawnCli, startReceiver, tempDir, withTimeout } from './helpers.js';

const FIXTURES = join(ROOT, 'test', 'fixtures', 'tls');
const file = (name: string) => join(FIXTURES, name);
const targetCerts = readTlsFiles({ cert: file('target.pem'), key: file('target-key.pem') });
const mutualTargetCerts = readTlsFiles({ cert: file('target.pem'), key: file('target-key.pem'), ca: file('ca.pem') });

async function migrate(targetCertificates: TlsCertificates, sourceCertificates: TlsCertificates) {
  const bytes = 2 * 2 ** 20;
  const raw = Buffer.alloc(bytes);
  randomFillSync(raw);
  const targetBytes = Buffer.alloc(bytes);
  const target = await MigrationTarget.listen({
    image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0,
    tlsCertificates: targetCertificates, handshakeTimeoutMs: 2000,
  });
  const refusals: PagewireError[] = [];
  target.on('refused', (e) => refusals.push(e));
  const source = new MigrationSource({
    region: MemoryRegion.fromMemory(raw), host: '127.0.0.1', port: target.address.port, streams: 2,
    tlsCertificates: sourceCertificates, hooks: { pause: () => {}, resume: () => {} },
  });
  const error = await source.run().then(() => undefined, (e: PagewireError) => e);
  const phase = target.phase;
  if (error) target.stop();
  await target.result.catch(() => undefined);
  return { error, refusals, phase, same: targetBytes.equals(raw) };
}

describe('TLS with certificates', () => {
  it('migrates over TLS 1.3 when the source trusts the target\'s CA (every stream)', async () => {
    const r = await migrate(targetCerts, readTlsFiles({ ca: file('ca.pem') }));
    expect(r.error).toBeUndefined();
    expect(r.same).toBe(true);
  });

  it('refuses a target whose certificate another CA signed, before sending anything', async () => {
    const r = await migrate(targetCerts, readTlsFiles({ ca: file('other-ca.pem') }));
    expect(r.error?.code).toBe('PW_ERR_AUTH');
    expect(r.error?.message).toMatch(/TLS handshake with 127\.0\.0\.1:\d+ failed/);
    expect(r.phase).toBe('listening');
  });

  it('with a CA on the target (mutual TLS), refuses a source without a client certificate and keeps listening', async () => {
    const r = await migrate(mutualTargetCerts, readTlsFiles({ ca: file('ca.pem') }));
    expect(r.error?.code).toMatch(/PW_ERR_AUTH|PW_ERR_CONNECTION/);
    expect(r.refusals[0]?.code).toBe('PW_ERR_AUTH');
    expect(r.phase).toBe('listening');
  });

  it('with mutual TLS, migrates when the source presents a certificate the target\'s CA signed', async () => {
    const r = await migrate(mutualTargetCerts, readTlsFiles({ ca: file('ca.pem'), cert: file('source.pem'), key: file('source-key.pem') }));
    expect(r.error).toBeUndefined();
    expect(r.same).toBe(true);
  });

  it('CLI: send and receive with certificates (mutual TLS); beyond loopback, receive asks for --tls-ca or a key', async () => {
    const tmp = tempDir();
    try {
      const image = join(tmp.dir, 'image.img');
      const out = join(tmp.dir, 'out.img');
      const bytes = Buffer.alloc(2 ** 20);
      randomFillSync(bytes);
      (await import('node:fs')).writeFileSync(image, bytes);
      const receiver = await startReceiver(out, ['--tls-cert', file('target.pem'), '--tls-key', file('target-key.pem'), '--tls-ca', file('ca.pem')]);
      const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', image, '--tls-ca', file('ca.pem'),
        '--tls-cert', file('source.pem'), '--tls-key', file('source-key.pem'), '--json']);
      expect(await withTimeout(sender.exit, 30_000, 'send')).toBe(0);
      expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
      expect(sha256File(out)).toBe(sha256File(image));
      const serverOnly = ['--tls-cert', file('target.pem'), '--tls-key', file('target-key.pem')];
      const open = spawnCli(['receive', '--listen', '0.0.0.0:0', '--out', out, ...serverOnly]);
      expect(await withTimeout(open.exit, 10_000, 'receive without a CA')).toBe(2);
      expect(open.stderr()).toMatch(/--tls-ca/);
      // Client certificates authenticate sources: no key needed. It listens, and is stopped unused.
      const mutual = spawnCli(['receive', '--listen', '0.0.0.0:0', '--out', out, ...serverOnly, '--tls-ca', file('ca.pem')]);
      await mutual.waitForStderr(/listening on/);
      mutual.child.kill('SIGTERM');
      expect(await withTimeout(mutual.exit, 10_000, 'receive with a CA')).not.toBe(0);
    } finally {
      tmp.cleanup();
    }
  });
});
