// The addon runs its batch calls on a libuv pool thread and settles their promises on a later turn of
// the event loop. The twin does the work at once, on the calling thread, and settles as late.

/** Runs work now; the promise settles on a later turn, after `settled` (which frees what the call held). */
export function settleLater<T>(work: () => T, settled: () => void = () => {}): Promise<T> {
  let outcome: { value: T } | { error: unknown };
  try {
    outcome = { value: work() };
  } catch (error) {
    outcome = { error };
  }
  return new Promise<T>((resolve, reject) => {
    setImmediate(() => {
      settled();
      if ('value' in outcome) resolve(outcome.value);
      else reject(outcome.error);
    });
  });
}
