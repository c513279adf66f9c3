// A running QEMU guest (the project's multiboot guest under TCG, RAM in /dev/shm) moved two ways, in the
// same run on the same storage: by `pagewire qemu send` / `qemu receive` as an operator runs them (RAM by
// pagewire, devices by QEMU's x-ignore-shared migration), and by QEMU's own migration over TCP (RAM and
// devices, bandwidth cap lifted, the same downtime limit as pagewire's --max-downtime). For each guest
// rate it reports medians of total time, the downtime each reports, and the real outage: from the
// source's `stop` to the target's `cont` (pagewire: stoppedAt / resumedAt of the two CLIs; QEMU: the
// timestamps of the source's STOP and the target's RESUME events). Every pagewire run is checked: the
// digest of the stopped source's RAM file (the pause point) equals the one the target verified, and the
// guest counts on, on the target, from the pause point's value. --back-and-forth N then moves one guest N
// times between two QEMUs, each time comparing the SHA-256 of both RAM files (the target's taken
// before `cont`) and the guest's counter.
//   node dist/bench/qemu-migration.js [--mib 1024] [--rates 50,200] [--reps 3] [--max-downtime 300] [--back-and-forth 20] [--no-qemu-baseline]
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { optionalString, parseFlags } from '../src/cli/args.js';
import { migrationEnded } from '../src/qemu/qemu-migration.js';
import type { QmpEvent } from '../src/qemu/qmp-client.js';
import { ChildRun, describeExit, lastJsonLine } from './child-run.js';
import { guestCommand, guestStatus, startQemu, untilGuest, type RunningGuest } from './qemu-guest.js';
import { formatTable, median, round } from './stats.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const flags = parseFlags(process.argv.slice(2), {
  mib: 'string', rates: 'string', reps: 'string', 'max-downtime': 'string', 'back-and-forth': 'string', 'no-qemu-baseline': 'boolean',
});
const mib = Number(optionalString(flags, 'mib') ?? '1024');
const rates = (optionalString(flags, 'rates') ?? '50,200').split(',').map(Number);
const reps = Number(optionalString(flags, 'reps') ?? '3');
const maxDowntimeMs = Number(optionalString(flags, 'max-downtime') ?? '300');
const backAndForth = Number(optionalString(flags, 'back-and-forth') ?? '0');
const shm = join('/dev/shm', `pagewire-qemu-bench-${process.pid}`);
const sockets = join(tmpdir(), `pagewire-qemu-bench-${process.pid}`);
const STEP_MS = 600_000;

interface Run { totalMs: number; downtimeMs: number; outageMs: number }

/** A source guest past its first walk over RAM and one more second of dirtying at its rate. */
async function sourceGuest(ramPath: string, rate: number, extra: string[] = []): Promise<RunningGuest> {
  const guest = await startQemu(guestCommand(mib, rate, ramPath, extra), `${sockets}-src.qmp`);
  const filled = await untilGuest(ramPath, (s) => s.passes >= 1, STEP_MS);
  await untilGuest(ramPath, (s) => s.counter >= filled.counter + BigInt(Math.round((rate * 1e6) / 4096)), STEP_MS);
  return guest;
}

function cli(label: string, args: string[]): ChildRun {
  return new ChildRun(label, process.execPath, [CLI, ...args], { timeoutMs: STEP_MS });
}

