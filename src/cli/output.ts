// What a person or a script sees: a progress line that redraws on a TTY (a log line per round
// otherwise), a summary table, and with --json exactly one JSON object on the last stdout line.
import { formatRoundLine, mbps, type RoundProgress, type RoundReport } from '../migration/metrics.js';

export class ProgressLine {
  private lastDraw = 0;
  private drawn = false;
  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get tty(): boolean {
    return this.stream.isTTY === true;
  }

  progress(p: RoundProgress, dirtyRate: number): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.lastDraw < 100) return;
    this.lastDraw = now;
    this.draw(`round ${p.round} | pages left ${p.pagesLeft} | ${mbps(p.bytesPerSec)} MB/s | dirty ${mbps(dirtyRate)} MB/s` +
      (p.throttlePercent > 0 ? ` | throttle ${p.throttlePercent}%` : ''));
  }

  round(r: RoundReport): void {
    if (this.tty) this.draw(`round ${r.round} done | ${r.pendingPages} pages dirty | ${mbps(r.bandwidthBytesPerSec)} MB/s | ` +
      `dirty ${mbps(r.dirtyRateBytesPerSec)} MB/s | est. downtime ${r.expectedDowntimeMs.toFixed(0)} ms` +
      (r.throttlePercent > 0 ? ` | throttle ${r.throttlePercent}%` : ''));
    else this.stream.write(formatRoundLine(r) + '\n');
  }

  message(text: string): void {
    this.end();
    this.stream.write(text + '\n');
  }

  end(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }

  private draw(text: string): void {
    this.stream.write(`\r\x1b[2K${text}`);
    this.drawn = true;
  }
}

export function printTable(rows: Array<[string, string | number]>, stream: NodeJS.WritableStream = process.stdout): void {
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [key, value] of rows) stream.write(`  ${key.padEnd(width)}  ${value}\n`);
}

export function printJson(value: object): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}

/** Milliseconds to one decimal, for JSON. */
export function roundMs(ms: number): number {
  return Math.round(ms * 10) / 10;
}
