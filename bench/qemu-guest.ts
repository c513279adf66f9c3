// The project's test guest (examples/qemu/guest) under QEMU, for the QEMU benchmark and tests: its
// command line with RAM in a shared file, starting it with a monitor, and reading its status page (a
// counter of pages written, at 2 MiB) straight from the RAM file.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { QmpClient } from '../src/qemu/qmp-client.js';

export const GUEST = fileURLToPath(new URL('../../examples/qemu/guest/guest.elf', import.meta.url));
export const QEMU = 'qemu-system-x86_64';
/** The guest's status page (examples/qemu/guest/README.md). */
const STATUS = 0x200000;
const MAGIC = 0x50574753;

export function qemuAvailable(): boolean {
  return spawnSync(QEMU, ['--version']).status === 0;
}

/** QEMU's command line for the guest: `mib` of RAM in `ramPath` (share=on), dirtying `rateMBps` (0: flat out). */
export function guestCommand(mib: number, rateMBps: number, ramPath: string, extra: string[] = []): string[] {
  return [QEMU, '-machine', 'pc,accel=tcg', '-m', `${mib}M`, '-nographic', '-nodefaults', '-no-user-config',
    '-object', `memory-backend-file,id=ram0,size=${mib}M,mem-path=${ramPath},share=on`, '-machine', 'memory-backend=ram0',
    '-kernel', GUEST, '-append', `rate=${rateMBps}`, ...extra];
}

export interface GuestStatus {
  /** Pages written since boot. */
  counter: bigint;
  /** Full walks over the span done: after the first, all of RAM holds data. */
  passes: number;
}

/** The guest's status page, read from its RAM file; undefined before it has booted. */
export function guestStatus(ramPath: string): GuestStatus | undefined {
  const fd = openSync(ramPath, 'r');
  const page = Buffer.alloc(32);
  try {
    readSync(fd, page, 0, page.length, STATUS);
  } finally {
    closeSync(fd);
  }
  if (page.readUInt32LE(8) !== MAGIC) return undefined;
  return { counter: page.readBigUInt64LE(0), passes: page.readUInt32LE(0x18) };
}

/** Waits until the guest's status satisfies `ready`: a guest's progress, read every few milliseconds. */
export async function untilGuest(ramPath: string, ready: (status: GuestStatus) => boolean, timeoutMs = 120_000): Promise<GuestStatus> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const status = guestStatus(ramPath);
    if (status && ready(status)) return status;
    if (performance.now() > deadline) throw new Error(`the guest in ${ramPath} did not get there within ${timeoutMs} ms (${JSON.stringify(status, (_, v) => (typeof v === 'bigint' ? v.toString() : v))})`);
    await delay(10);
  }
}

export interface RunningGuest {
  child: ChildProcess;
  qmpPath: string;
  qmp: QmpClient;
  /** Kills QEMU and waits until it has gone. */
  kill(): Promise<void>;
}

/** Starts QEMU with `command` plus a monitor at qmpPath; resolves once the monitor answers. */
export async function startQemu(command: string[], qmpPath: string): Promise<RunningGuest> {
  rmSync(qmpPath, { force: true });
  const child = spawn(command[0]!, [...command.slice(1), '-qmp', `unix:${qmpPath},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connectWhenListening(qmpPath, 30_000, () => child.exitCode !== null);
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`QEMU did not start: ${stderr || (error as Error).message}`);
  }
  return {
    child, qmpPath, qmp,
    kill: async () => {
      qmp.close();
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
      rmSync(qmpPath, { force: true });
    },
  };
}
