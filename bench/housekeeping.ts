// What every bench program does around its measurements: name the commit it ran, and leave no child
// process behind.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The checkout's HEAD and whether the work tree differs from it (null outside git). */
export function gitInfo(): { commit: string | null; dirty: boolean | null } {
  const cwd = fileURLToPath(new URL('../../', import.meta.url));
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const status = execFileSync('git', ['status', '--porcelain'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return { commit, dirty: status.trim().length > 0 };
  } catch {
    return { commit: null, dirty: null };
  }
}

/**
 * Our child processes (agents, pagewire processes, QEMUs, iperf3) by pid, from /proc: killed on exit so
 * none outlives the bench. A child started through `ip netns exec` is the program itself by then (ip
 * execs it in place), so it is found too.
 */
export function killChildren(): void {
  let entries: string[];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return;
  }
  for (const pid of entries) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone already, or not ours to read
    }
  }
}

/** The bench's options from its arguments, or undefined after printing why and its usage (exit 2 then). */
export function optionsOrUsage<T>(name: string, usage: string, parse: (argv: string[]) => T): T | undefined {
  try {
    return parse(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${name}: ${(error as Error).message}\n${usage}\n`);
    return undefined;
  }
}
