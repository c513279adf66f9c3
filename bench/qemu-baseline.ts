// QEMU's own live migration of the bench image, as a baseline for bench/migrate.ts: a paused guest whose
// RAM is the image file is migrated between two local QEMUs over 127.0.0.1 into a target whose RAM is a
// new file on the same storage as pagewire's --out, and QEMU's own figures (total time, downtime, setup
// time, RAM bytes sent) are reported. bench/shaped-link.ts runs the two QEMUs in network namespaces of its
// own instead, the target listening on its end of a shaped link. runQemuToFile is QEMU's way of saving a
// snapshot, for bench/snapshot.ts: the same paused guest migrated into a file (`exec:cat > FILE`). QEMU is
// optional: where qemu-system-x86_64 is not on PATH (as in CI) the result says so instead of failing.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, rm, stat } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface QemuBaselineOptions {
  /** A file of at least sizeBytes bytes; QEMU maps it copy-on-write, so it is never modified. */
  imagePath: string;
  /**
   * The target's RAM: a file QEMU creates (it must not exist) and maps shared, so the pages it loads land
   * in that file as pagewire's land in --out (QEMU does not fsync it). Removed afterwards.
   */
  targetRamPath: string;
  /** Guest RAM size; must be a multiple of 2 MiB. */
  sizeBytes: number;
  /** best: multifd with 2 channels and no bandwidth cap; default: QEMU's defaults (128 MiB/s cap, one stream). */
  config: 'best' | 'default';
  /** Both QEMUs are killed and the call settles within this. */
  timeoutMs: number;
  /** Where the QMP sockets go; must be short enough for a unix socket path (about 100 bytes). */
  workDir: string;
  /** Where the target listens for the migration; default 127.0.0.1 on a free port. */
  listen?: { host: string; port: number };
  /** Runs each QEMU in that network namespace (`ip netns exec NS`, needs root); QMP stays on unix sockets. */
  netns?: { source: string; target: string };
  /** With config 'best': multifd-compression on both ends (zstd where QEMU is built with it). */
  multifdCompression?: 'zlib' | 'zstd';
}

/** QEMU's own figures of one migration, from the source's final query-migrate. */
export interface QemuMigrationFigures {
  available: true;
  version: string;
  config: 'best' | 'default';
  /** QEMU's `total-time`: from the migrate command to completion, setup included. */
  totalTimeMs: number;
  downtimeMs: number;
  setupTimeMs: number;
  /** QEMU's `ram.transferred`: RAM bytes put on the wire (or into the file), page headers included. */
  transferredBytes: number;
  status: string;
  /** The source's final query-migrate reply. */
  raw: unknown;
}

export type QemuBaselineResult =
  | { available: false; reason: string }
  | (QemuMigrationFigures & { multifdCompression?: 'zlib' | 'zstd' });

const QEMU = 'qemu-system-x86_64';
const ALIGN = 2 << 20;
const POLL_MS = 20;
/** Effectively unlimited: QEMU's default cap (128 MiB/s) would otherwise be what gets measured. */
const BEST_MAX_BANDWIDTH = 100e9;
const BEST_MULTIFD_CHANNELS = 2;
const STDERR_KEEP = 4096;

/** Whether qemu-system-x86_64 is on PATH and new enough (5.0: `-machine memory-backend=`). */
export async function qemuAvailable(): Promise<{ available: true; version: string } | { available: false; reason: string }> {
  let stdout: string;
  try {
    stdout = await new Promise<string>((resolve, reject) => {
      execFile(QEMU, ['--version'], { timeout: 10_000 }, (error, out) => (error ? reject(error) : resolve(out)));
    });
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return { available: false, reason: `${QEMU} not found on PATH` };
    return { available: false, reason: `${QEMU} --version failed: ${e.message}` };
  }
  const match = /QEMU emulator version ((\d+)\.\d+\S*.*)/.exec(stdout);
  if (!match) return { available: false, reason: `cannot read the version from ${QEMU} --version: ${stdout.trim()}` };
  if (Number(match[2]) < 5) return { available: false, reason: `QEMU ${match[1]} is older than 5.0` };
  return { available: true, version: match[1]!.trim() };
}

/**
 * Migrates the image once with QEMU and returns QEMU's figures. Returns `available: false` when QEMU
 * is missing or the size is not one it can take; throws when a QEMU fails to start, the migration
 * fails, or timeoutMs passes. Both QEMUs are killed and their sockets removed in every case.
 */