/** One migration by `pagewire qemu`, from the guest at qmpPath / ramPath into outPath. */
async function pagewireMigration(qmpPath: string, ramPath: string, outPath: string, rate: number, sha256: boolean) {
  let listening!: (port: number) => void;
  const port = new Promise<number>((resolve) => { listening = resolve; });
  const receive = new ChildRun('qemu receive', process.execPath, [CLI, 'qemu', 'receive', '--listen', '127.0.0.1:0', '--out', outPath,
    '--qmp', `${outPath}.qmp`, '--json', ...(sha256 ? ['--sha256'] : []), '--', ...guestCommand(mib, rate, '@RAM@')], {
    timeoutMs: STEP_MS, onStderrLine: (line) => { const m = /listening on 127\.0\.0\.1:(\d+)/.exec(line); if (m) listening(Number(m[1])); },
  });
  const send = cli('qemu send', ['qemu', 'send', '--qmp', qmpPath, '--ram', ramPath, '--connect', `127.0.0.1:${await port}`,
    '--max-downtime', String(maxDowntimeMs), '--json', ...(sha256 ? ['--sha256'] : [])]);
  const [sent, received] = await Promise.all([send.exited, receive.exited]);
  if (sent.code !== 0 || received.code !== 0) throw new Error(`pagewire qemu failed: send ${describeExit(sent)}; receive ${describeExit(received)}`);
  const s = lastJsonLine(sent, 'qemu send');
  const r = lastJsonLine(received, 'qemu receive');
  const atPause = guestStatus(ramPath)!;
  // Nothing lost: the stopped source is the pause point; its digest (or SHA-256) is what the target holds.
  const digest = execFileSync(process.execPath, [CLI, 'digest', ramPath], { encoding: 'utf8' }).trim().split(/\s+/)[0];
  if (digest !== r.digest) throw new Error(`digest of the source at the pause point ${digest} differs from the target's ${String(r.digest)}`);
  if (sha256 && s.sha256 !== r.sha256) throw new Error(`SHA-256 at the pause point ${String(s.sha256)} differs from the target's ${String(r.sha256)}`);
  await untilGuest(outPath, (status) => status.counter > atPause.counter, STEP_MS);
  return { s, r, targetPid: r.qemuPid as number, targetQmp: r.qmp as string, counterAtPause: atPause.counter };
}

async function pagewireRun(rate: number): Promise<Run> {
  const ramPath = `${shm}-src.img`;
  const outPath = `${shm}-dst.img`;
  const source = await sourceGuest(ramPath, rate);
  source.qmp.close();
  try {
    const { s, r, targetPid } = await pagewireMigration(source.qmpPath, ramPath, outPath, rate, false);
    process.kill(targetPid, 'SIGKILL');
    return { totalMs: s.totalTimeMs as number, downtimeMs: s.downtimeMs as number, outageMs: (r.resumedAt as number) - (s.stoppedAt as number) };
  } finally {
    await source.kill();
    cleanFiles();
  }
}

/** The time of a QMP event as QEMU stamps it, in ms since the epoch. */
function stampMs(event: QmpEvent & { timestamp?: { seconds: number; microseconds: number } }): number {
  return event.timestamp!.seconds * 1000 + event.timestamp!.microseconds / 1000;
}

async function qemuRun(rate: number): Promise<Run> {
  const ramPath = `${shm}-src.img`;
  const source = await sourceGuest(ramPath, rate);
  const target = await startQemu([...guestCommand(mib, rate, `${shm}-dst.img`), '-incoming', 'tcp:127.0.0.1:0'], `${sockets}-dst.qmp`);
  try {
    const incoming = await target.qmp.execute('query-migrate') as { 'socket-address'?: Array<{ port: string }> };
    const port = incoming['socket-address']?.[0]?.port;
    if (!port) throw new Error('the target QEMU reports no incoming port');
    await source.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await source.qmp.execute('migrate-set-parameters', { 'max-bandwidth': Number.MAX_SAFE_INTEGER, 'downtime-limit': maxDowntimeMs });
    const stopped = source.qmp.until((e) => e.event === 'STOP');
    const resumed = target.qmp.until((e) => e.event === 'RESUME');
    const done = migrationEnded(source.qmp);
    await source.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const status = await done;
    if (status !== 'completed') throw new Error(`QEMU's migration ended ${status}`);
    const info = await source.qmp.execute('query-migrate') as { 'total-time': number; downtime: number };
    const outageMs = stampMs(await resumed) - stampMs(await stopped);
    return { totalMs: info['total-time'], downtimeMs: info.downtime, outageMs };
  } finally {
    await target.kill();
    await source.kill();
    cleanFiles();
  }
}

