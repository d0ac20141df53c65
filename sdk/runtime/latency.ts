/**
 * Latency of several models on the same batches, compared fairly on a shared host.
 */
import * as ort from 'onnxruntime-node';
import { Feeds } from './runner';

/** The middle value (the upper middle of an even count). */
export function median(values: readonly number[]): number {
  return [...values].sort((x, y) => x - y)[values.length >> 1];
}

export async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * Median latency (ms) of each model, measured in alternating rounds (each round: for each model
 * a fresh session, two warm-up runs, four timed runs, release), so that a slow stretch of a
 * shared host weighs on every model alike. A model is bytes or a path (a path when its weights
 * live in external data).
 */
export async function pairedLatencies(models: ReadonlyArray<Uint8Array | string>, batches: readonly Feeds[], rounds = 4): Promise<number[]> {
  const times: number[][] = models.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (const [k, model] of models.entries()) {
      const s = typeof model === 'string' ? await ort.InferenceSession.create(model, { logSeverityLevel: 3 }) : await ort.InferenceSession.create(model, { logSeverityLevel: 3 });
      try {
        for (let i = 0; i < 2; i++) await s.run(batches[i % batches.length]);
        for (let i = 0; i < 4; i++) times[k].push(await timeMs(() => s.run(batches[i % batches.length])));
      } finally {
        await s.release();
      }
    }
  }
  return times.map(median);
}
