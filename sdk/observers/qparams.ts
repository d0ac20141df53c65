/**
 * Quantization specs and the scale/zero point they give for a range, in the form ONNX
 * QuantizeLinear uses (float32 scale, integer zero point, saturating range).
 *
 * Asymmetric: the range is widened to include 0, scale = (max − min)/(qmax − qmin),
 * zero point = round(qmin − min/scale). Symmetric: scale = max|x| / (2^(bits−1) − 1), zero point 0
 * (signed) or 2^(bits−1) (unsigned). A zero or non-finite scale becomes 1, as AMCT and ORT do.
 */
import { invalidArgument } from '../errors';
import { roundHalfEven } from '../kernels/quant';

export interface QuantSpec {
  numBits: number;
  signed: boolean;
  symmetric: boolean;
  /** drop the most negative level: [-127, 127] for int8, [1, 255] for uint8 */
  narrowRange: boolean;
  perChannel: boolean;
  /** the channel axis when perChannel (1 for NCHW activations, 0 for Conv weights) */
  channelAxis: number;
}

export const ACTIVATION_SPEC: QuantSpec = { numBits: 8, signed: false, symmetric: false, narrowRange: false, perChannel: false, channelAxis: 1 };
export const WEIGHT_SPEC: QuantSpec = { numBits: 8, signed: true, symmetric: true, narrowRange: false, perChannel: true, channelAxis: 0 };

export interface QParams {
  scale: Float32Array;
  zeroPoint: Int32Array;
  qmin: number;
  qmax: number;
  numBits: number;
  signed: boolean;
  /** channel axis for per-channel parameters */
  axis?: number;
}

export function resolveSpec(spec: Partial<QuantSpec> = {}, base: QuantSpec = ACTIVATION_SPEC): QuantSpec {
  const s = { ...base, ...spec };
  if (!Number.isInteger(s.numBits) || s.numBits < 2 || s.numBits > 16) throw invalidArgument('numBits', s.numBits, 'an integer from 2 to 16');
  for (const k of ['signed', 'symmetric', 'narrowRange', 'perChannel'] as const) {
    if (typeof s[k] !== 'boolean') throw invalidArgument(k, s[k], 'true or false');
  }
  if (!Number.isInteger(s.channelAxis) || s.channelAxis < 0) throw invalidArgument('channelAxis', s.channelAxis, 'a non-negative integer');
  return s;
}

export function quantRange(spec: QuantSpec): { qmin: number; qmax: number } {
  const levels = 2 ** spec.numBits;
  const qmin = spec.signed ? -levels / 2 : 0;
  const qmax = spec.signed ? levels / 2 - 1 : levels - 1;
  return { qmin: spec.narrowRange ? qmin + 1 : qmin, qmax };
}

/** Scale and zero point for each channel's [min, max]. */
export function qparamsFromRange(min: ArrayLike<number>, max: ArrayLike<number>, spec: QuantSpec): QParams {
  const { qmin, qmax } = quantRange(spec);
  const n = min.length;
  const scale = new Float32Array(n);
  const zeroPoint = new Int32Array(n);
  for (let c = 0; c < n; c++) {
    const lo = Math.min(min[c], 0);
    const hi = Math.max(max[c], 0);
    let s: number;
    let z: number;
    if (spec.symmetric) {
      const half = 2 ** (spec.numBits - 1);
      s = Math.fround(Math.max(-lo, hi) / (half - 1));
      z = spec.signed ? 0 : half;
    } else {
      s = Math.fround((hi - lo) / (qmax - qmin));
      z = s > 0 && Number.isFinite(s) ? roundHalfEven(qmin - lo / s) : 0;
    }
    if (!(s > 0) || !Number.isFinite(s)) {
      s = 1;
      z = spec.symmetric ? z : spec.signed ? 0 : qmin;
    }
    scale[c] = s;
    zeroPoint[c] = Math.min(qmax, Math.max(qmin, z));
  }
  return { scale, zeroPoint, qmin, qmax, numBits: spec.numBits, signed: spec.signed, ...(n > 1 || spec.perChannel ? { axis: spec.channelAxis } : {}) };
}

/** The float range a QParams represents, per channel: [(qmin − z)·s, (qmax − z)·s]. */
export function representableRange(q: QParams, c = 0): [number, number] {
  return [(q.qmin - q.zeroPoint[c]) * q.scale[c], (q.qmax - q.zeroPoint[c]) * q.scale[c]];
}
