// How much CPU the rest of the machine used while we measured: total busy time from /proc/stat minus
// the time of the bench's own processes (/proc/<pid>/stat, threads and exited children included). On a shared 2-core box a
// concurrent test run can halve a loopback copy's speed, so every repetition records this.
import { readFileSync } from 'node:fs';

interface Sample {
  busy: number;
  all: number;
  ours: number;
}

function readSample(pids: number[]): Sample | undefined {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already inside user/nice)
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = cpu;
    const busy = user + nice + system + irq + softirq + steal;
    let ours = 0;
    for (const pid of pids) {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Fields after the command name (which may contain spaces): utime and stime are fields 14 and 15,
      // cutime and cstime (16, 17) those of its children that have exited: the pagewire processes and
      // write floors the bench spawns and waits for.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ours += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    }
    return { busy, all: busy + idle + iowait, ours };
  } catch {
    return undefined;
  }
}

/** Starts a measurement; the returned function gives the others' CPU as % of the whole machine, or null. */
export function startCpuNoise(pids: number[]): () => number | null {
  const before = readSample(pids);
  return () => {
    const after = readSample(pids);
    if (!before || !after || after.all <= before.all) return null;
    const foreign = (after.busy - before.busy) - (after.ours - before.ours);
    return Math.max(0, (100 * foreign) / (after.all - before.all));
  };
}
