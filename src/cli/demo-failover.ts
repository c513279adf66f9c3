// `pagewire demo --failover`: replication shown to a person, both hosts on this machine as two real
// processes: a primary with a writer, a standby, the primary killed with SIGKILL, and the standby
// taking over. It prints the epochs, the recovery point and the failover time, and checks the result.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { mbps } from '../migration/metrics.js';
import { writeMixedImage } from '../workload/mixed-image.js';
import type { WorkloadSpec } from '../workload/workload-spec.js';
import { fileDigest } from './file-digest.js';
import { printTable } from './output.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

export interface FailoverDemo {
  dir: string;
  size: number;
  workload: WorkloadSpec;
  epochMs: number;
  /** How long the primary runs before it is killed. */
  runMs: number;
  say(text: string): void;
  signal: AbortSignal;
}

interface Child {
  process: ChildProcess;
  /** Each stdout line as it comes. */
  lines: AsyncIterableIterator<string>;
  exit: Promise<number | null>;
}

function start(args: string[]): Child {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exit = new Promise<number | null>((resolve) => child.once('close', resolve));
  return { process: child, lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator](), exit };
}

async function listeningPort(child: Child): Promise<number> {
  const stderr = createInterface({ input: child.process.stderr! });
  for await (const line of stderr) {
    const match = /listening on [^\s]+:(\d+)/.exec(line);
    if (match) return Number(match[1]);
  }
  throw new Error('the standby exited before it listened');
}

export async function failoverDemo(demo: FailoverDemo): Promise<number> {
  const { dir, size, workload, epochMs, runMs, say } = demo;
  const image = join(dir, 'primary.img');
  const out = join(dir, 'standby.img');
  const released = join(dir, 'released.txt');
  say(`pagewire demo --failover: a ${(size / 2 ** 20).toFixed(0)} MiB image and a writer dirtying ${mbps(workload.rateBytesPerSec)} MB/s ` +
    `of pages, replicated in ${epochMs} ms epochs to a standby process; the primary is killed with SIGKILL after ${runMs / 1000} s\n`);
  writeMixedImage(image, { size });
  const standby = start(['standby', '--listen', '127.0.0.1:0', '--out', out, '--json']);
  const children = [standby];
  const stop = () => { for (const child of children) child.process.kill('SIGKILL'); };
  demo.signal.addEventListener('abort', stop, { once: true });
  try {
    const port = await listeningPort(standby);
    const primary = start(['replicate', '--connect', `127.0.0.1:${port}`, '--image', image, '--epoch-ms', String(epochMs),
      '--workload', `rate=${workload.rateBytesPerSec / 1e6}MB/s,hot=${workload.hot},seed=${workload.seed}`, '--released', released, '--json']);
    children.push(primary);
    const epochs: Array<{ epoch: number; digest: string; pauseMs: number; commitMs: number; counter: number; pages: number }> = [];
    const began = performance.now();
    let killedAt = 0;
    const killer = setTimeout(() => {
      killedAt = performance.now();
      primary.process.kill('SIGKILL');
    }, runMs);
    let shown = 0;
    for await (const line of primary.lines) {
      const event = JSON.parse(line) as Record<string, unknown>;
      if (event.event === 'protected') say(`synced: the standby holds the image (${event.syncedPages} pages sent, ${event.syncMs} ms)`);
      if (event.event !== 'epoch') continue;
      epochs.push(event as unknown as (typeof epochs)[number]);
      const second = Math.floor((performance.now() - began) / 1000);
      if (second > shown || epochs.length === 1) {
        shown = second;
        say(`epoch ${event.epoch}: ${event.pages} pages, pause ${event.pauseMs} ms, committed ${event.commitMs} ms after its capture, ` +
          `released counter ${event.counter}`);
      }
    }
    clearTimeout(killer);
    await primary.exit;
    say(`\nprimary killed (SIGKILL) after epoch ${epochs[epochs.length - 1]?.epoch ?? 'none'}; the standby hears nothing...`);
    let activation: Record<string, unknown> | undefined;
    for await (const line of standby.lines) activation = JSON.parse(line) as Record<string, unknown>;
    const failoverMs = performance.now() - killedAt;
    if ((await standby.exit) !== 0 || activation?.status !== 'activated') {
      say(`the standby did not activate: ${JSON.stringify(activation)}`);
      return 1;
    }
    const counterAt = (path: string) => Number(readFileSync(path).readBigUInt64LE(0));
    const releasedCounters = readFileSync(released, 'utf8').split('\n').filter(Boolean).map(Number);
    const lastReleased = releasedCounters[releasedCounters.length - 1] ?? 0;
    const standbyCounter = counterAt(out);
    const primaryCounter = counterAt(image);
    const digestOk = fileDigest(out, 4096).digest === activation.digest;
    const pauses = epochs.map((e) => e.pauseMs).sort((a, b) => a - b);
    printTable([
      ['epochs committed', `${epochs.length} (pause median ${pauses[Math.floor(pauses.length / 2)] ?? 0} ms, max ${pauses[pauses.length - 1] ?? 0} ms)`],
      ['activated epoch', `${activation.epoch} (digest ${activation.digest}${digestOk ? ', matches the standby image' : ', MISMATCH'})`],
      ['failover', `${failoverMs.toFixed(0)} ms from the kill to the standby's exit (silence ${activation.detectMs} ms, activation ${activation.activateMs} ms)`],
      ['recovery point', `write ${standbyCounter} of the ${primaryCounter} the primary made before it died (${primaryCounter - standbyCounter} writes ` +
        'since the last commit, never released)'],
      ['output released', `up to write ${lastReleased}: ${standbyCounter >= lastReleased ? 'all of it in the standby image' : 'NOT all in the standby image'}`],
    ]);
    const ok = digestOk && standbyCounter >= lastReleased;
    say(ok ? '\nthe standby holds exactly one committed epoch, and everything released' : '\nFAILED: see above');
    return ok ? 0 : 1;
  } finally {
    demo.signal.removeEventListener('abort', stop);
    stop();
  }
}
