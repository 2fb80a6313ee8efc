/** Temporal's own log level for in-process workers (tests, demo, benchmarks): warnings and up. */
import { DefaultLogger, Runtime } from '@temporalio/worker';

let installed = false;
export function quietTemporalLogs(level: 'WARN' | 'ERROR' = 'WARN'): void {
  if (installed) return;
  installed = true;
  try {
    Runtime.install({ logger: new DefaultLogger(level) });
  } catch {
    // A runtime already exists (installed by someone else first): keep it.
  }
}