export async function runQemuBaseline(options: QemuBaselineOptions): Promise<QemuBaselineResult> {
  const { imagePath, targetRamPath, sizeBytes: size, config, timeoutMs, workDir, netns, multifdCompression } = options;
  const qemu = await qemuForImage(imagePath, size);
  if (!qemu.available) return qemu;

  const deadline = new Deadline(timeoutMs);
  const listen = options.listen ?? { host: '127.0.0.1', port: await freePort() };
  const uri = `tcp:${listen.host}:${listen.port}`;
  const sourceSocket = join(workDir, `qemu-src-${process.pid}.qmp`);
  const targetSocket = join(workDir, `qemu-dst-${process.pid}.qmp`);
  const machine = (socket: string) => machineArgs(size, qemu.accel, socket);
  const processes: QemuProcess[] = [];
  const clients: Qmp[] = [];
  try {
    const source = new QemuProcess('source', sourceArgs(imagePath, size, qemu.accel, sourceSocket), netns?.source);
    processes.push(source);
    // -incoming defer: multifd must be switched on before the target starts listening.
    const target = new QemuProcess('target', [
      ...machine(targetSocket),
      '-object', `memory-backend-file,id=mem0,size=${size},mem-path=${qemuOptValue(targetRamPath)},share=on`,
      '-incoming', 'defer',
    ], netns?.target);
    processes.push(target);
    const src = await deadline.race(Qmp.open(sourceSocket, source, deadline), 'connecting to the source QMP');
    clients.push(src);
    const dst = await deadline.race(Qmp.open(targetSocket, target, deadline), 'connecting to the target QMP');
    clients.push(dst);
    const run = async () => {
      if (config === 'best') {
        for (const qmp of [src, dst]) {
          await qmp.command('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
          await qmp.command('migrate-set-parameters', {
            'multifd-channels': BEST_MULTIFD_CHANNELS, ...(multifdCompression ? { 'multifd-compression': multifdCompression } : {}),
          });
        }
        await src.command('migrate-set-parameters', { 'max-bandwidth': BEST_MAX_BANDWIDTH });
      }
      await dst.command('migrate-incoming', { uri });
      await src.command('migrate', { uri });
      const final = await pollMigration(src);
      if (final.status !== 'completed') {
        throw new Error(`QEMU migration ended '${final.status}': ${final['error-desc'] ?? 'no error-desc'}`);
      }
      // The source may finish sending before the target has loaded the stream; only a target that
      // took it all makes the figures count.
      const incoming = await pollMigration(dst);
      if (incoming.status !== 'completed') {
        throw new Error(`QEMU target ended '${incoming.status}': ${incoming['error-desc'] ?? 'no error-desc'}`);
      }
      return final;
    };
    const final = await deadline.race(run(), 'migrating');
    return { ...figuresOf(final, qemu.version, config), ...(config === 'best' && multifdCompression ? { multifdCompression } : {}) };
  } finally {
    for (const qmp of clients) qmp.close();
    await Promise.all(processes.map((p) => p.kill()));
    await Promise.all([sourceSocket, targetSocket, targetRamPath].map((path) => rm(path, { force: true })));
  }
}

export interface QemuFileOptions {
  /** A file of at least sizeBytes bytes; QEMU maps it copy-on-write, so it is never modified. */
  imagePath: string;
  /** Guest RAM size; must be a multiple of 2 MiB. */
  sizeBytes: number;
  /** The file the migration stream is written to (`exec:cat > outPath`); it must not exist. Removed afterwards. */
  outPath: string;
  /**
   * best: max-bandwidth lifted, as runQemuBaseline's best (multifd needs a socket, so it is off here);
   * default: QEMU's defaults (128 MiB/s cap).
   */
  config: 'best' | 'default';
  /** QEMU is killed and the call settles within this. */
  timeoutMs: number;
  /** Where the QMP socket goes; must be short enough for a unix socket path. */
  workDir: string;
}

export type QemuFileResult =
  | { available: false; reason: string }
  /** fileSize, fileBytes: the file's size once the migration completed, and its allocated bytes. */
  | (QemuMigrationFigures & { fileSize: number; fileBytes: number });

/**
 * Saves the paused guest whose RAM is the image into a file, as QEMU's users take a snapshot of a running
 * guest (`migrate "exec:cat > FILE"`), and returns QEMU's figures. `available: false` as runQemuBaseline;
 * throws when QEMU fails to start, the migration fails, or timeoutMs passes. QEMU is killed and its
 * socket and the file removed in every case.
 */
export async function runQemuToFile(options: QemuFileOptions): Promise<QemuFileResult> {
  const { imagePath, sizeBytes: size, outPath, config, timeoutMs, workDir } = options;
  const qemu = await qemuForImage(imagePath, size);
  if (!qemu.available) return qemu;
  const deadline = new Deadline(timeoutMs);
  const socket = join(workDir, `qemu-file-${process.pid}.qmp`);
  const source = new QemuProcess('source', sourceArgs(imagePath, size, qemu.accel, socket));
  let qmp: Qmp | undefined;
  try {
    qmp = await deadline.race(Qmp.open(socket, source, deadline), 'connecting to the source QMP');
    const src = qmp;
    const run = async () => {
      if (config === 'best') await src.command('migrate-set-parameters', { 'max-bandwidth': BEST_MAX_BANDWIDTH });
      // QEMU runs the command with /bin/sh -c: the path is quoted for the shell.
      await src.command('migrate', { uri: `exec:cat > '${outPath.replaceAll('\'', '\'\\\'\'')}'` });
      const final = await pollMigration(src);
      if (final.status !== 'completed') {
        throw new Error(`QEMU migration into ${outPath} ended '${final.status}': ${final['error-desc'] ?? 'no error-desc'}`);
      }
      return final;
    };
    const final = await deadline.race(run(), 'migrating into a file');
    const file = await stat(outPath);
    return { ...figuresOf(final, qemu.version, config), fileSize: file.size, fileBytes: file.blocks * 512 };
  } finally {
    qmp?.close();
    await source.kill();
    await Promise.all([socket, outPath].map((path) => rm(path, { force: true })));
  }
}

/** QEMU's version and accelerator when it is here and can take the image as guest RAM of `size` bytes. */
async function qemuForImage(imagePath: string, size: number):
  Promise<{ available: true; version: string; accel: 'kvm' | 'tcg' } | { available: false; reason: string }> {
  const qemu = await qemuAvailable();
  if (!qemu.available) return qemu;
  // QEMU rounds -m up (to 8 KiB on x86 in 7.2) and then refuses a backend of another size.
  if (!Number.isSafeInteger(size) || size <= 0 || size % ALIGN !== 0) {
    return { available: false, reason: `image size ${size} is not a positive multiple of 2 MiB, which QEMU guest RAM needs here` };
  }
  const imageBytes = (await stat(imagePath)).size;
  if (imageBytes < size) throw new Error(`${imagePath} holds ${imageBytes} bytes, fewer than sizeBytes ${size}`);
  const accel = await access('/dev/kvm', constants.R_OK | constants.W_OK).then(() => 'kvm' as const, () => 'tcg' as const);
  return { ...qemu, accel };
}

/** A paused machine with `size` bytes of RAM from the backend mem0 and its monitor on a unix socket. */
function machineArgs(size: number, accel: string, socket: string): string[] {
  return [
    '-S', '-nodefaults', '-nographic', '-display', 'none',
    '-machine', 'q35,memory-backend=mem0', '-accel', accel, '-m', `${size}B`,
    '-qmp', `unix:${qemuOptValue(socket)},server=on,wait=off`,
  ];
}

/**
 * The source: the image as its RAM. share=off maps the file MAP_PRIVATE: the migration reads the image's
 * own pages, and nothing the guest or QEMU might write reaches the file.
 */
function sourceArgs(imagePath: string, size: number, accel: string, socket: string): string[] {
  return [
    ...machineArgs(size, accel, socket),
    '-object', `memory-backend-file,id=mem0,size=${size},mem-path=${qemuOptValue(imagePath)},share=off`,
  ];
}

interface MigrationInfo {
  status: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: { transferred?: number };
}

function figuresOf(final: MigrationInfo, version: string, config: 'best' | 'default'): QemuMigrationFigures {
  return {
    available: true, version, config, totalTimeMs: final['total-time'] ?? NaN, downtimeMs: final.downtime ?? NaN,
    setupTimeMs: final['setup-time'] ?? NaN, transferredBytes: final.ram?.transferred ?? NaN, status: final.status, raw: final,
  };
}

async function pollMigration(qmp: Qmp): Promise<MigrationInfo> {
  for (;;) {
    const info = (await qmp.command('query-migrate')) as MigrationInfo;
    if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') return info;
    await sleep(POLL_MS);
  }
}

/** A port on 127.0.0.1 that was free a moment ago; QEMU binds it for the incoming migration. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** QEMU's option syntax splits on commas; a literal comma is written twice. */
function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,');
}

