// A QEMU started on the image a migration target receives, so that after GO only `cont` is left. It is
// started as soon as the image file exists (paused: -S, waiting for its device state: -incoming defer),
// on the image's temporary name, which the commit renames into place under the running QEMU. QEMU does
// not touch the RAM file until `cont`; the pages keep arriving under it. prepare() loads the device
// state (migrate-incoming from a socket pagewire feeds), resume() is `cont`, discard() kills it.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { QmpClient, QmpError } from './qmp-client.js';
import { migrationEnded, wallClockMs } from './qemu-migration.js';

/** Where the command line names the RAM file: replaced by the image's path. */
export const RAM_PLACEHOLDER = '@RAM@';
/** How long a starting QEMU may take to open its monitor. */
const MONITOR_WAIT_MS = 30_000;

export class QemuTarget {
  /** When `cont` returned, in ms since the epoch (the outage ends here). */
  resumedAt = 0;
  private readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcess, private readonly qmp: QmpClient, readonly qmpPath: string) {
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /**
   * Starts `command` (QEMU and its arguments, `@RAM@` where the RAM file goes) on `ramPath`, paused and
   * waiting for its device state, detached so it outlives this process; its output goes to `logPath`,
   * its monitor listens at `qmpPath` (for the operator, once this side has released it). `signal` kills
   * it while it starts.
   */
  static async start(command: string[], ramPath: string, logPath: string,
    qmpPath = join(tmpdir(), `pagewire-qemu-target-${process.pid}-${Date.now()}.qmp`), signal?: AbortSignal): Promise<QemuTarget> {
    if (command.length === 0) throw new InvalidArgumentError('give the QEMU command line after --');
    if (!command.some((arg) => arg.includes(RAM_PLACEHOLDER))) {
      throw new InvalidArgumentError(`the QEMU command line must name its RAM file as ${RAM_PLACEHOLDER} (mem-path=${RAM_PLACEHOLDER})`);
    }
    const args = [...command.slice(1).map((arg) => arg.replaceAll(RAM_PLACEHOLDER, ramPath)),
      '-S', '-incoming', 'defer', '-qmp', `unix:${qmpPath},server=on,wait=off`];
    const log = openSync(logPath, 'a');
    let child: ChildProcess;
    try {
      child = spawn(command[0]!, args, { detached: true, stdio: ['ignore', log, log] });
    } finally {
      closeSync(log);
    }
    const failedToStart = new Promise<never>((_, reject) => {
      child.once('error', (error) => reject(new QmpError(`cannot start ${command[0]}: ${error.message}`, { cause: error })));
      child.once('exit', (code, signal) => reject(new QmpError(`${command[0]} exited (${signal ?? code}) as it started; see ${logPath}`)));
    });
    failedToStart.catch(() => {});
    // A migration that fails while QEMU starts kills it there and then.
    const kill = () => child.kill('SIGKILL');
    signal?.addEventListener('abort', kill, { once: true });
    try {
      const qmp = await Promise.race([QmpClient.connectWhenListening(qmpPath, MONITOR_WAIT_MS, () => child.exitCode !== null), failedToStart]);
      await qmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'x-ignore-shared', state: true }, { capability: 'events', state: true }],
      });
      child.unref();
      return new QemuTarget(child, qmp, qmpPath);
    } catch (error) {
      child.kill('SIGKILL');
      rmSync(qmpPath, { force: true });
      throw error;
    } finally {
      signal?.removeEventListener('abort', kill);
    }
  }

  /** Loads the device state QEMU's source side wrote; resolves once QEMU has taken all of it (still paused). */
  async loadDeviceState(state: Buffer): Promise<void> {
    const path = join(tmpdir(), `pagewire-qemu-incoming-${process.pid}-${Date.now()}.sock`);
    try {
      const ended = migrationEnded(this.qmp);
      await this.qmp.execute('migrate-incoming', { uri: `unix:${path}` });
      await new Promise<void>((resolve, reject) => {
        const socket = connect(path, () => socket.end(state, () => resolve()));
        socket.once('error', (error) => reject(new QmpError(`cannot hand QEMU its device state: ${error.message}`, { cause: error })));
      });
      const status = await ended;
      if (status !== 'completed') throw new QmpError(`QEMU's incoming migration of the device state ended ${status}`);
      // This QEMU may be migrated later by QEMU itself: it must not skip its RAM then.
      await this.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: false }] });
    } finally {
      rmSync(path, { force: true });
    }
  }

  async resume(): Promise<void> {
    await this.qmp.execute('cont');
    this.resumedAt = wallClockMs();
  }

  /** Leaves QEMU running on its own. */
  release(): void {
    this.qmp.close();
  }

  /** Kills QEMU (it never ran the guest) and waits until it has gone. */
  async discard(): Promise<void> {
    this.qmp.close();
    this.child.kill('SIGKILL');
    await this.exited;
    rmSync(this.qmpPath, { force: true });
  }
}
