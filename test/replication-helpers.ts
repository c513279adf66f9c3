// What the replication tests share: the CLI's JSON lines, the synthetic writer's counter, and waiting
// for a process's output as it arrives.
import { existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { spawnCli, type Spawned } from './helpers.js';

export interface EpochLine {
  event: 'epoch';
  epoch: number;
  digest: string;
  pages: number;
  token: number;
  counter: number;
  /** Released with no standby (--release-unprotected). */
  unprotected?: boolean;
}

/** The complete JSON lines a process printed (a killed one may have left half a line). */
export function jsonLines(text: string): Array<Record<string, unknown>> {
  return text.split('\n').filter((line) => line.startsWith('{') && line.endsWith('}')).map((line) => JSON.parse(line) as Record<string, unknown>);
}

export function epochLines(text: string): EpochLine[] {
  return jsonLines(text).filter((line) => line.event === 'epoch') as unknown as EpochLine[];
}

/** The synthetic writer's counter: the image's first 8 bytes. */
export function counterOf(path: string): number {
  return Number(readFileSync(path).readBigUInt64LE(0));
}

export function releasedValues(path: string): number[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map(Number) : [];
}

/** Resolves once `predicate` holds for the process's stdout, checked as output arrives. */
export function untilStdout(process: Spawned, predicate: (text: string) => boolean, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!predicate(process.stdout())) return false;
      process.child.stdout!.off('data', check);
      resolve();
      return true;
    };
    if (check()) return;
    process.child.stdout!.on('data', check);
    void process.exit.then(() => { if (!check()) reject(new Error(`exited before ${what}:\n${process.stderr()}`)); });
  });
}

export async function startStandby(out: string, extra: string[] = []): Promise<Spawned & { port: number }> {
  const standby = spawnCli(['standby', '--listen', '127.0.0.1:0', '--out', out, '--json', ...extra]);
  const match = await standby.waitForStderr(/listening on [^\s]+:(\d+)/);
  return Object.assign(standby, { port: Number(match[1]) });
}

/** An all-zero (sparse) image of `bytes`. */
export function freshImage(path: string, bytes: number): void {
  writeFileSync(path, '');
  truncateSync(path, bytes);
}
