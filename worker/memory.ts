/**
 * PG_DTS_MEMORY_LOG_MS: one line of this process's memory every so often, on stderr, for finding where
 * a worker's memory goes (bench/ reads these lines from the worker's log).
 *   memory rss=… heapUsed=… heapTotal=… external=… arrayBuffers=… newSpace=… (MB)
 */
import { getHeapSpaceStatistics } from 'node:v8';

const MB = 1024 * 1024;

export function memoryLine(): string {
  const m = process.memoryUsage();
  const newSpace = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
  const f = (n: number) => (n / MB).toFixed(1);
  return `memory t=${Date.now()} rss=${f(m.rss)} heapUsed=${f(m.heapUsed)} heapTotal=${f(m.heapTotal)} external=${f(m.external)} arrayBuffers=${f(m.arrayBuffers)} newSpace=${f(newSpace)}`;
}

export function startMemoryLog(everyMs: number): () => void {
  const timer = setInterval(() => process.stderr.write(`${memoryLine()}\n`), everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