class Deadline {
  private readonly at: number;
  constructor(private readonly ms: number) {
    this.at = Date.now() + ms;
  }

  expired(): boolean {
    return Date.now() >= this.at;
  }

  /** The promise, or a rejection once the deadline passes (the caller's finally then kills QEMU). */
  race<T>(promise: Promise<T>, doing: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`QEMU baseline timed out after ${this.ms} ms while ${doing}`)), Math.max(0, this.at - Date.now()));
    });
    // The loser of the race may still reject later (its QEMU killed under it): that is expected.
    promise.catch(() => {});
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }
}

class QemuProcess {
  private readonly child: ChildProcess;
  private stderr = '';
  /** Settles when the process has exited, with how it ended. */
  readonly exited: Promise<string>;

  /** netns: started through `ip netns exec NS`, which execs QEMU in place (the pid stays QEMU's). */
  constructor(readonly role: string, args: string[], netns?: string) {
    const [command, argv] = netns ? ['ip', ['netns', 'exec', netns, QEMU, ...args]] : [QEMU, args];
    this.child = spawn(command, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-STDERR_KEEP);
    });
    this.exited = new Promise((resolve) => {
      this.child.once('error', (error) => resolve(`failed to start: ${error.message}`));
      this.child.once('exit', (code, signal) => resolve(`exited (${signal ?? `code ${code}`})`));
    });
  }

  /** Why the process is gone, with what it printed. */
  async failure(): Promise<Error> {
    const how = await this.exited;
    return new Error(`QEMU ${this.role} ${how}${this.stderr ? `: ${this.stderr.trim()}` : ''}`);
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

/** A minimal QMP client: one JSON object per line, replies matched by id, events ignored. */
class Qmp {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buffered = '';
  private greeted: (() => void) | undefined;
  private closedError: Error | undefined;

  private constructor(private readonly socket: Socket, private readonly owner: QemuProcess) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => this.onClose());
  }

  /** Connects once QEMU has created its socket, reads the greeting and leaves capabilities negotiation. */
  static async open(path: string, owner: QemuProcess, deadline: Deadline): Promise<Qmp> {
    let exited = false;
    void owner.exited.then(() => (exited = true));
    for (;;) {
      if (exited) throw await owner.failure();
      if (deadline.expired()) throw new Error(`QMP socket ${path} did not accept a connection in time`);
      const socket = await new Promise<Socket | undefined>((resolve) => {
        const s = connect(path);
        s.once('connect', () => resolve(s));
        s.once('error', () => resolve(undefined));
      });
      if (socket) {
        const qmp = new Qmp(socket, owner);
        await new Promise<void>((resolve, reject) => {
          qmp.greeted = resolve;
          void owner.exited.then(() => owner.failure().then(reject));
        });
        await qmp.command('qmp_capabilities');
        return qmp;
      }
      await sleep(POLL_MS);
    }
  }

  command(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let newline: number;
    while ((newline = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, newline).trim();
      this.buffered = this.buffered.slice(newline + 1);
      if (line) this.onMessage(JSON.parse(line) as Record<string, unknown>);
    }
  }

  private onMessage(message: Record<string, unknown>): void {
    if ('QMP' in message) {
      this.greeted?.();
      return;
    }
    const pending = typeof message.id === 'number' ? this.pending.get(message.id) : undefined;
    if (!pending) return;
    this.pending.delete(message.id as number);
    if ('error' in message) {
      const error = message.error as { class?: string; desc?: string };
      pending.reject(new Error(`QMP ${this.owner.role}: ${error.class ?? 'Error'}: ${error.desc ?? 'no description'}`));
    } else {
      pending.resolve(message.return);
    }
  }

  private onClose(): void {
    this.closedError = new Error(`QMP connection to the QEMU ${this.owner.role} closed`);
    for (const pending of this.pending.values()) pending.reject(this.closedError);
    this.pending.clear();
  }
}