function cleanFiles(): void {
  for (const name of readdirSync('/dev/shm')) if (name.includes(`pagewire-qemu-bench-${process.pid}`)) rmSync(join('/dev/shm', name), { force: true });
}

function medians(runs: Run[]) {
  return { totalMs: round(median(runs.map((r) => r.totalMs))), downtimeMs: round(median(runs.map((r) => r.downtimeMs))),
    outageMs: round(median(runs.map((r) => r.outageMs))) };
}

async function main(): Promise<void> {
  const rows: string[][] = [['guest', 'how', 'total ms', 'downtime ms (reported)', 'outage ms (stop → cont)', 'runs (outage ms)']];
  const results: Record<string, unknown>[] = [];
  for (const rate of rates) {
    const ways: Array<[string, (rate: number) => Promise<Run>]> = [['pagewire qemu', pagewireRun]];
    if (!flags.has('no-qemu-baseline')) ways.push(['QEMU migrate (tcp)', qemuRun]);
    for (const [how, run] of ways) {
      const runs: Run[] = [];
      for (let rep = 0; rep < reps; rep++) {
        runs.push(await run(rate));
        process.stderr.write(`${mib} MiB at ${rate} MB/s, ${how}, run ${rep + 1}: ${JSON.stringify(runs[rep])}\n`);
      }
      const m = medians(runs);
      rows.push([`${mib} MiB, ${rate} MB/s`, how, String(m.totalMs), String(m.downtimeMs), String(m.outageMs),
        runs.map((r) => round(r.outageMs)).join(' ')]);
      results.push({ mib, rateMBps: rate, how, maxDowntimeMs, ...m, runs });
    }
  }
  process.stdout.write(`${formatTable(rows, [false, false, true, true, true, false])}\n`);
  if (backAndForth > 0) results.push(await backAndForthRuns(backAndForth));
  process.stdout.write(`${JSON.stringify({ results })}\n`);
}

/** One guest moved `count` times between two RAM files, each move checked by SHA-256 and by its counter. */
async function backAndForthRuns(count: number) {
  const rate = rates[0]!;
  const files = [`${shm}-a.img`, `${shm}-b.img`];
  const first = await sourceGuest(files[0]!, rate);
  first.qmp.close();
  let qmpPath = first.qmpPath;
  let pid: number | undefined;
  const outages: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const from = files[i % 2]!;
      const to = files[(i + 1) % 2]!;
      rmSync(to, { force: true });
      const moved = await pagewireMigration(qmpPath, from, to, rate, true);
      if (pid !== undefined) process.kill(pid, 'SIGKILL');
      else await first.kill();
      pid = moved.targetPid;
      qmpPath = moved.targetQmp;
      outages.push((moved.r.resumedAt as number) - (moved.s.stoppedAt as number));
      process.stderr.write(`move ${i + 1}/${count}: SHA-256 equal, counter ${moved.counterAtPause} at the pause, counting on; outage ${round(outages[i]!)} ms\n`);
    }
  } finally {
    if (pid !== undefined) process.kill(pid, 'SIGKILL');
    await first.kill();
    cleanFiles();
  }
  process.stdout.write(`${count} moves back and forth (${mib} MiB, ${rate} MB/s): every one byte-exact at the pause point; outage median ${round(median(outages))} ms\n`);
  return { backAndForth: count, mib, rateMBps: rate, outageMedianMs: round(median(outages)), outages: outages.map((o) => round(o)) };
}

main().catch((error: unknown) => {
  cleanFiles();
  process.stderr.write(`qemu-migration bench: ${(error as Error).message}\n`);
  process.exitCode = 1;
});
