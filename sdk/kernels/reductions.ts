/**
 * The reductions calibration runs on every activation of every batch, in two
 * implementations with one interface: plain typed-array loops and tfjs ops on the selected
 * backend. `chooseReductions()` times both on this machine and keeps the faster per kernel.
 */
import * as tf from '@tensorflow/tfjs';
import { forEachChannel, isLastAxis, roundHalfEven } from './quant';

export interface MinMax { min: number; max: number }
export interface ChannelMinMax { min: Float64Array; max: Float64Array }
export interface Moments { count: number; sum: number; sumSq: number }

export interface Reductions {
  minMax(x: Float32Array): MinMax;
  channelMinMax(x: Float32Array, shape: readonly number[], axis: number): ChannelMinMax;
  moments(x: Float32Array): Moments;
  /** Σ (fakequant(x) − x)² for one per-tensor scale/zero point */
  qdqSquaredError(x: Float32Array, scale: number, zeroPoint: number, qmin: number, qmax: number): number;
}

export const loopReductions: Reductions = {
  minMax(x) {
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    return { min, max };
  },
  channelMinMax(x, shape, axis) {
    const channels = shape[axis];
    const min = new Float64Array(channels).fill(Infinity);
    const max = new Float64Array(channels).fill(-Infinity);
    if (isLastAxis(channels, shape, axis)) {
      // a MatMul weight [K, N]: rows in order, every channel once per row
      for (let row = 0; row < x.length; row += channels) {
        for (let c = 0; c < channels; c++) {
          const v = x[row + c];
          if (v < min[c]) min[c] = v;
          if (v > max[c]) max[c] = v;
        }
      }
      return { min, max };
    }
    forEachChannel(x.length, channels, shape, axis, (start, end, _s, c) => {
      let lo = min[c];
      let hi = max[c];
      for (let i = start; i < end; i++) {
        const v = x[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      min[c] = lo;
      max[c] = hi;
    });
    return { min, max };
  },
  moments(x) {
    let sum = 0;
    let sumSq = 0;
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      sum += v;
      sumSq += v * v;
    }
    return { count: x.length, sum, sumSq };
  },
  qdqSquaredError(x, scale, zeroPoint, qmin, qmax) {
    let err = 0;
    for (let i = 0; i < x.length; i++) {
      let q = roundHalfEven(Math.fround(x[i] / scale)) + zeroPoint;
      q = q < qmin ? qmin : q > qmax ? qmax : q;
      const d = Math.fround((q - zeroPoint) * scale) - x[i];
      err += d * d;
    }
    return err;
  },
};

/** Runs `fn` and frees every tensor it made (tf.tidy only returns tensors; these return numbers). */
function scoped<T>(fn: () => T): T {
  tf.engine().startScope();
  try {
    return fn();
  } finally {
    tf.engine().endScope();
  }
}

const PARTIALS = 1024;

/**
 * Σ of a 1-D tensor: tfjs sums in float32, which loses small terms next to large ones; summing
 * PARTIALS rows on the backend and the row sums in float64 here keeps the result accurate.
 * The padding is zeros, which add nothing to any of the sums below.
 */
function accurateSum(t: tf.Tensor1D): number {
  const n = t.shape[0];
  const rows = Math.min(PARTIALS, n);
  const cols = Math.ceil(n / rows);
  const padded = rows * cols === n ? t : tf.pad(t, [[0, rows * cols - n]]);
  let total = 0;
  for (const v of padded.reshape([rows, cols]).sum(1).dataSync()) total += v;
  return total;
}

export const tfjsReductions: Reductions = {
  minMax(x) {
    return scoped(() => {
      const t = tf.tensor1d(x);
      const [min, max] = [t.min().dataSync()[0], t.max().dataSync()[0]];
      return { min, max };
    });
  },
  channelMinMax(x, shape, axis) {
    const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    return scoped(() => {
      const t = tf.tensor3d(x, [outer, shape[axis], inner]);
      return { min: Float64Array.from(t.min([0, 2]).dataSync()), max: Float64Array.from(t.max([0, 2]).dataSync()) };
    });
  },
  moments(x) {
    return scoped(() => {
      const t = tf.tensor1d(x);
      return { count: x.length, sum: accurateSum(t), sumSq: accurateSum(t.square() as tf.Tensor1D) };
    });
  },
  qdqSquaredError(x, scale, zeroPoint, qmin, qmax) {
    return scoped(() => {
      const t = tf.tensor1d(x);
      const q = tf.clipByValue(tf.round(tf.div(t, scale)).add(zeroPoint), qmin, qmax);
      return accurateSum(tf.squaredDifference(q.sub(zeroPoint).mul(scale), t) as tf.Tensor1D);
    });
  },
};

export type ReductionImpl = 'loop' | 'tfjs';
export type ReductionChoice = Record<keyof Reductions, ReductionImpl>;

let chosen: Reductions = loopReductions;
let choice: ReductionChoice = { minMax: 'loop', channelMinMax: 'loop', moments: 'loop', qdqSquaredError: 'loop' };

/** The reductions in use (loops until `chooseReductions` or `useReductions` says otherwise). */
export function reductions(): Reductions {
  return chosen;
}

export function reductionChoice(): ReductionChoice {
  return { ...choice };
}

/** Forces one implementation for every kernel. */
export function useReductions(impl: ReductionImpl): void {
  chosen = impl === 'loop' ? loopReductions : tfjsReductions;
  choice = { minMax: impl, channelMinMax: impl, moments: impl, qdqSquaredError: impl };
}

/** Median time of `fn` over `reps` runs, in ms. */
export function timeIt(fn: () => unknown, reps = 5): number {
  fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return times.sort((a, b) => a - b)[Math.floor(reps / 2)];
}

/**
 * Times both implementations of each kernel on an activation-sized sample (call after
 * `initBackend`) and uses the faster one per kernel. Returns the timings for the bench table.
 */
export function chooseReductions(sampleSize = 1 << 20): Record<keyof Reductions, { loop: number; tfjs: number }> {
  const x = new Float32Array(sampleSize);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * 3;
  const shape = [4, 64, sampleSize / 256];
  const runs: Record<keyof Reductions, (r: Reductions) => unknown> = {
    minMax: (r) => r.minMax(x),
    channelMinMax: (r) => r.channelMinMax(x, shape, 1),
    moments: (r) => r.moments(x),
    qdqSquaredError: (r) => r.qdqSquaredError(x, 0.02, 3, -128, 127),
  };
  const timings = {} as Record<keyof Reductions, { loop: number; tfjs: number }>;
  const picked = {} as Reductions;
  for (const k of Object.keys(runs) as Array<keyof Reductions>) {
    timings[k] = { loop: timeIt(() => runs[k](loopReductions)), tfjs: timeIt(() => runs[k](tfjsReductions)) };
    choice[k] = timings[k].tfjs < timings[k].loop ? 'tfjs' : 'loop';
    (picked as unknown as Record<string, unknown>)[k] = (choice[k] === 'tfjs' ? tfjsReductions : loopReductions)[k];
  }
  chosen = picked;
  return timings;
}
