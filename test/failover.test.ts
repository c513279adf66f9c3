// Failover through the CLI, real processes on 127.0.0.1: `pagewire replicate` with its writer and
// `pagewire standby`, the primary killed with SIGKILL at random moments (mid-capture, mid-send, mid-ack),
// or the standby killed, or the link stalled. Every activation must hold exactly one committed epoch, and
// every released counter must be in it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileDigest } from '../dist/src/cli/file-digest.js';
import { FaultProxy } from './fault-proxy.js';
import { spawnCli, tempDir } from './helpers.js';
import { counterOf, epochLines, freshImage, jsonLines, releasedValues, startStandby, untilStdout } from './replication-helpers.js';

const IMAGE_BYTES = 16 << 20;
const WORKLOAD = 'rate=100MB/s,hot=0.05';

/** A seeded generator, so that a failing kill moment can be found again. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** The activation holds exactly one committed epoch, and every released counter. */
function checkActivation(activation: Record<string, unknown>, out: string, primaryStdout: string, released: string): void {
  expect(activation.status).toBe('activated');
  expect(fileDigest(out, 4096).digest).toBe(activation.digest);
  const logged = epochLines(primaryStdout);
  expect(logged.length).toBeGreaterThan(0);
  const last = logged[logged.length - 1]!;
  // One epoch at most is in flight: its ACK may have left the standby before the primary died.
  expect([last.epoch, last.epoch + 1]).toContain(activation.epoch);
  const same = logged.find((line) => line.epoch === activation.epoch);
  if (same) expect(same.digest).toBe(activation.digest);
  const counter = counterOf(out);
  for (const value of releasedValues(released)) expect(counter).toBeGreaterThanOrEqual(value);
}

describe('failover through the CLI', () => {
  let dir: ReturnType<typeof tempDir>;
  beforeAll(() => { dir = tempDir(); });
  afterAll(() => dir.cleanup());

  it('activates exactly one committed epoch after a SIGKILL of the primary at 20 random moments', async () => {
    const random = seeded(20261203);
    for (let kill = 0; kill < 20; kill++) {
      const image = join(dir.dir, `primary-${kill}.img`);
      const out = join(dir.dir, `standby-${kill}.img`);
      const released = join(dir.dir, `released-${kill}.txt`);
      freshImage(image, IMAGE_BYTES);
      const epochMs = 10 + Math.floor(random() * 40);
      const standby = await startStandby(out, ['--failover-timeout', '300']);
      const primary = spawnCli(['replicate', '--connect', `127.0.0.1:${standby.port}`, '--image', image, '--workload', `${WORKLOAD},seed=${kill + 1}`,
        '--epoch-ms', String(epochMs), '--released', released, '--json']);
      const epochs = 1 + Math.floor(random() * 12);
      await untilStdout(primary, (text) => epochLines(text).length >= epochs, `${epochs} committed epochs`);
      // Anywhere within the next epoch: while capturing, sending, or waiting for the ACK.
      await new Promise((resolve) => setTimeout(resolve, random() * epochMs));
      primary.child.kill('SIGKILL');
      await primary.exit;
      expect(await standby.exit, standby.stderr()).toBe(0);
      const activation = JSON.parse(standby.stdout().trim().split('\n').pop()!) as Record<string, unknown>;
      checkActivation(activation, out, primary.stdout(), released);
    }
  }, 180_000);

  it('keeps the workload running, unprotected, when the standby is killed; nothing more is released', async () => {
    const image = join(dir.dir, 'lonely.img');
    const released = join(dir.dir, 'lonely-released.txt');
    freshImage(image, IMAGE_BYTES);
    const standby = await startStandby(join(dir.dir, 'lonely-out.img'));
    const primary = spawnCli(['replicate', '--connect', `127.0.0.1:${standby.port}`, '--image', image, '--workload', WORKLOAD,
      '--released', released, '--json']);
    await untilStdout(primary, (text) => epochLines(text).length >= 3, 'three committed epochs');
    standby.child.kill('SIGKILL');
    await untilStdout(primary, (text) => jsonLines(text).some((line) => line.event === 'unprotected'), 'the unprotected report');
    const releasedThen = releasedValues(released);
    const lastReleased = releasedThen[releasedThen.length - 1]!;
    // The workload runs on: its counter in the image passes what was released, by far.
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (counterOf(image) > lastReleased + 10_000) { clearInterval(timer); resolve(); }
      }, 20);
    });
    primary.child.kill('SIGTERM');
    expect(await primary.exit).toBe(0);
    expect(releasedValues(released)).toEqual(releasedThen);
    const lines = jsonLines(primary.stdout());
    expect(lines[lines.length - 1]).toMatchObject({ status: 'stopped' });
    expect(epochLines(primary.stdout()).length).toBe(releasedThen.length);
  }, 60_000);

  it('with --release-unprotected, releases on without a standby, each such line marked', async () => {
    const image = join(dir.dir, 'told.img');
    const released = join(dir.dir, 'told-released.txt');
    freshImage(image, IMAGE_BYTES);
    const standby = await startStandby(join(dir.dir, 'told-out.img'));
    const primary = spawnCli(['replicate', '--connect', `127.0.0.1:${standby.port}`, '--image', image, '--workload', WORKLOAD,
      '--released', released, '--release-unprotected', '--json']);
    await untilStdout(primary, (text) => epochLines(text).length >= 3, 'three committed epochs');
    standby.child.kill('SIGKILL');
    await untilStdout(primary, (text) => jsonLines(text).filter((line) => line.unprotected === true).length >= 3, 'three unprotected releases');
    primary.child.kill('SIGTERM');
    expect(await primary.exit).toBe(0);
    const lines = epochLines(primary.stdout());
    expect(releasedValues(released)).toEqual(lines.map((line) => line.counter));
    const firstUnprotected = lines.findIndex((line) => line.unprotected);
    expect(lines.slice(firstUnprotected).every((line) => line.unprotected)).toBe(true);
  }, 60_000);

  it('without etcd, a stalled link activates the standby, and the primary has released nothing it lacks', async () => {
    const image = join(dir.dir, 'stalled.img');
    const out = join(dir.dir, 'stalled-out.img');
    const released = join(dir.dir, 'stalled-released.txt');
    freshImage(image, IMAGE_BYTES);
    const standby = await startStandby(out, ['--failover-timeout', '400']);
    let stall = false;
    const proxy = await FaultProxy.start(standby.port, { fault: () => (stall ? 'stall' : undefined) });
    try {
      const primary = spawnCli(['replicate', '--connect', `127.0.0.1:${proxy.port}`, '--image', image, '--workload', WORKLOAD,
        '--released', released, '--failover-timeout', '400', '--json']);
      await untilStdout(primary, (text) => epochLines(text).length >= 5, 'five committed epochs');
      stall = true;
      expect(await standby.exit, standby.stderr()).toBe(0);
      await untilStdout(primary, (text) => jsonLines(text).some((line) => line.event === 'unprotected'), 'the unprotected report');
      primary.child.kill('SIGTERM');
      expect(await primary.exit).toBe(0);
      // Two copies ran (the CLI warned of it), but no client saw a state the standby lacks.
      const counter = counterOf(out);
      for (const value of releasedValues(released)) expect(counter).toBeGreaterThanOrEqual(value);
      expect(primary.stderr()).toMatch(/without --etcd/);
    } finally {
      proxy.close();
    }
  }, 60_000);
});
