// One migration as a user runs it: the real `pagewire receive` and `pagewire send` processes over
// 127.0.0.1, receive writing --out on the scenario's storage. The bench reads the port from receive's
// `listening on HOST:PORT` line, times each process from spawn to exit, samples their RSS from /proc,
// and keeps send's per-round log lines (written on stderr when it is not a terminal) for the chart.
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { Lz4Mode } from '../src/codec/lz4-policy.js';
import type { sourceJson } from '../src/cli/run-source.js';
import type { RoundReport } from '../src/migration/metrics.js';
import type { WorkloadSpec } from '../src/workload/workload-spec.js';
import { ChildRun, describeExit, lastJsonLine, type ChildExit } from './child-run.js';
import { RssSampler, type RssPeak } from './proc-memory.js';

const CLI_PATH = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
/** How long one end may take to report its side after the other failed. */
const PEER_GRACE_MS = 5000;

/** What `pagewire send --json` prints (the CLI contract; the same object sourceJson builds). */
export type SendJson = ReturnType<typeof sourceJson>;

/** What `pagewire receive --json` prints (the CLI contract). */
export interface ReceiveJson {
  status: 'completed' | 'failed';
  error: string | null;
  pageSize: number | null;
  pagesTotal: number | null;
  bytesReceived: number;
  digest: string | null;
  totalTimeMs?: number;
}

export interface CliMigrationOptions {
  imagePath: string;
  outPath: string;
  /** For the RSS bound: mapped pages up to this count. */
  regionBytes: number;
  workload?: WorkloadSpec;
  /** undefined: send's default. */
  maxDowntimeMs?: number;
  streams?: number;
  lz4?: Lz4Mode;
  /** This key file on both ends, with TLS-PSK unless tls is false. */
  pskFile?: string;
  /** false: the key authenticates the peers but the frames go in the clear; default true. */
  tls?: boolean;
  /** Each end inside its network namespace (`ip netns exec NS`, needs root), receive listening on host; default 127.0.0.1 here. */
  netns?: { source: string; target: string; host: string };
  /** Each process is killed if it has not exited by then. */
  timeoutMs: number;
  /** Copy send's round lines to the bench's stderr. */
  verbose: boolean;
}

export interface CliProcess<Json> {
  json: Json;
  /** Spawn to exit, on the bench's clock. */
  wallMs: number;
  rss: RssPeak;
  /** The command line, for the record. */
  argv: string[];
}

export interface CliMigration {
  send: CliProcess<SendJson> & { rounds: RoundReport[] };
  receive: CliProcess<ReceiveJson> & { /** Spawn to its `listening on` line. */ listeningMs: number };
}

/** Runs receive, then send against it; throws (both processes killed) unless both completed. */
export async function runCliMigration(o: CliMigrationOptions): Promise<CliMigration> {
  const security = o.pskFile ? ['--psk-file', o.pskFile, ...(o.tls === false ? [] : ['--tls'])] : [];
  const host = o.netns?.host ?? '127.0.0.1';
  const receiveArgv = ['receive', '--listen', `${host}:0`, '--out', o.outPath, '--json', ...security];
  const sendArgvRest = [
    '--image', o.imagePath, '--json', ...security,
    ...(o.workload ? ['--workload', workloadFlag(o.workload)] : []),
    ...(o.maxDowntimeMs === undefined ? [] : ['--max-downtime', String(o.maxDowntimeMs)]),
    ...(o.streams === undefined ? [] : ['--streams', String(o.streams)]),
    ...(o.lz4 === undefined ? [] : ['--lz4', o.lz4]),
  ];

  const spawnedAt = performance.now();
  let announce!: (port: number, atMs: number) => void;
  const listening = new Promise<{ port: number; atMs: number }>((resolve) => { announce = (port, atMs) => resolve({ port, atMs }); });
  const receive = new ChildRun('pagewire receive', ...cliCommand(o.netns?.target, receiveArgv), {
    timeoutMs: o.timeoutMs,
    onStderrLine: (line) => {
      const match = /^listening on .+:(\d+)$/.exec(line);
      if (match) announce(Number(match[1]), performance.now() - spawnedAt);
    },
  });
  const receiveRss = new RssSampler(receive.pid, o.regionBytes);
  let send: ChildRun | undefined;
  let sendRss: RssSampler | undefined;
  try {
    const ready = await Promise.race([listening, receive.exited]);
    if (!('port' in ready)) throw new Error(`pagewire receive ended before it listened: ${describeExit(ready)}`);
    const sendArgv = ['send', '--connect', `${host}:${ready.port}`, ...sendArgvRest];
    const lines: string[] = [];
    send = new ChildRun('pagewire send', ...cliCommand(o.netns?.source, sendArgv), {
      timeoutMs: o.timeoutMs,
      onStderrLine: (line) => {
        if (line.startsWith('round=')) lines.push(line);
        if (o.verbose) process.stderr.write(`  send: ${line}\n`);
      },
    });
    sendRss = new RssSampler(send.pid, o.regionBytes);
    killPeerAfterFailure(send, receive);
    killPeerAfterFailure(receive, send);
    const [sent, received] = await Promise.all([
      send.exited.then((exit) => ({ exit, rss: sendRss!.stop() })),
      receive.exited.then((exit) => ({ exit, rss: receiveRss.stop() })),
    ]);
    const sendJson = completedJson(sent.exit, 'pagewire send', received.exit) as unknown as SendJson;
    const receiveJson = completedJson(received.exit, 'pagewire receive', sent.exit) as unknown as ReceiveJson;
    return {
      send: {
        json: sendJson, wallMs: sent.exit.wallMs, rss: sent.rss, argv: sendArgv,
        rounds: roundReports(lines, sendJson.setupTimeMs),
      },
      receive: { json: receiveJson, wallMs: received.exit.wallMs, rss: received.rss, argv: receiveArgv, listeningMs: ready.atMs },
    };
  } finally {
    send?.kill();
    receive.kill();
    sendRss?.stop();
    receiveRss.stop();
  }
}

