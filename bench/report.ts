// What the migrate bench prints and draws: a line per repetition as it goes, then the tables of medians
// (each ratio naming its baseline) with the configuration each figure comes from, and the chart panels.
import { cpus } from 'node:os';
import type { ChartMigration } from './chart.js';
import type { RepRecord, ScenarioSummary } from './records.js';
import type { StorageDir, FileStorage } from './storage.js';
import { formatSize, formatTable, mib } from './stats.js';

export interface RunDescription {
  size: number;
  reps: number;
  /** e.g. 'QEMU 7.2.22', or why QEMU did not run. */
  qemu: { version: string } | { skipped: string };
  storage: Partial<Record<FileStorage, StorageDir>>;
  /** --streams and --lz4 as given (undefined: send's defaults). */
  streams: number | undefined;
  lz4: string | undefined;
  rssBoundBytes: number;
  pageCacheBytes: number;
}

const n0 = (v: number | null) => (v === null ? 'n/a' : v.toFixed(0));
const n1 = (v: number | null) => (v === null ? 'n/a' : v.toFixed(1));
const times = (v: number | null) => (v === null ? 'n/a' : `${v.toFixed(2)}x`);

/** One repetition as it finished, on stderr. */
export function describeRep(r: RepRecord, label: string): string {
  const m = r.migration;
  const s = m.send;
  const q = r.qemu;
  const p = m.processes;
  return `  [${label}] ` +
    (r.floors.write ? `write floor ${r.floors.write.totalMs.toFixed(0)} ms | ` : '') +
    `TCP copy ${r.floors.tcpCopy.totalMs.toFixed(0)} ms | pagewire ${s.totalTimeMs.toFixed(0)} ms` +
    (p ? ` (processes: send ${p.sendWallMs.toFixed(0)} ms, receive ${p.receiveWallMs.toFixed(0)} ms)` : '') +
    `, downtime ${s.downtimeMs.toFixed(1)} ms, ${s.rounds} rounds, throttle ${s.throttlePercent}%, wire ${m.wirePercent.toFixed(1)}%, ` +
    `${s.streams} stream${s.streams === 1 ? '' : 's'}` +
    (q?.status === 'completed' ? ` | QEMU ${q.totalTimeMs.toFixed(0)} ms (downtime ${q.downtimeMs} ms)` : '') +
    (q?.status === 'failed' ? ' | QEMU failed' : '') +
    ` | RSS ${mib(r.rss.source.peakCountedBytes)}/${mib(r.rss.target.peakCountedBytes)} MiB${r.rss.withinBound ? '' : ' OVER BOUND'}` +
    ` | ${m.verified}` + (r.otherCpuPercent !== null ? ` | others ${r.otherCpuPercent.toFixed(0)}% CPU` : '');
}

