// A running QEMU as a migration source. Its RAM is a shared file (memory-backend-file,share=on) that
// pagewire maps and moves; QEMU's own migration, with x-ignore-shared, carries only the device state.
// The hooks: pause is QMP `stop`; deviceState is QMP `migrate` into a Unix socket of ours, streamed as
// QEMU writes it; resume (a failure before READY) is QMP `cont`, which QEMU takes after a completed
// device-state migration too.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
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

  private constructor(private readonly qmp: QmpClient) {}

  /**
   * Connects to the monitor and sets QEMU's migration up for device state only: x-ignore-shared skips
   * the shared RAM, events report the end, and the bandwidth cap (QEMU's default throttles) is lifted.
   */
  static async attach(qmpPath: string): Promise<QemuSource> {
    const qmp = await QmpClient.connect(qmpPath);
    try {
      await qmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'x-ignore-shared', state: true }, { capability: 'events', state: true }],
      });
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': Number.MAX_SAFE_INTEGER });
      return new QemuSource(qmp);
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
      deviceState: () => this.deviceState(),
    };
  }

  close(): void {
    this.qmp.close();
  }

  /** QEMU's device-only migration into a socket of ours, yielded as it comes. */
  private async *deviceState(): AsyncGenerator<Buffer> {
    const path = join(tmpdir(), `pagewire-qemu-${process.pid}-${Date.now()}.sock`);
    const server = createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, resolve));
    try {
      const connected = new Promise<Socket>((resolve) => server.once('connection', resolve));
      const ended = migrationEnded(this.qmp);
      await this.qmp.execute('migrate', { uri: `unix:${path}` });
      const socket = await Promise.race([connected, ended.then((status) => {
        throw new QmpError(`QEMU's device-state migration ended (${status}) before it connected`);
      })]);
      for await (const chunk of socket) yield chunk as Buffer;
      const status = await ended;
      if (status !== 'completed') throw new QmpError(`QEMU's device-state migration ended ${status}`);
    } finally {
      server.close();
      rmSync(path, { force: true });
    }
  }
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