/** The CLI as a command line, in a network namespace when given one (`ip netns exec` execs node in place: the pid stays node's). */
function cliCommand(netns: string | undefined, argv: string[]): [string, string[]] {
  return netns ? ['ip', ['netns', 'exec', netns, process.execPath, CLI_PATH, ...argv]] : [process.execPath, [CLI_PATH, ...argv]];
}

/**
 * Once one end has failed, the other gets PEER_GRACE_MS to notice and report its side, then is killed:
 * a receive whose source died would otherwise wait out its own silence timeout.
 */
function killPeerAfterFailure(failed: ChildRun, peer: ChildRun): void {
  void failed.exited.then((exit) => {
    if (exit.code !== 0) setTimeout(() => peer.kill(), PEER_GRACE_MS).unref();
  });
}

/** rate=200MB/s,hot=0.05,seed=1, as send's --workload takes it. */
function workloadFlag(w: WorkloadSpec): string {
  return `rate=${w.rateBytesPerSec / 1e6}MB/s,hot=${w.hot},seed=${w.seed}`;
}

/** The --json object of a process that exited 0 with status completed; else an error naming both ends. */
function completedJson(exit: ChildExit, label: string, peer: ChildExit): Record<string, unknown> {
  const json = exit.code === 0 ? lastJsonLine(exit, label) : undefined;
  if (json?.status === 'completed') return json;
  const said = json?.error ?? tryJson(exit)?.error;
  throw new Error(`${label} failed: ${said ? `${String(said)}; ` : ''}${describeExit(exit)} (the other end: ${describeExit(peer)})`);
}

function tryJson(exit: ChildExit): Record<string, unknown> | undefined {
  try {
    return lastJsonLine(exit, '');
  } catch {
    return undefined;
  }
}

/**
 * send's round lines (round= pages= bytes= bw= dirty= pending= est_downtime= page_bw= throttle= elapsed=)
 * as round reports. A line has no duration: it is the time between one round's end (elapsed, since the
 * migration started) and the one before, or the end of the setup for round 1.
 */
function roundReports(lines: string[], setupTimeMs: number): RoundReport[] {
  let previousEnd = setupTimeMs;
  return lines.map((line) => {
    const field = (key: string) => {
      const match = new RegExp(`(?:^| )${key}=(\\S+?)(?:MB/s|ms|%)?(?= |$)`).exec(line);
      if (!match) throw new Error(`send's round line has no ${key}=: ${line}`);
      return match[1] === 'inf' ? Infinity : Number(match[1]);
    };
    const elapsedMs = field('elapsed');
    const report: RoundReport = {
      round: field('round'), pagesSent: field('pages'), bytesSent: field('bytes'), durationMs: Math.max(0, elapsedMs - previousEnd),
      bandwidthBytesPerSec: field('bw') * 1e6, pageBandwidthBytesPerSec: field('page_bw') * 1e6,
      dirtyRateBytesPerSec: field('dirty') * 1e6, pendingPages: field('pending'), expectedDowntimeMs: field('est_downtime'),
      throttlePercent: field('throttle'), elapsedMs,
    };
    previousEnd = elapsedMs;
    return report;
  });
}
