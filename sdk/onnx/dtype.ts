/**
 * ONNX tensor element types: names, storage, bit widths, and decoding of the
 * narrow float formats (float16, bfloat16, float8 variants, float4) to float32.
 */
export enum DataType {
  UNDEFINED = 0, FLOAT = 1, UINT8 = 2, INT8 = 3, UINT16 = 4, INT16 = 5, INT32 = 6, INT64 = 7,
  STRING = 8, BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT32 = 12, UINT64 = 13, COMPLEX64 = 14,
  COMPLEX128 = 15, BFLOAT16 = 16, FLOAT8E4M3FN = 17, FLOAT8E4M3FNUZ = 18, FLOAT8E5M2 = 19,
  FLOAT8E5M2FNUZ = 20, UINT4 = 21, INT4 = 22, FLOAT4E2M1 = 23, FLOAT8E8M0 = 24, UINT2 = 25, INT2 = 26,
}

/** The typed array an element type is held in once unpacked (one array slot per element,
 *  two for complex). Sub-byte and narrow-float types hold their raw bit patterns. */
export type TensorArray =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array
  | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

interface TypeInfo {
  /** bits per element on the wire (raw_data) */
  bits: number;
  /** storage array once unpacked; null for strings */
  storage: (new (n: number) => TensorArray) | null;
  /** onnxruntime-common's tensor type name, where ORT JS has one */
  ort: string | null;
  /** the TensorProto repeated field that holds this type when raw_data is not used */
  field: 'float_data' | 'int32_data' | 'int64_data' | 'double_data' | 'uint64_data' | 'string_data';
}

const INFO: Record<number, TypeInfo> = {
  [DataType.FLOAT]: { bits: 32, storage: Float32Array, ort: 'float32', field: 'float_data' },
  [DataType.UINT8]: { bits: 8, storage: Uint8Array, ort: 'uint8', field: 'int32_data' },
  [DataType.INT8]: { bits: 8, storage: Int8Array, ort: 'int8', field: 'int32_data' },
  [DataType.UINT16]: { bits: 16, storage: Uint16Array, ort: 'uint16', field: 'int32_data' },
  [DataType.INT16]: { bits: 16, storage: Int16Array, ort: 'int16', field: 'int32_data' },
  [DataType.INT32]: { bits: 32, storage: Int32Array, ort: 'int32', field: 'int32_data' },
  [DataType.INT64]: { bits: 64, storage: BigInt64Array, ort: 'int64', field: 'int64_data' },
  [DataType.STRING]: { bits: 0, storage: null, ort: 'string', field: 'string_data' },
  [DataType.BOOL]: { bits: 8, storage: Uint8Array, ort: 'bool', field: 'int32_data' },
  [DataType.FLOAT16]: { bits: 16, storage: Uint16Array, ort: 'float16', field: 'int32_data' },
  [DataType.DOUBLE]: { bits: 64, storage: Float64Array, ort: 'float64', field: 'double_data' },
  [DataType.UINT32]: { bits: 32, storage: Uint32Array, ort: 'uint32', field: 'uint64_data' },
  [DataType.UINT64]: { bits: 64, storage: BigUint64Array, ort: 'uint64', field: 'uint64_data' },
  [DataType.COMPLEX64]: { bits: 64, storage: Float32Array, ort: null, field: 'float_data' },
  [DataType.COMPLEX128]: { bits: 128, storage: Float64Array, ort: null, field: 'double_data' },
  [DataType.BFLOAT16]: { bits: 16, storage: Uint16Array, ort: null, field: 'int32_data' },
  [DataType.FLOAT8E4M3FN]: { bits: 8, storage: Uint8Array, ort: null, field: 'int32_data' },
  [DataType.FLOAT8E4M3FNUZ]: { bits: 8, storage: Uint8Array, ort: null, field: 'int32_data' },
  [DataType.FLOAT8E5M2]: { bits: 8, storage: Uint8Array, ort: null, field: 'int32_data' },
  [DataType.FLOAT8E5M2FNUZ]: { bits: 8, storage: Uint8Array, ort: null, field: 'int32_data' },
  [DataType.UINT4]: { bits: 4, storage: Uint8Array, ort: 'uint4', field: 'int32_data' },
  [DataType.INT4]: { bits: 4, storage: Int8Array, ort: 'int4', field: 'int32_data' },
  [DataType.FLOAT4E2M1]: { bits: 4, storage: Uint8Array, ort: null, field: 'int32_data' },
  [DataType.FLOAT8E8M0]: { bits: 8, storage: Uint8Array, ort: null, field: 'int32_data' },
  [DataType.UINT2]: { bits: 2, storage: Uint8Array, ort: null, field: 'int32_data' },
  [DataType.INT2]: { bits: 2, storage: Int8Array, ort: null, field: 'int32_data' },
};

