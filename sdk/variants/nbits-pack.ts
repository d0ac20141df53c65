/**
 * 4-bit block quantization and packing in the layouts ONNX Runtime's com.microsoft kernels read.
 *
 * The unit is a row of `len` values cut into blocks of `blockSize` along the row; each block gets
 * one scale (and, asymmetric, one 4-bit zero point). Codes are unsigned 0..15 and dequantize as
 * (code − zero_point) · scale; symmetric blocks have the implied zero point 8.
 *   MatMulNBits (bits = 4): rows are the N output columns of B [K, N], len = K; B is packed as
 *   uint8 [N, n_blocks, blockSize / 2] (the last block zero-padded to a whole block: the padding
 *   holds the zero point's code, which dequantizes to 0), scales [N · n_blocks], zero points
 *   uint8 [N · ceil(n_blocks / 2)], two 4-bit values per byte, low nibble first, each row of N
 *   starting on a fresh byte.
 *   GatherBlockQuantized (uint8 data, bits = 4): rows are the embedding rows [V, D], len = D;
 *   data uint8 [V, D / 2] (not padded), scales [V, n_blocks], zero points [V, ceil(n_blocks / 2)].
 *
 * Scales are stored in the model's float type (float32, or float16 for float16 models): each is
 * rounded to that type first, up when rounding to nearest would shrink it, so the block's range
 * still covers its values, and the codes are computed with the stored scale. Every value is then
 * within half a step (half the stored scale) of its dequantized value.
 */
import { DataType, float16BitsToNumber, numberToFloat16Bits } from '../onnx/dtype';

export type ScaleType = DataType.FLOAT | DataType.FLOAT16;

export interface BlockQuantized4 {
  rows: number;
  len: number;
  blockSize: number;
  blocks: number;
  symmetric: boolean;
  /** codes 0..15, [rows, len] (no padding) */
  codes: Uint8Array;
  /** stored scales as numbers, [rows, blocks] */
  scales: Float32Array;
  /** zero point per block, [rows, blocks] (all 8 when symmetric) */
  zeroPoints: Uint8Array;
  /** (code − zero point) · scale, [rows, len]: what the kernel computes with */
  dequantized: Float32Array;
}

/** The scale as stored in `type` (float32 or float16 bits), never smaller than `s`. */
export function storedScale(s: number, type: ScaleType): { value: number; bits: number } {
  if (type === DataType.FLOAT) {
    let v = Math.fround(s);
    if (v < s) v = nextUpFloat32(v);
    return { value: v, bits: v };
  }
  let h = numberToFloat16Bits(s);
  if (float16BitsToNumber(h) < s) h += 1; // positive halves: the next bit pattern is the next value up
  return { value: float16BitsToNumber(h), bits: h };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function nextUpFloat32(v: number): number {
  f32[0] = v;
  u32[0] += 1; // positive finite floats only
  return f32[0];
}

/**
 * Quantizes `values` ([rows, len], row-major) block-wise along each row.
 * Symmetric: s = max(−min / 8, max / 7), codes round(v / s) + 8 clamped to 0..15 (the negative
 * extreme may use code 0, as ORT's own quantizer does, the positive one reaches 15).
 * Asymmetric: the range [min(min, 0), max(max, 0)] over 15 steps, zero point round(−lo / s).
 */
export function quantizeBlocks4(values: Float32Array, rows: number, len: number, blockSize: number, symmetric: boolean, scaleType: ScaleType): BlockQuantized4 {
  const blocks = Math.ceil(len / blockSize);
  const codes = new Uint8Array(rows * len);
  const scales = new Float32Array(rows * blocks);
  const zeroPoints = new Uint8Array(rows * blocks);
  const dequantized = new Float32Array(rows * len);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const start = r * len + b * blockSize;
      const end = r * len + Math.min(len, (b + 1) * blockSize);
      let lo = 0;
      let hi = 0;
      for (let i = start; i < end; i++) {
        lo = Math.min(lo, values[i]);
        hi = Math.max(hi, values[i]);
      }
      const exact = symmetric ? Math.max(-lo / 8, hi / 7) : (hi - lo) / 15;
      const s = exact > 0 ? storedScale(exact, scaleType).value : 1;
      const zp = symmetric ? 8 : Math.max(0, Math.min(15, Math.round(-lo / s)));
      scales[r * blocks + b] = s;
      zeroPoints[r * blocks + b] = zp;
      for (let i = start; i < end; i++) {
        const q = Math.max(0, Math.min(15, Math.round(values[i] / s) + zp));
        codes[i] = q;
        dequantized[i] = Math.fround((q - zp) * s);
      }
    }
  }
  return { rows, len, blockSize, blocks, symmetric, codes, scales, zeroPoints, dequantized };
}

