// The workload as the source has left it through the embedder's hooks: paused or not, throttled by how
// much. Knowing that is what lets a failure before READY give the workload back as it was, and only
// once no hook given up on can still undo it (a `resume` never overlaps a `pause` in flight).
import { SwitchoverError, type PagewireError } from '../errors.js';
import { HookRunner } from '../migration/hook-runner.js';
import type { SourceSettings } from '../migration/source-options.js';
import { DeviceStateFeed } from './device-state-feed.js';

export class WorkloadControl {
  private readonly hooks: HookRunner;
  private pausedNow = false;
  private deviceStateFeed: DeviceStateFeed | undefined;
  private throttleNow = 0;

  /** `task` names what the workload is paused for in messages: a migration, a snapshot. */
  constructor(private readonly settings: Pick<SourceSettings, 'hooks' | 'hookTimeoutMs' | 'signal'>, private readonly task = 'migration') {
    this.hooks = new HookRunner(settings.hookTimeoutMs, settings.signal, task);
  }

  /** The throttle in force, in percent (0: full speed). */
  get throttlePercent(): number {
    return this.throttleNow;
  }

  async pause(): Promise<void> {
    // Counted as paused from the call on: if the hook fails half-way, restore() still resumes.
    this.pausedNow = true;
    await this.hooks.run('pause', (hookSignal) => this.settings.hooks.pause(hookSignal));
  }

  /** Resumes the workload after a pause that served its purpose (a snapshot's). */
  async resume(): Promise<void> {
    await this.hooks.run('resume', (hookSignal) => this.settings.hooks.resume(hookSignal), false);
    this.pausedNow = false;
  }

  async throttle(percent: number): Promise<void> {
    // Counted from the call on: if the hook fails half-way, restore() still gives the speed back.
    this.throttleNow = percent;
    await this.hooks.run('throttle', (hookSignal) => this.settings.hooks.throttle!(percent, hookSignal));
  }

  /**
   * Starts collecting the device state (empty without the hook), beside what the caller does next. The
   * whole collection, streamed parts included, is one hook run: bounded by hookTimeoutMs and the abort.
   */
  collectDeviceState(): DeviceStateFeed {
    const { deviceState } = this.settings.hooks;
    this.deviceStateFeed = new DeviceStateFeed(async (add, stopped) => {
      if (!deviceState) return;
      await this.hooks.run('deviceState',
        async (hookSignal) => DeviceStateFeed.each(await deviceState(AbortSignal.any([hookSignal, stopped])), add));
    });
    return this.deviceStateFeed;
  }

  /**
   * After a failure before READY: gives the workload its full speed back and resumes it. Returns the
   * error to report, wrapped in a SwitchoverError ('source-paused') when the workload may stay paused.
   */
  async restore(error: PagewireError): Promise<PagewireError> {
    // A device state still being collected (QEMU's migrate) is told to stop; resume waits until it has.
    if (this.deviceStateFeed) {
      this.deviceStateFeed.abort(error);
      this.hooks.awaitBeforeOpposite(this.deviceStateFeed.settled);
    }
    if ((this.pausedNow || this.throttleNow > 0) && !await this.hooks.settled()) {
      // A pause (or throttle) hook given up on is still running: resuming now could be undone by it.
      return new SwitchoverError(
        `${this.task} failed (${error.message}) while a hook given up on was still running after a further ` +
        `${this.settings.hookTimeoutMs} ms; resume was not called, so as not to overlap it: the workload may be paused ` +
        'on the source', 'source-paused', { cause: error });
    }
    if (this.throttleNow > 0) {
      // The workload stays here: give it its full speed back. A hook failing now changes nothing more.
      try {
        await this.hooks.run('throttle', (hookSignal) => this.settings.hooks.throttle!(0, hookSignal), false);
        this.throttleNow = 0;
      } catch {
        // The failure being reported matters more; the summary still shows the throttle in force.
      }
    }
    if (this.pausedNow) {
      // Before READY the target discards everything, so the workload simply goes on here.
      try {
        await this.hooks.run('resume', (hookSignal) => this.settings.hooks.resume(hookSignal), false);
        this.pausedNow = false;
      } catch (resumeError) {
        return new SwitchoverError(
          `${this.task} failed (${error.message}) and the workload's resume hook failed too ` +
          `(${(resumeError as Error).message}): the workload is paused on the source`, 'source-paused', { cause: error });
      }
    }
    return error;
  }
}
