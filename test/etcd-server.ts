// A real etcd for the tests: one member on 127.0.0.1, on free ports, with a fresh data directory. CI
// installs etcd (.ci/run sets PAGEWIRE_REQUIRE_ETCD); elsewhere the tests that need it are skipped.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

const ETCD = existsSync('/usr/bin/etcd') ? '/usr/bin/etcd' : 'etcd';
/** How long etcd may take to answer /health healthy. */
const READY_TIMEOUT_MS = 20_000;
const POLL_MS = 50;
/** Tries when a port found free is taken before etcd binds it. */
const START_ATTEMPTS = 3;

export interface RunningEtcd {
  /** Its client URL, `http://127.0.0.1:<port>`. */
  endpoint: string;
  /** SIGTERM, wait for the exit, remove the data directory. Safe to call twice, and after kill(). */
  stop(): Promise<void>;
  /** Sends `signal` (SIGKILL unless given): a coordinator that dies, or with SIGSTOP one that hangs. */
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Whether an etcd binary runs here. With PAGEWIRE_REQUIRE_ETCD set it throws instead of returning false,
 * so that a machine meant to run the etcd tests fails them rather than skipping them.
 */
export function etcdAvailable(): boolean {
  const found = spawnSync(ETCD, ['--version']).status === 0;
  if (!found && process.env.PAGEWIRE_REQUIRE_ETCD) throw new Error(`PAGEWIRE_REQUIRE_ETCD is set but ${ETCD} is missing`);
  return found;
}

/** `count` distinct ports on 127.0.0.1 that were free a moment ago (all held open at once, then released). */
async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
    }
    return servers.map((server) => (server.address() as { port: number }).port);
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

const running = new Set<RunningEtcd>();
// A test process that ends without stop() leaves no etcd behind.
process.once('exit', () => { for (const etcd of running) etcd.kill('SIGKILL'); });

/** A single-member etcd, healthy (GET /health says so) when this resolves. */
export async function startEtcd(): Promise<RunningEtcd> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce();
    } catch (error) {
      if (attempt === START_ATTEMPTS || !/address already in use/.test((error as Error).message)) throw error;
    }
  }
}

async function startOnce(): Promise<RunningEtcd> {
  const [clientPort, peerPort] = await freePorts(2);
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'pagewire-etcd-'));
  const child = spawn(ETCD, [
    '--name', 'pw-test', '--data-dir', dataDir,
    '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `pw-test=${peer}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-8192); });
  // 'close' comes after the exit, or after a failed spawn (which has no exit).
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.once('error', (error) => { stderr += `\n${error.message}`; });
  let stopped: Promise<void> | undefined;
  const etcd: RunningEtcd = {
    endpoint,
    kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    stop() {
      stopped ??= (async () => {
        etcd.kill('SIGTERM');
        etcd.kill('SIGCONT'); // after a kill('SIGSTOP'), so that the SIGTERM is acted on
        await exited;
        running.delete(etcd);
        rmSync(dataDir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
  running.add(etcd);
  const tail = () => stderr.trim().split('\n').slice(-10).join('\n');
  let gone = false;
  void exited.then(() => { gone = true; });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await healthy(endpoint))) {
    if (gone || Date.now() > deadline) {
      await etcd.stop();
      throw new Error(`etcd on ${endpoint} ${gone ? 'exited' : `was not healthy within ${READY_TIMEOUT_MS} ms`}; its stderr ends:\n${tail()}`);
    }
    await delay(POLL_MS);
  }
  return etcd;
}

async function healthy(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    return ((await response.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}
