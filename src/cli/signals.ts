/**
 * An AbortSignal fired by SIGINT or SIGTERM, so a CLI run stops cleanly through the normal abort path.
 * A second signal exits at once (130 or 143), for when the clean path itself is stuck.
 */
export function abortOnSignals(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      process.stderr.write(`pagewire: ${name} again: exiting without cleaning up\n`);
      process.exit(name === 'SIGINT' ? 130 : 143);
    }
    controller.abort(new Error(`received ${name}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
