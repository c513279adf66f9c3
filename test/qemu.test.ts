// A real QEMU guest (the project's multiboot guest, under TCG) moved by `pagewire qemu send` and
// `pagewire qemu receive`: its RAM by pagewire, its devices by QEMU. Checked by bytes (the target's RAM,
// hashed before it runs, equals the source's, which stays stopped at the pause point) and by the
// guest's own counter, which continues on the target from where it stopped. CI installs QEMU
// (.ci/run sets PAGEWIRE_REQUIRE_QEMU); elsewhere the tests are skipped when it is missing.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { guestCommand, guestStatus, qemuAvailable, startQemu, untilGuest, type RunningGuest } from '../dist/bench/qemu-guest.js';
import { lastJson, spawnCli, tempDir, withTimeout } from './helpers.js';

const hasQemu = qemuAvailable();
if (!hasQemu && process.env.PAGEWIRE_REQUIRE_QEMU) throw new Error(`PAGEWIRE_REQUIRE_QEMU is set but ${'qemu-system-x86_64'} is missing`);

const tmp = tempDir('pagewire-qemu-');
const shm = join('/dev/shm', `pagewire-qemu-test-${process.pid}`);
const MIB = 64;
// MB/s the guest dirties once its first walk has filled its RAM.
const RATE = 50;
const running: RunningGuest[] = [];
const targetPids: number[] = [];

afterEach(async () => {
  for (const guest of running.splice(0)) await guest.kill();
  for (const pid of targetPids.splice(0)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone already */ }
  }
});
afterAll(() => {
  tmp.cleanup();
  for (const name of readdirSync('/dev/shm')) if (name.includes(`pagewire-qemu-test-${process.pid}`)) rmSync(join('/dev/shm', name), { force: true });
});

/** A running source guest on `ramPath`, past its first full walk over its RAM. */
async function sourceGuest(name: string, extra: string[] = []): Promise<{ guest: RunningGuest; ramPath: string }> {
  const ramPath = `${shm}-${name}.img`;
  const guest = await startQemu(guestCommand(MIB, RATE, ramPath, extra), join(tmp.dir, `${name}.qmp`));
  running.push(guest);
  await untilGuest(ramPath, (s) => s.passes >= 1);
  return { guest, ramPath };
}

/** `qemu receive` into outPath, its QEMU started with the guest's command line on the image; resolves once listening. */
async function receiver(outPath: string, extra: string[] = []) {
  const receive = spawnCli(['qemu', 'receive', '--listen', '127.0.0.1:0', '--out', outPath, '--json', '--sha256', '--',
    ...guestCommand(MIB, RATE, '@RAM@', extra)]);
  const port = Number((await receive.waitForStderr(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  return { receive, port };
}

function send(guest: { guest: RunningGuest; ramPath: string }, port: number) {
  return spawnCli(['qemu', 'send', '--qmp', guest.guest.qmpPath, '--ram', guest.ramPath, '--connect', `127.0.0.1:${port}`,
    '--json', '--sha256']);
}

/** One `qemu receive` into outPath and one `qemu send` from the source guest: both exit codes and JSON lines. */
async function migrate(source: { guest: RunningGuest; ramPath: string }, outPath: string, label: string) {
  const { receive, port } = await receiver(outPath);
  const sender = send(source, port);
  const sendCode = await withTimeout(sender.exit, 120_000, `qemu send ${label}`);
  const receiveCode = await withTimeout(receive.exit, 120_000, `qemu receive ${label}`);
  const sent = lastJson(sender.stdout());
  const received = lastJson(receive.stdout());
  if (typeof received.qemuPid === 'number') targetPids.push(received.qemuPid);
  return { sendCode, receiveCode, sent, received };
}

describe.skipIf(!hasQemu)('a running QEMU guest moved by pagewire qemu send / receive', () => {
  it('moves the guest: the target RAM equals the source at the pause point and the guest counts on from there', async () => {
    const source = await sourceGuest('there');
    // The source QEMU's monitor is the CLI's for the migration.
    source.guest.qmp.close();
    const outPath = `${shm}-there-out.img`;
    const { sendCode, receiveCode, sent, received } = await migrate(source, outPath, 'there');
    expect(sendCode).toBe(0);
    expect(receiveCode).toBe(0);
    expect(sent.status).toBe('completed');
    expect(received.status).toBe('completed');
    // The source stays stopped (handed over): its RAM file is the pause point. The target hashed its
    // image after the commit, before `cont`.
    expect(received.sha256).toBe(sent.sha256);
    expect(received.digest).toBe(sent.digest);
    expect(sent.deviceStateBytes as number).toBeGreaterThan(0);
    const atPause = guestStatus(source.ramPath)!;
    // The guest runs on the target, counting on from the pause point's value.
    const after = await untilGuest(outPath, (s) => s.counter > atPause.counter + 1000n);
    expect(after.counter).toBeGreaterThan(atPause.counter);
    expect(guestStatus(source.ramPath)!.counter).toBe(atPause.counter);
    expect(received.resumedAt as number).toBeGreaterThan(sent.stoppedAt as number);
    expect(readdirSync('/dev/shm').filter((f) => f.includes('there-out.img.pagewire'))).toEqual([]);
  });

  it('moves the guest there and back: the QEMU a receive started is a source like any other', async () => {
    let source = await sourceGuest('back');
    source.guest.qmp.close();
    for (const leg of ['there', 'back']) {
      const outPath = `${shm}-back-${leg}.img`;
      const { sendCode, receiveCode, sent, received } = await migrate(source, outPath, leg);
      expect(sendCode).toBe(0);
      expect(receiveCode).toBe(0);
      expect(received.sha256).toBe(sent.sha256);
      const atPause = guestStatus(source.ramPath)!;
      await untilGuest(outPath, (s) => s.counter > atPause.counter + 1000n);
      // The next leg moves the guest from the QEMU this receive started, through the monitor it named.
      source = { guest: { ...source.guest, qmpPath: received.qmp as string }, ramPath: outPath };
    }
  });

  it('a target QEMU that cannot take the device state fails the migration before READY: the source guest runs on, --out is untouched', async () => {
    // The source has a device the target's machine lacks: QEMU's incoming migration refuses its state.
    const source = await sourceGuest('refused', ['-device', 'virtio-rng-pci']);
    source.guest.qmp.close();
    const outPath = `${shm}-refused-out.img`;
    const { sendCode, receiveCode, sent, received } = await migrate(source, outPath, 'refused');
    expect(sendCode).toBe(1);
    expect(receiveCode).toBe(1);
    expect(sent.errorCode).toBe('PW_ERR_PEER');
    expect(received.errorCode).toBe('PW_ERR_HOOK');
    // Resumed with `cont`: the source guest counts on.
    const resumedFrom = guestStatus(source.ramPath)!.counter;
    await untilGuest(source.ramPath, (s) => s.counter > resumedFrom + 1000n);
    expect(existsSync(outPath)).toBe(false);
    expect(readdirSync('/dev/shm').filter((f) => f.includes('refused-out.img.pagewire'))).toEqual([]);
  });
});
