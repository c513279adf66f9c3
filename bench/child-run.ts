// One program the bench runs as a child process (a `pagewire` command, the write floor): its wall time
// from spawn to exit as the bench sees it, its stdout, the tail of its stderr line by line, and a
// deadline after which it is killed, so no run outlives its step.
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';

/** How much of a child's stderr is kept for error messages. */
const STDERR_KEEP = 4096;

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** From spawn() to the exit event, on the bench's clock. */
  wallMs: number;
  stdout: string;
  stderrTail: string;
  /** Set when the deadline killed the child, or it could not be started. */
  failure?: string;
}

export interface ChildRunOptions {
  timeoutMs: number;
  /** Each complete line the child writes on stderr, as it arrives. */
  onStderrLine?: (line: string) => void;
}

export class ChildRun {
  readonly pid: number;
  /** Settles (never rejects) once the child has exited and its output is read. */
  readonly exited: Promise<ChildExit>;
  private readonly child: ChildProcess;

  constructor(readonly label: string, command: string, args: string[], options: ChildRunOptions) {
    const started = performance.now();
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.child.pid ?? -1;
    let stdout = '';
    let stderrTail = '';
    let partial = '';
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      stderrTail = (stderrTail + chunk).slice(-STDERR_KEEP);
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!;
      for (const line of lines) options.onStderrLine?.(line);
    });
    let failure: string | undefined;
    let wallMs = NaN;
    const timer = setTimeout(() => {
      failure = `${label} did not exit within ${options.timeoutMs} ms and was killed`;
      this.kill();
    }, options.timeoutMs);
    this.child.once('exit', () => { wallMs = performance.now() - started; });
    this.exited = new Promise((resolve) => {
      this.child.once('error', (error) => {
        clearTimeout(timer);
        resolve({ code: null, signal: null, wallMs, stdout, stderrTail, failure: `${label} could not be started: ${error.message}` });
      });
      // 'close' comes after 'exit' once stdout and stderr are drained.
      this.child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (partial) options.onStderrLine?.(partial);
        resolve({ code, signal, wallMs, stdout, stderrTail, ...(failure ? { failure } : {}) });
      });
    });
  }

  /** SIGKILL: a stuck child may sit in a native call; safe to call more than once. */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** The JSON object on the last non-empty stdout line, as `--json` prints it; throws if there is none. */
export function lastJsonLine(exit: ChildExit, label: string): Record<string, unknown> {
  const line = exit.stdout.trimEnd().split('\n').pop() ?? '';
  try {
    const value: unknown = JSON.parse(line);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below, with what the child said
  }
  throw new Error(`${label}: no JSON object on the last stdout line (${describeExit(exit)})`);
}

/** How a child ended, with the end of its stderr, for error messages. */
export function describeExit(exit: ChildExit): string {
  const how = exit.failure ?? (exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`);
  const said = exit.stderrTail.trim().split('\n').slice(-3).join(' | ');
  return said ? `${how}; stderr: ${said}` : how;
}