/** The tables of medians, with what each column and each configuration is. */
export function formatTables(run: RunDescription, summary: ScenarioSummary[]): string {
  const rssCell = (bytes: number) => `${mib(bytes)}${bytes > run.rssBoundBytes ? ' !' : ''}`;
  const ratios = formatTable([
    ['scenario', 'total ms', 'write floor ms', 'x write floor (same storage)', 'TCP copy ms', 'x TCP copy', 'QEMU ms', 'x QEMU (RAM on same storage)'],
    ...summary.map(({ scenario, medians: m }) => [
      scenario, n0(m.totalTimeMs), n0(m.writeFloorMs), times(m.vsWriteFloor), n0(m.tcpCopyMs), times(m.vsTcpCopy), n0(m.qemuMs), times(m.vsQemu),
    ]),
  ], [false, ...Array<boolean>(7).fill(true)]);
  const migration = formatTable([
    ['scenario', 'total ms', 'send process ms', 'receive process ms', 'receive listening ms', 'downtime ms', 'QEMU downtime ms',
      'rounds', 'throttle %', 'wire %'],
    ...summary.map(({ scenario, medians: m }) => [
      scenario, n0(m.totalTimeMs), n0(m.sendWallMs), n0(m.receiveWallMs), n0(m.receiveListeningMs), n1(m.downtimeMs), n1(m.qemuDowntimeMs),
      String(m.rounds), String(m.maxThrottlePercent), n1(m.wirePercent),
    ]),
  ], [false, ...Array<boolean>(9).fill(true)]);
  const split = formatTable([
    ['scenario', 'downtime', 'pause', 'final sync', 'transfer', 'verify', 'prepare', 'handshake', 'RSS send MiB', 'RSS receive MiB', 'others CPU %'],
    ...summary.map(({ scenario, medians: m }) => [
      scenario, n1(m.downtimeMs), ...Object.values(m.downtimeSplitMs).map((v) => n1(v)),
      rssCell(m.maxRssSourceBytes), rssCell(m.maxRssTargetBytes), n0(m.maxOtherCpuPercent),
    ]),
  ], [false, ...Array<boolean>(10).fill(true)]);
  const where = (Object.entries(run.storage) as Array<[FileStorage, StorageDir]>)
    .map(([name, d]) => `${name} = ${d.root} (${d.fsType})`).join(', ');
  const sendFlags = `--streams ${run.streams ?? `<default: ${cpus().length}, the cores>`} --lz4 ${run.lz4 ?? '<default: adaptive>'}`;
  const qemu = 'version' in run.qemu ? `QEMU ${run.qemu.version}` : `QEMU not run (${run.qemu.skipped})`;
  return `\npagewire migrate bench: ${formatSize(run.size)} images over 127.0.0.1, medians of ${run.reps} ` +
    `run${run.reps === 1 ? '' : 's'} (node ${process.version}, ${cpus().length} cpus, ${qemu}); ${where}\n` +
    'configurations:\n' +
    '  -shm, -disk  the CLI as users run it, each a fresh process: pagewire receive --listen 127.0.0.1:0 --out\n' +
    '               <storage>/out.img --json, and pagewire send --connect 127.0.0.1:<port> --image <same storage>/<image>\n' +
    '               --json [--workload rate=<MB/s>,hot=0.05,seed=<rep>] [--max-downtime <budget>]\n' +
    `               ${sendFlags}\n` +
    '  -mem         the library path into pre-faulted memory: MigrationSource/MigrationTarget in two long-lived agent\n' +
    '               processes, the target a pre-faulted buffer, the image in /dev/shm; the same budget, streams and LZ4\n' +
    '               mode; compared with the TCP copy only\n' +
    'baselines (same bytes, same run, each ratio = median pagewire total / median baseline total):\n' +
    '  write floor  the image\'s bytes pwritten in 1 MiB chunks into a new file on the same storage as --out, then\n' +
    '               fsync, by a fresh process (CLI scenarios)\n' +
    '  TCP copy     the image\'s bytes over one 127.0.0.1 connection between two processes into pre-faulted memory\n' +
    '  QEMU         qemu-system-x86_64 migrating a paused guest (multifd, 2 channels, no bandwidth cap); its RAM\n' +
    '               files on the scenario\'s storage: the source maps the image, the target a new file (shared, not\n' +
    '               fsynced); QEMU\'s total-time (cold CLI scenarios)\n' +
    'total = send\'s totalTimeMs; process ms = spawn to exit, as the bench timed it; receive listening = spawn to its\n' +
    '`listening on` line; throttle % = highest auto-converge throttle; wire % = bytes on the wire / region bytes;\n' +
    'RSS = highest sampled peak (anonymous + mapped file and shared memory up to one region), ! above the bound of\n' +
    `${mib(run.rssBoundBytes)} MiB (256 MiB + region + ${mib(run.pageCacheBytes)} MiB page cache); ` +
    'others CPU % = CPU used by processes outside the bench (noise)\n\n' +
    `pagewire against its baselines\n\n${ratios}\n\nthe migrations and their processes\n\n${migration}\n\n` +
    `downtime split, ms (send's downtimeBreakdownMs), and memory\n\n${split}\n`;
}

/** One panel per scenario: its median repetition by total time, against the baselines it is compared with. */
export function chartPanels(summary: ScenarioSummary[], runs: RepRecord[], reps: number): ChartMigration[] {
  return summary.flatMap((s) => {
    const r = runs.find((x) => x.scenario === s.scenario && x.rep === s.medianRep);
    if (!r) return [];
    const m = r.migration;
    const d = m.send.downtimeBreakdownMs;
    // Short labels: the chart leaves about 23 characters for one.
    const baselines: Record<string, number> = {};
    if (r.floors.write) baselines[`write floor (${r.target})`] = r.floors.write.totalMs;
    baselines['TCP copy into memory'] = r.floors.tcpCopy.totalMs;
    if (r.qemu?.status === 'completed') baselines[`QEMU (RAM on ${r.target})`] = r.qemu.totalTimeMs;
    return [{
      label: `${s.scenario}: rep ${r.rep} of ${reps} (median total time), max downtime ` +
        `${s.maxDowntimeMs === null ? 'send\'s default' : `${s.maxDowntimeMs} ms`}`,
      rounds: m.roundsDetail.map((x) => ({
        round: x.round, pagesSent: x.pagesSent, durationMs: x.durationMs, throttlePercent: x.throttlePercent, stopAndCopy: x.stopAndCopy === true,
      })),
      downtimeMs: m.send.downtimeMs, totalTimeMs: m.send.totalTimeMs,
      downtimeSplit: {
        pause: d.pause, 'final sync': d.finalSync, transfer: d.transfer, verify: d.verify, prepare: d.prepare, handshake: d.handshake,
      },
      baselines,
    }];
  });
}