/**
 * Packs 4-bit values row by row, two per byte, low nibble first; each row takes `rowBytes`
 * bytes, the values past its end filled with `pad` (a per-row value, e.g. the zero point).
 */
export function packNibbleRows(values: Uint8Array, rows: number, len: number, rowBytes: number, pad: (row: number, i: number) => number = () => 0): Uint8Array {
  const out = new Uint8Array(rows * rowBytes);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < rowBytes * 2; i++) {
      const v = (i < len ? values[r * len + i] : pad(r, i)) & 0x0f;
      out[r * rowBytes + (i >> 1)] |= i & 1 ? v << 4 : v;
    }
  }
  return out;
}

/** Scales in the stored type: a Float32Array, or float16 bits. */
export function scaleArray(scales: Float32Array, type: ScaleType): Float32Array | Uint16Array {
  return type === DataType.FLOAT ? Float32Array.from(scales) : Uint16Array.from(scales, (s) => numberToFloat16Bits(s));
}

/** B [K, N] → the rows of MatMulNBits (the N columns, each of length K). */
export function columnsOf(w: Float32Array, k: number, n: number): Float32Array {
  const t = new Float32Array(k * n);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) t[j * k + i] = w[i * n + j];
  return t;
}

export interface MatMulNBitsPacked {
  q: BlockQuantized4;
  /** uint8 [N, blocks, blockSize / 2] */
  b: Uint8Array;
  /** [N · blocks] */
  scales: Float32Array | Uint16Array;
  /** uint8 [N · ceil(blocks / 2)], asymmetric only */
  zeroPoints?: Uint8Array;
}

/** The MatMulNBits inputs for a weight B [K, N] (row-major). */
export function packMatMulNBits(w: Float32Array, k: number, n: number, blockSize: number, symmetric: boolean, scaleType: ScaleType): MatMulNBitsPacked {
  const q = quantizeBlocks4(columnsOf(w, k, n), n, k, blockSize, symmetric, scaleType);
  const b = packNibbleRows(q.codes, n, k, (q.blocks * blockSize) / 2, (r) => q.zeroPoints[r * q.blocks + q.blocks - 1]);
  const zeroPoints = symmetric ? undefined : packNibbleRows(q.zeroPoints, n, q.blocks, Math.ceil(q.blocks / 2));
  return { q, b, scales: scaleArray(q.scales, scaleType), zeroPoints };
}

export interface GatherBlockPacked {
  q: BlockQuantized4;
  /** uint8 [V, D / 2] */
  data: Uint8Array;
  /** [V, blocks] */
  scales: Float32Array | Uint16Array;
  /** uint8 [V, ceil(blocks / 2)], asymmetric only */
  zeroPoints?: Uint8Array;
}

/** The GatherBlockQuantized inputs for an embedding table [V, D] (D even). */
export function packGatherBlock(table: Float32Array, v: number, d: number, blockSize: number, symmetric: boolean, scaleType: ScaleType): GatherBlockPacked {
  const q = quantizeBlocks4(table, v, d, blockSize, symmetric, scaleType);
  const data = packNibbleRows(q.codes, v, d, d / 2);
  const zeroPoints = symmetric ? undefined : packNibbleRows(q.zeroPoints, v, q.blocks, Math.ceil(q.blocks / 2));
  return { q, data, scales: scaleArray(q.scales, scaleType), zeroPoints };
}
