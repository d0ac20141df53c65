/**
 * Quantize/dequantize exactly as ONNX QuantizeLinear/DequantizeLinear define them:
 * q = saturate(round_half_even(x / scale) + zero_point), x' = (q − zero_point) · scale,
 * with float32 arithmetic (the division and the product are rounded to float32).
 */

/** 1.5·2^52: v + this has no fraction bits left, so the addition itself rounds v, half to even (IEEE's default). */
const ROUNDING_MAGIC = 6755399441055744;

/** Round half to even, as the ONNX spec (and IEEE's default) rounds. */
export function roundHalfEven(v: number): number {
  // fast path (the quantizer calls this per weight): the FPU's own rounding; ±0 keep their sign
  if (v !== 0 && v > -(2 ** 51) && v < 2 ** 51) return v + ROUNDING_MAGIC - ROUNDING_MAGIC;
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export interface QuantRange { qmin: number; qmax: number }

/** One element: the integer QuantizeLinear stores. */
export function quantizeValue(x: number, scale: number, zeroPoint: number, r: QuantRange): number {
  const q = roundHalfEven(Math.fround(x / scale)) + zeroPoint;
  return q < r.qmin ? r.qmin : q > r.qmax ? r.qmax : q;
}

/** Per-tensor (scale.length 1) or per-channel along `axis` of `shape`. */
export function quantizeLinear<T extends Int32Array | Int8Array | Uint8Array = Int32Array>(
  x: Float32Array, scale: Float32Array, zeroPoint: Int32Array, r: QuantRange,
  shape: readonly number[] = [x.length], axis = 1,
  /** where the integers go (default a new Int32Array); an 8-bit array must hold [qmin, qmax] */
  out: T = new Int32Array(x.length) as T,
): T {
  if (isLastAxis(scale.length, shape, axis)) {
    // channels along the last axis (a MatMul weight [K, N]): one call per row, not per element
    const n = scale.length;
    for (let row = 0; row < x.length; row += n) for (let c = 0; c < n; c++) out[row + c] = quantizeValue(x[row + c], scale[c], zeroPoint[c], r);
    return out;
  }
  forEachChannel(x.length, scale.length, shape, axis, (start, end, stride, c) => {
    const s = scale[c];
    const z = zeroPoint[c];
    for (let i = start; i < end; i += stride) out[i] = quantizeValue(x[i], s, z, r);
  });
  return out;
}

/** Per-channel parameters along the last axis of `shape` (each channel's elements are one apart in every row). */
export function isLastAxis(channels: number, shape: readonly number[], axis: number): boolean {
  return channels > 1 && axis === shape.length - 1 && shape[axis] === channels;
}

export function dequantizeLinear(
  q: ArrayLike<number>, scale: Float32Array, zeroPoint: Int32Array,
  shape: readonly number[] = [q.length], axis = 1,
): Float32Array {
  const out = new Float32Array(q.length);
  if (isLastAxis(scale.length, shape, axis)) {
    const n = scale.length;
    for (let row = 0; row < q.length; row += n) for (let c = 0; c < n; c++) out[row + c] = Math.fround((q[row + c] - zeroPoint[c]) * scale[c]);
    return out;
  }
  forEachChannel(q.length, scale.length, shape, axis, (start, end, stride, c) => {
    const s = scale[c];
    const z = zeroPoint[c];
    for (let i = start; i < end; i += stride) out[i] = Math.fround((q[i] - z) * s);
  });
  return out;
}

/** Quantize then dequantize: what a QDQ pair computes. */
export function fakeQuantize(
  x: Float32Array, scale: Float32Array, zeroPoint: Int32Array, r: QuantRange,
  shape: readonly number[] = [x.length], axis = 1,
): Float32Array {
  return dequantizeLinear(quantizeLinear(x, scale, zeroPoint, r, shape, axis), scale, zeroPoint, shape, axis);
}

/**
 * Calls `visit` for each channel's elements. Per-tensor (channels = 1) visits all elements once.
 * Elements of channel c along `axis`: blocks of `inner` elements, repeated every `channels·inner`.
 */
export function forEachChannel(
  length: number, channels: number, shape: readonly number[], axis: number,
  visit: (start: number, end: number, stride: number, channel: number) => void,
): void {
  if (channels === 1) {
    visit(0, length, 1, 0);
    return;
  }
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  if (shape[axis] !== channels) throw new RangeError(`per-channel parameters: ${channels} channels, but axis ${axis} of shape [${shape}] has ${shape[axis]}`);
  const block = channels * inner;
  for (let c = 0; c < channels; c++) {
    for (let o = 0; o < length; o += block) visit(o + c * inner, o + c * inner + inner, 1, c);
  }
}
