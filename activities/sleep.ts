/**
 * An abortable sleep for activities that poll (the fence's backoff, the live validation's re-reads):
 * it resolves at the timeout or at the abort, whichever comes first, and takes its listener off the
 * signal either way. Its own module so that neither caller imports the other's phase.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
