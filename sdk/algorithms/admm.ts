/**
 * ADMM-style weight quantization (msModelSlim keep_acc 'admm'): per output channel, alternate
 * between the integers for a scale and the least-squares scale for those integers,
 *   q = clamp(round(w/s) + z) − z,   s = ⟨w, q⟩ / ⟨q, q⟩,
 * which lowers ‖w − s·q‖² below min/max scaling (the max no longer dictates the step when
 * clipping one large weight helps the many small ones). Starts from the min/max scale.
 */
import { QParams } from '../observers/qparams';
import { roundHalfEven } from '../kernels/quant';

export interface AdmmResult { scale: Float32Array; values: Int32Array; mseBefore: number; mseAfter: number }

export function admmWeights(w: Float32Array, dims: number[], axis: number, q: QParams, iterations: number): AdmmResult {
  const channels = q.scale.length > 1 ? dims[axis] : 1;
  const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const indices = (c: number): number[] => {
    if (channels === 1) return Array.from({ length: w.length }, (_, i) => i);
    const out: number[] = [];
    for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) out.push((o * dims[axis] + c) * inner + i);
    return out;
  };
  const scale = Float32Array.from(q.scale);
  const values = new Int32Array(w.length);
  let before = 0;
  let after = 0;
  for (let c = 0; c < channels; c++) {
    const idx = indices(c);
    const z = q.zeroPoint[c] ?? 0;
    const quant = (s: number) => idx.map((i) => Math.min(q.qmax, Math.max(q.qmin, roundHalfEven(w[i] / s) + z)) - z);
    const err = (s: number, ints: number[]) => idx.reduce((e, i, k) => e + (w[i] - Math.fround(s) * ints[k]) ** 2, 0);
    let s = scale[c];
    let ints = quant(s);
    const start = err(s, ints);
    let best = { s, ints, e: start };
    for (let it = 0; it < iterations; it++) {
      let num = 0;
      let den = 0;
      idx.forEach((i, k) => { num += w[i] * ints[k]; den += ints[k] * ints[k]; });
      if (!(den > 0) || !(num > 0)) break;
      const next = num / den;
      const nextInts = quant(next);
      const e = err(next, nextInts);
      if (e < best.e) best = { s: next, ints: nextInts, e };
      if (Math.abs(next - s) <= 1e-7 * s) break;
      s = next;
      ints = nextInts;
    }
    scale[c] = Math.fround(best.s);
    idx.forEach((i, k) => { values[i] = best.ints[k] + z; });
    before += start;
    after += best.e;
  }
  return { scale, values, mseBefore: before / w.length, mseAfter: after / w.length };
}
