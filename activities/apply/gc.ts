/**
 * A full GC inside a large source transaction (SYNCING_WAL), each time GC_EVERY_TXN_BYTES more of it
 * arrived (only transactions larger than that ever trigger one). Why: a huge transaction passes its
 * whole size through the worker as short-lived objects and Buffers (a 1 GiB one, ~2 GB), and V8 starts
 * a full collection only after the heap has grown by a fraction of itself, so RSS climbs by hundreds
 * of MB over a 1 GiB transaction while what the engine holds stays bounded. The measurements behind
 * the size are in BENCHMARKS.md (session 7, 9e57990).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export const GC_EVERY_TXN_BYTES = 16 * 1024 * 1024;

/** V8's full collection, when it can be had (the flag is set at run time; null: refused). */
let fullGc: (() => void) | null | undefined;
function collectGarbage(): void {
  if (fullGc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      fullGc = runInNewContext('gc') as () => void;
    } catch {
      fullGc = null;
    }
  }
  fullGc?.();
}

export class LargeTxnGc {
  /** Bytes of the current source transaction received since its BEGIN or the last forced GC. */
  private bytes = 0;

  /** `every` 0: never. */
  constructor(private readonly every: number) {}

  /** One message of the stream (`begin`: a BEGIN); true when it was followed by a full GC. */
  note(begin: boolean, size: number): boolean {
    if (begin) {
      this.bytes = 0;
      return false;
    }
    if ((this.bytes += size) < this.every || this.every === 0) return false;
    this.bytes = 0;
    collectGarbage();
    return true;
  }
}
