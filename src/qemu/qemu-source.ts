// A running QEMU as a migration source. Its RAM is a shared file (memory-backend-file,share=on) that
// pagewire maps and moves; QEMU's own migration, with x-ignore-shared, carries only the device state.
// The hooks: pause is QMP `stop`; deviceState is QMP `migrate` into a Unix socket of ours, streamed as
// QEMU writes it; resume (a failure before READY) is QMP `cont`, which QEMU takes after a completed
// device-state migration too.
import { readdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DirtyTracker } from '../memory/dirty-tracker.js';
import type { MemoryRegion } from '../memory/region.js';
import { SoftDirtyTracker, softDirtyAvailable } from '../memory/soft-dirty-tracker.js';
import type { SourceHooks } from '../migration/source.js';
import { QmpClient, QmpError } from './qmp-client.js';
import { migrationEnded, wallClockMs } from './qemu-migration.js';

export class QemuSource {
  /** When `stop` returned, in ms since the epoch (the outage starts here). */
  stoppedAt = 0;

  private constructor(private readonly qmp: QmpClient, private readonly maxBandwidth: unknown) {}

  /**
   * Connects to the monitor and sets QEMU's migration up for device state only: x-ignore-shared skips
   * the shared RAM, events report the end, and the bandwidth cap (QEMU's default throttles) is lifted.
   */
  static async attach(qmpPath: string): Promise<QemuSource> {
    const qmp = await QmpClient.connect(qmpPath);
    try {
      const parameters = await qmp.execute('query-migrate-parameters') as { 'max-bandwidth'?: number };
      await qmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'x-ignore-shared', state: true }, { capability: 'events', state: true }],
      });
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': Number.MAX_SAFE_INTEGER });
      return new QemuSource(qmp, parameters['max-bandwidth']);
    } catch (error) {
      qmp.close();
      throw error;
    }
  }

  /**
   * The kernel's soft-dirty log of the QEMU process that maps `ramPath`, where the kernel keeps one;
   * otherwise undefined, and the source hashes the RAM (said once, as a process warning).
   */
  static tracker(ramPath: string, region: MemoryRegion): DirtyTracker | undefined {
    // Without the bits, forMapping says so once and returns undefined before it looks at the process.
    if (!softDirtyAvailable()) return SoftDirtyTracker.forMapping(0, ramPath, region);
    // A page written back and reclaimed, or swapped out, may lose its bit: only RAM that stays put is trusted to it.
    if (statfsSync(ramPath).type !== TMPFS_MAGIC || swapInUse()) {
      process.emitWarning(`${ramPath} is not in tmpfs, or swap is on: its pages may lose their soft-dirty bits, so they are tracked by hashing`,
        { code: 'PW_SOFT_DIRTY_UNSAFE' });
      return undefined;
    }
    const pids = processesMapping(ramPath);
    if (pids.length !== 1) throw new QmpError(`${pids.length} processes map ${ramPath}; soft-dirty tracking needs exactly the one QEMU`);
    return SoftDirtyTracker.forMapping(pids[0]!, ramPath, region);
  }

  get hooks(): Required<Pick<SourceHooks, 'pause' | 'resume' | 'deviceState'>> {
    return {
      pause: async () => {
        await this.qmp.execute('stop');
        this.stoppedAt = wallClockMs();
      },
      resume: async () => {
        await this.qmp.execute('cont');
      },
      deviceState: (signal) => this.deviceState(signal),
    };
  }

  /**
   * Gives QEMU's migration settings back (x-ignore-shared left on would make a later plain QEMU
   * migration skip the RAM) and leaves the monitor.
   */
  async close(): Promise<void> {
    try {
      await this.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: false }] });
      if (typeof this.maxBandwidth === 'number') await this.qmp.execute('migrate-set-parameters', { 'max-bandwidth': this.maxBandwidth });
    } catch {
      // QEMU gone or a migration still running: nothing more to put back.
    }
    this.qmp.close();
  }

  /**
   * QEMU's device-only migration into a socket of ours, yielded as it comes. On `signal` (the migration
   * failed, or gave up on the hook) QEMU's migration is cancelled, and the stream ends once QEMU says so,
   * so that a `cont` that follows finds no migration running.
   */
  private async *deviceState(signal: AbortSignal): AsyncGenerator<Buffer> {
    const path = join(tmpdir(), `pagewire-qemu-${process.pid}-${Date.now()}.sock`);
    const server = createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, resolve));
    let socket: Socket | undefined;
    const cancel = () => {
      socket?.destroy();
      void this.qmp.execute('migrate_cancel').catch(() => {});
    };
    signal.addEventListener('abort', cancel, { once: true });
    try {
      const connected = new Promise<Socket>((resolve) => server.once('connection', resolve));
      const ended = migrationEnded(this.qmp);
      await this.qmp.execute('migrate', { uri: `unix:${path}` });
      socket = await Promise.race([connected, ended.then((status) => {
        throw new QmpError(`QEMU's device-state migration ended (${status}) before it connected`);
      })]);
      if (signal.aborted) cancel();
      try {
        for await (const chunk of socket) yield chunk as Buffer;
      } catch (error) {
        if (!signal.aborted) throw error;
      }
      const status = await ended;
      if (status !== 'completed') throw new QmpError(`QEMU's device-state migration ended ${status}`);
    } finally {
      signal.removeEventListener('abort', cancel);
      socket?.destroy();
      server.close();
      rmSync(path, { force: true });
    }
  }
}

const TMPFS_MAGIC = 0x01021994;

/** Whether any swap area is on (/proc/swaps lists more than its header). */
function swapInUse(): boolean {
  return readFileSync('/proc/swaps', 'utf8').trim().split('\n').length > 1;
}

/** The processes with `path` mapped, from /proc/PID/maps. */
function processesMapping(path: string): number[] {
  return readdirSync('/proc').filter((name) => /^\d+$/.test(name)).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/maps`, 'utf8').includes(` ${path}\n`);
    } catch {
      return false;
    }
  }).map(Number).filter((pid) => pid !== process.pid);
}
