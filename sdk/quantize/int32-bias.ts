/**
 * Weight scales that keep every int32 bias exact and every scale a normal float.
 *
 * A bias is stored as round(b / (s_x · s_w[c])) in int32. Two things break that on real models:
 * - a channel whose weights are dead (BatchNorm folding with γ ≈ 0 leaves weights ~1e-40) gets a
 *   weight scale ~1e-42: a denormal (slow on CPUs), and b / (s_x · s_w) leaves int32, so the
 *   bias saturates and the layer computes the wrong bias;
 * - a large bias over a small weight range does the same with normal scales.
 * ONNX Runtime's own quantizer answers both by raising that channel's weight scale; so do we.
 * The raised channel's weights are requantized on the coarser grid (a dead channel's weights all
 * become 0, which they are to float32 precision), and the bias then fits with room to spare.
 */
import { quantizeValue, roundHalfEven } from '../kernels/quant';

/** No weight scale is written below this: well inside float32's normal range, even times an activation scale. */
export const WEIGHT_SCALE_FLOOR = Math.fround(1e-30);

/**
 * |int32 bias| stays within 2^30: half of int32, leaving the other half to the accumulator and to
 * the zero-point correction −z_x·Σw that msModelSlim folds into quant_bias (|z_x·Σw| ≤ 128·127·K).
 */
export const BIAS_LIMIT = 2 ** 30;

/** One integer weight with one scale and zero point per output channel (even when written per tensor). */
export interface ChannelWeight {
  int8: Int8Array | Uint8Array;
  scale: Float32Array;
  zeroPoint: Int32Array;
}

export interface RaisedChannel {
  channel: number;
  from: number;
  to: number;
  reason: 'scale floor' | 'bias range';
}

/** The weight scale channel c needs: at least the floor, and large enough for its bias to fit BIAS_LIMIT. */
function requiredScale(current: number, bias: number | undefined, inputScale: number | undefined): number {
  let s = Math.max(current, WEIGHT_SCALE_FLOOR);
  if (bias && inputScale) {
    const fits = (w: number) => Math.abs(bias / Math.fround(w * inputScale)) <= BIAS_LIMIT;
    if (!fits(s)) {
      s = Math.fround(Math.abs(bias) / (inputScale * BIAS_LIMIT));
      while (!fits(s)) s = Math.fround(s * (1 + 2 ** -20)); // float32 rounding of the products
    }
  }
  return Math.fround(s);
}

/**
 * Raises the weight scales that need it (see the module comment) and requantizes those channels
 * by round to nearest; `q` is changed in place. Per-tensor weights (one scale written) raise all
 * channels together. Returns the channels raised.
 */
export function settleWeightScales(
  w: { data: Float32Array; dims: readonly number[]; axis: number },
  q: ChannelWeight,
  range: { qmin: number; qmax: number; symmetric: boolean },
  options: { bias?: Float32Array; inputScale?: number; perTensor?: boolean } = {},
): RaisedChannel[] {
  const channels = w.dims[w.axis];
  const inner = w.dims.slice(w.axis + 1).reduce((a, b) => a * b, 1);
  const outer = w.dims.slice(0, w.axis).reduce((a, b) => a * b, 1);
  const wanted = Array.from({ length: channels }, (_, c) => requiredScale(q.scale[c], options.bias?.[c], options.inputScale));
  if (options.perTensor) wanted.fill(Math.max(...wanted));
  const raised: RaisedChannel[] = [];
  for (let c = 0; c < channels; c++) {
    if (wanted[c] <= q.scale[c]) continue;
    raised.push({ channel: c, from: q.scale[c], to: wanted[c], reason: wanted[c] === WEIGHT_SCALE_FLOOR && q.scale[c] < WEIGHT_SCALE_FLOOR ? 'scale floor' : 'bias range' });
    const s = wanted[c];
    const each = (f: (i: number) => void) => {
      for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) f((o * channels + c) * inner + i);
    };
    // symmetric grids keep their zero point (0 signed, the grid middle unsigned)
    let z = q.zeroPoint[c];
    if (!range.symmetric) {
      let lo = 0;
      each((i) => { lo = Math.min(lo, w.data[i]); });
      z = Math.min(range.qmax, Math.max(range.qmin, roundHalfEven(range.qmin - lo / s)));
    }
    q.scale[c] = s;
    q.zeroPoint[c] = z;
    each((i) => { q.int8[i] = quantizeValue(w.data[i], s, z, range); });
  }
  return raised;
}
