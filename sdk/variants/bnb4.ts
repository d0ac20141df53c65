/**
 * bitsandbytes 4-bit (NF4 / FP4) block quantization in the layout of ONNX Runtime's
 * com.microsoft.MatMulBnb4: the weight B [K, N] is transposed to [N, K], flattened, and cut into
 * blocks of `blockSize` consecutive values (blocks may run across rows of N); each block is
 * divided by its absolute maximum (`absmax`, stored in the model's float type) and each value
 * takes the code of the nearest level of the 16-level table. Two codes per byte, the FIRST value
 * in the HIGH nibble (as bitsandbytes and ORT's DequantizeBlockBnb4 read them); B is uint8
 * [ceil(N·K / 2)], absmax [ceil(N·K / blockSize)].
 */
import { ScaleType, columnsOf, scaleArray, storedScale } from './nbits-pack';

/** quant_type attribute values */
export const BNB4_QUANT_TYPE = { fp4: 0, nf4: 1 } as const;

/** NF4 levels (QLoRA, normal-float 4), code → value in [−1, 1]; what ORT's kernel dequantizes with. */
export const NF4_LEVELS = Float32Array.of(
  -1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1,
);

/** FP4 (bitsandbytes e2m1 with bias 3, normalized by 12), code → value; bit 3 is the sign. */
export const FP4_LEVELS = Float32Array.of(
  0, 5.208333333e-3, 0.66666667, 1, 0.33333333, 0.5, 0.16666667, 0.25,
  -0, -5.208333333e-3, -0.66666667, -1, -0.33333333, -0.5, -0.16666667, -0.25,
);

export interface Bnb4Packed {
  /** codes 0..15 of the flattened [N, K] weight */
  codes: Uint8Array;
  /** stored absmax per block, as numbers */
  absmax: Float32Array;
  /** level · absmax, [N, K] flattened: what the kernel computes with */
  dequantized: Float32Array;
  /** uint8 [ceil(N·K / 2)], first value of each pair in the high nibble */
  b: Uint8Array;
  /** absmax in the stored type, [ceil(N·K / blockSize)] */
  absmaxStored: Float32Array | Uint16Array;
}

/** The code whose level is nearest to x (ties: the lower code; +0 preferred to −0). */
export function nearestLevel(levels: Float32Array, x: number): number {
  let best = 0;
  let dist = Infinity;
  for (let c = 0; c < levels.length; c++) {
    const d = Math.abs(levels[c] - x);
    if (d < dist) { dist = d; best = c; }
  }
  return best;
}

/** The MatMulBnb4 inputs for a weight B [K, N] (row-major). */
export function packBnb4(w: Float32Array, k: number, n: number, blockSize: number, quantType: 'nf4' | 'fp4', scaleType: ScaleType): Bnb4Packed {
  const levels = quantType === 'nf4' ? NF4_LEVELS : FP4_LEVELS;
  const flat = columnsOf(w, k, n); // [N, K]
  const total = flat.length;
  const blocks = Math.ceil(total / blockSize);
  const codes = new Uint8Array(total);
  const absmax = new Float32Array(blocks);
  const dequantized = new Float32Array(total);
  for (let b = 0; b < blocks; b++) {
    const start = b * blockSize;
    const end = Math.min(total, start + blockSize);
    let m = 0;
    for (let i = start; i < end; i++) m = Math.max(m, Math.abs(flat[i]));
    const a = m > 0 ? storedScale(m, scaleType).value : 0;
    absmax[b] = a;
    for (let i = start; i < end; i++) {
      const c = nearestLevel(levels, a > 0 ? flat[i] / a : 0);
      codes[i] = c;
      dequantized[i] = Math.fround(levels[c] * a);
    }
  }
  const bytes = new Uint8Array(Math.ceil(total / 2));
  for (let i = 0; i < total; i++) bytes[i >> 1] |= i & 1 ? codes[i] : codes[i] << 4;
  return { codes, absmax, dequantized, b: bytes, absmaxStored: scaleArray(absmax, scaleType) };
}

