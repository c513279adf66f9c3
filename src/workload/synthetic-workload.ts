// A synthetic writer in a worker thread: it writes 64 random bytes at a random offset of a chosen page,
// then marks the page in the shared dirty bitmap, at a set dirty rate. It obeys pause, resume and a
// throttle through a shared control word, and acknowledges a pause only once its last write is marked.
import { Worker } from 'node:worker_threads';
import type { DirtyBitmap } from '../memory/dirty-bitmap.js';
import type { WorkloadSpec } from './workload-spec.js';

export enum WorkloadCommand { Run = 0, Pause = 1, Stop = 2 }
export enum WorkloadState { Starting = 0, Running = 1, Paused = 2, Stopped = 3 }
/** Int32 slots of the control buffer. */
export enum ControlSlot { Command = 0, State = 1, Writes = 2, ThrottlePercent = 3 }

/** Where the writer writes: a file it maps itself (MAP_SHARED), or shared memory. */
export type WorkloadMemory = { path: string } | { buffer: SharedArrayBuffer };

export interface WriterInit {
  memory: WorkloadMemory;
  pageSize: number;
  pageCount: number;
  bitmap: SharedArrayBuffer;
  control: SharedArrayBuffer;
  spec: WorkloadSpec;
}

export class SyntheticWorkload {
  private readonly control: Int32Array;

  private constructor(private readonly worker: Worker, control: SharedArrayBuffer) {
    this.control = new Int32Array(control);
  }

  static async start(memory: WorkloadMemory, bitmap: DirtyBitmap, pageSize: number, spec: WorkloadSpec): Promise<SyntheticWorkload> {
    const control = new SharedArrayBuffer(4 * 4);
    const init: WriterInit = { memory, pageSize, pageCount: bitmap.pageCount, bitmap: bitmap.buffer, control, spec };
    const worker = new Worker(new URL('./synthetic-writer.js', import.meta.url), { workerData: init });
    const workload = new SyntheticWorkload(worker, control);
    await new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`workload worker exited with code ${code} before starting`)));
    });
    worker.removeAllListeners('error');
    worker.removeAllListeners('exit');
    worker.on('error', (error) => { workload.death = error; });
    worker.on('exit', (code) => { workload.death ??= new Error(`workload worker exited with code ${code}`); });
    return workload;
  }

  /** Why the writer thread is gone, if it died rather than stopped. */
  private death: Error | undefined;

  /** Page writes done so far (wraps at 2^31). */
  get writes(): number {
    return Atomics.load(this.control, ControlSlot.Writes);
  }

  /** Resolves once the writer has stopped writing; every write it made is marked in the bitmap. */
  async pause(): Promise<void> {
    this.command(WorkloadCommand.Pause);
    await this.waitFor(WorkloadState.Paused);
  }

  resume(): void {
    this.command(WorkloadCommand.Run);
  }

  /** Auto-converge: write at (100 - percent)% of the set rate from now on, as QEMU's cpu-throttle does. */
  throttle(percent: number): void {
    Atomics.store(this.control, ControlSlot.ThrottlePercent, Math.max(0, Math.min(99, Math.round(percent))));
    Atomics.notify(this.control, ControlSlot.Command);
  }

  /** Stops the writer for good and ends the thread. */
  async stop(): Promise<void> {
    this.command(WorkloadCommand.Stop);
    await this.waitFor(WorkloadState.Stopped);
    await this.worker.terminate();
  }

  private command(command: WorkloadCommand): void {
    Atomics.store(this.control, ControlSlot.Command, command);
    Atomics.notify(this.control, ControlSlot.Command);
  }

  private async waitFor(state: WorkloadState): Promise<void> {
    for (;;) {
      const now = Atomics.load(this.control, ControlSlot.State);
      if (now === state || now === WorkloadState.Stopped) return;
      // A dead writer writes nothing more, which is all a pause or a stop waits for.
      if (this.death) return;
      const { async, value } = Atomics.waitAsync(this.control, ControlSlot.State, now, 1000);
      if (async) await value;
    }
  }
}