export function typeInfo(type: number): TypeInfo {
  const info = INFO[type];
  if (!info) throw new RangeError(`unknown ONNX element type ${type}; known types are 1..26 (${Object.keys(INFO).map((k) => DataType[+k]).join(', ')})`);
  return info;
}

export function typeName(type: number): string {
  return DataType[type] ?? `type ${type}`;
}

export function dataTypeFromOrt(ortType: string): DataType {
  for (const [k, v] of Object.entries(INFO)) if (v.ort === ortType) return Number(k);
  throw new RangeError(`ONNX Runtime tensor type "${ortType}" has no ONNX element type here`);
}

export function isSubByte(type: number): boolean {
  return typeInfo(type).bits < 8 && typeInfo(type).bits > 0;
}

/** Decodes a narrow float bit pattern: `expBits`/`manBits`, exponent `bias`, and how the format spells NaN/inf. */
function minifloat(bits: number, expBits: number, manBits: number, bias: number, kind: 'ieee' | 'fn' | 'fnuz' | 'finite'): number {
  const total = 1 + expBits + manBits;
  const sign = (bits >> (total - 1)) & 1;
  const exp = (bits >> manBits) & ((1 << expBits) - 1);
  const man = bits & ((1 << manBits) - 1);
  const expMax = (1 << expBits) - 1;
  if (kind === 'fnuz' && sign === 1 && exp === 0 && man === 0) return NaN; // the only NaN; no -0
  if (kind === 'ieee' && exp === expMax) return man === 0 ? (sign ? -Infinity : Infinity) : NaN;
  if (kind === 'fn' && exp === expMax && man === (1 << manBits) - 1) return NaN;
  const magnitude = exp === 0 ? (man / (1 << manBits)) * 2 ** (1 - bias) : (1 + man / (1 << manBits)) * 2 ** (exp - bias);
  return sign ? -magnitude : magnitude;
}

const tables = new Map<number, Float32Array>();
function lookupTable(type: DataType): Float32Array {
  let t = tables.get(type);
  if (t) return t;
  const spec: Record<number, [number, number, number, 'ieee' | 'fn' | 'fnuz' | 'finite']> = {
    [DataType.FLOAT8E4M3FN]: [4, 3, 7, 'fn'],
    [DataType.FLOAT8E4M3FNUZ]: [4, 3, 8, 'fnuz'],
    [DataType.FLOAT8E5M2]: [5, 2, 15, 'ieee'],
    [DataType.FLOAT8E5M2FNUZ]: [5, 2, 16, 'fnuz'],
    [DataType.FLOAT4E2M1]: [2, 1, 1, 'finite'],
  };
  const size = type === DataType.FLOAT4E2M1 ? 16 : 256;
  t = new Float32Array(size);
  if (type === DataType.FLOAT8E8M0) {
    for (let b = 0; b < 256; b++) t[b] = b === 255 ? NaN : 2 ** (b - 127);
  } else {
    const [e, m, bias, kind] = spec[type];
    for (let b = 0; b < size; b++) t[b] = minifloat(b, e, m, bias, kind);
  }
  tables.set(type, t);
  return t;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function float16BitsToNumber(h: number): number {
  return minifloat(h, 5, 10, 15, 'ieee');
}

export function bfloat16BitsToNumber(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

/** float32 → IEEE half bits, round half to even (what ORT's Cast does). */
export function numberToFloat16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const man = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = man | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** Element values of a (unpacked) storage array as float32, whatever the element type. */
export function toFloat32(type: DataType, data: TensorArray): Float32Array {
  const out = new Float32Array(data.length);
  switch (type) {
    case DataType.FLOAT16: for (let i = 0; i < data.length; i++) out[i] = float16BitsToNumber(data[i] as number); break;
    case DataType.BFLOAT16: for (let i = 0; i < data.length; i++) out[i] = bfloat16BitsToNumber(data[i] as number); break;
    case DataType.FLOAT8E4M3FN: case DataType.FLOAT8E4M3FNUZ: case DataType.FLOAT8E5M2:
    case DataType.FLOAT8E5M2FNUZ: case DataType.FLOAT8E8M0: case DataType.FLOAT4E2M1: {
      const table = lookupTable(type);
      for (let i = 0; i < data.length; i++) out[i] = table[data[i] as number];
      break;
    }
    case DataType.INT64: case DataType.UINT64: for (let i = 0; i < data.length; i++) out[i] = Number(data[i]); break;
    case DataType.STRING: case DataType.COMPLEX64: case DataType.COMPLEX128:
      throw new RangeError(`${typeName(type)} tensors have no float32 view`);
    default: for (let i = 0; i < data.length; i++) out[i] = data[i] as number;
  }
  return out;
}
