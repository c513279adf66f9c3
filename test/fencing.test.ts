// No split brain, with a real etcd on 127.0.0.1: a stalled link never makes two running copies, a
// frozen primary that comes back is fenced by its lost lease, a returning old primary is refused by
// the coordinator, and the old primary's host is then re-protected without a full copy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileDigest } from '../dist/src/cli/file-digest.js';
import { etcdAvailable, startEtcd, type RunningEtcd } from './etcd-server.js';
import { FaultProxy } from './fault-proxy.js';
import { spawnCli, tempDir } from './helpers.js';
import { counterOf, epochLines, freshImage, jsonLines, releasedValues, startStandby, untilStdout } from './replication-helpers.js';

const IMAGE_BYTES = 16 << 20;
const PAGES = IMAGE_BYTES / 4096;
const WORKLOAD = 'rate=100MB/s,hot=0.05';

/** Pages (of 4 KiB) whose contents differ between two images of the same size. */
function differingPages(a: string, b: string): number {
  const left = readFileSync(a);
  const right = readFileSync(b);
  let count = 0;
  for (let at = 0; at < left.length; at += 4096) if (!left.subarray(at, at + 4096).equals(right.subarray(at, at + 4096))) count += 1;
  return count;
}

describe.skipIf(!etcdAvailable())('fencing through etcd', () => {
  let dir: ReturnType<typeof tempDir>;
  let etcd: RunningEtcd;
  beforeAll(async () => {
    dir = tempDir();
    etcd = await startEtcd();
  }, 30_000);
  afterAll(async () => {
    await etcd?.stop();
    dir.cleanup();
  });

  it('a stalled link leaves exactly one running copy: the standby sees the lease alive and waits', async () => {
    const coordinator = ['--etcd', etcd.endpoint, '--name', 'stalled'];
    const image = join(dir.dir, 'stalled.img');
    const out = join(dir.dir, 'stalled-out.img');
    const released = join(dir.dir, 'stalled-released.txt');
    freshImage(image, IMAGE_BYTES);
    const standby = await startStandby(out, ['--failover-timeout', '400', ...coordinator]);
    let stall = false;
    const proxy = await FaultProxy.start(standby.port, { fault: () => (stall ? 'stall' : undefined) });
    try {
      const primary = spawnCli(['replicate', '--connect', `127.0.0.1:${proxy.port}`, '--image', image, '--workload', WORKLOAD,
        '--released', released, '--failover-timeout', '400', '--json', ...coordinator]);
      await untilStdout(primary, (text) => epochLines(text).length >= 5, 'five committed epochs');
      stall = true;
      await standby.waitForStderr(/etcd shows its lease alive: not activating/);
      await untilStdout(primary, (text) => jsonLines(text).some((line) => line.event === 'unprotected'), 'the unprotected report');
      // The standby still runs nothing, and the primary's workload goes on past what it released.
      expect(standby.child.exitCode).toBeNull();
      const releasedThen = releasedValues(released);
      await new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          if (counterOf(image) > releasedThen[releasedThen.length - 1]! + 10_000) { clearInterval(timer); resolve(); }
        }, 20);
      });
      expect(standby.child.exitCode).toBeNull();
      expect(releasedValues(released)).toEqual(releasedThen);
      // The primary stops for good: its lease lapses, and only then does the standby take over.
      primary.child.kill('SIGTERM');
      expect(await primary.exit).toBe(0);
      expect(await standby.exit, standby.stderr()).toBe(0);
      const activation = JSON.parse(standby.stdout().trim().split('\n').pop()!) as Record<string, unknown>;
      const lines = epochLines(primary.stdout());
      expect(activation.token).toBeGreaterThan(lines[0]!.token);
      expect(fileDigest(out, 4096).digest).toBe(activation.digest);
      for (const value of releasedValues(released)) expect(counterOf(out)).toBeGreaterThanOrEqual(value);
    } finally {
      proxy.close();
    }
  }, 60_000);

  it('fences a frozen primary, refuses it when it returns, and re-protects its host without a full copy', async () => {
    const coordinator = ['--etcd', etcd.endpoint, '--name', 'frozen'];
    const imageA = join(dir.dir, 'a.img');
    const outB = join(dir.dir, 'b.img');
    // Every page data: a full copy would be every page.
    writeFileSync(imageA, randomBytes(IMAGE_BYTES));
    const standbyB = await startStandby(outB, coordinator);
    const primaryA = spawnCli(['replicate', '--connect', `127.0.0.1:${standbyB.port}`, '--image', imageA, '--workload', WORKLOAD,
      '--json', ...coordinator]);
    await untilStdout(primaryA, (text) => epochLines(text).length >= 10, 'ten committed epochs');
    const tokenA = epochLines(primaryA.stdout())[0]!.token;
    // A host that hangs: no heartbeat, no lease renewal, until it comes back.
    primaryA.child.kill('SIGSTOP');
    expect(await standbyB.exit, standbyB.stderr()).toBe(0);
    const activation = JSON.parse(standbyB.stdout().trim().split('\n').pop()!) as Record<string, unknown>;
    expect(activation.token).toBeGreaterThan(tokenA);
    expect(fileDigest(outB, 4096).digest).toBe(activation.digest);
    primaryA.child.kill('SIGCONT');
    // Back, it finds its lease gone before it commits anything more: it stops its workload and says why.
    expect(await primaryA.exit, primaryA.stderr()).toBe(1);
    const fenced = jsonLines(primaryA.stdout()).pop()!;
    expect(fenced).toMatchObject({ status: 'fenced', errorCode: 'PW_ERR_FENCED' });

    // The old primary started again on its image: refused, B's copy holds the workload.
    const refused = spawnCli(['replicate', '--connect', '127.0.0.1:9', '--image', imageA, '--json', ...coordinator]);
    expect(await refused.exit).toBe(1);
    expect(jsonLines(refused.stdout()).pop()).toMatchObject({ status: 'fenced', errorCode: 'PW_ERR_FENCED' });
    expect(refused.stderr()).toMatch(/held by .*b\.img/);

    // Re-protect: A's host becomes B's standby, from the image it already has. Only the pages where the
    // two images differ (what A wrote after the epoch B took over) cross the link.
    // How many differ depends on how long A wrote on after it was let go (longer on a loaded machine):
    // what matters is that the sync sends exactly those, not the image.
    const differing = differingPages(imageA, outB);
    expect(differing).toBeLessThan(PAGES);
    const standbyA = await startStandby(imageA, coordinator);
    const primaryB = spawnCli(['replicate', '--connect', `127.0.0.1:${standbyA.port}`, '--image', outB, '--json', ...coordinator]);
    await untilStdout(primaryB, (text) => epochLines(text).length >= 3, 'three committed epochs from B');
    const protectedLine = jsonLines(primaryB.stdout()).find((line) => line.event === 'protected')!;
    expect(protectedLine.syncedPages).toBe(differing);
    expect(epochLines(primaryB.stdout())[0]!.token).toBeGreaterThan(activation.token as number);
    primaryB.child.kill('SIGKILL');
    expect(await standbyA.exit, standbyA.stderr()).toBe(0);
    const again = JSON.parse(standbyA.stdout().trim().split('\n').pop()!) as Record<string, unknown>;
    expect(fileDigest(imageA, 4096).digest).toBe(again.digest);
  }, 90_000);
});
