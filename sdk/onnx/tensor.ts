/**
 * TensorProto ↔ typed arrays. Reads every storage form the spec allows (raw_data,
 * the typed repeated fields, external data files) and writes raw_data, the form every
 * runtime reads fastest. Sub-byte types (int4, uint4, float4, int2, uint2) are unpacked to
 * one array slot per element, low bits first, as the spec packs them.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QuantbookError } from '../errors';
import { checkedIndex, confinedPath } from '../util/untrusted';
import { DataType, TensorArray, isSubByte, typeInfo, typeName, toFloat32 } from './dtype';
import { TensorProto, has, int64ToBigInt, int64ToNumber, newTensor } from './proto';
import { readSpilled } from './spill';

if (os.endianness() !== 'LE') {
  throw new Error('quantbook reads ONNX raw_data as little-endian views and needs a little-endian host');
}

export interface TensorData {
  name: string;
  type: DataType;
  dims: number[];
  /** one slot per element (two per complex element); strings for STRING tensors */
  data: TensorArray | string[];
}

export const DATA_LOCATION_EXTERNAL = 1;

export function elementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

export function tensorDims(t: TensorProto): number[] {
  return t.dims.map((d) => int64ToNumber(d, `tensor ${t.name} dimension`));
}

export function isExternal(t: TensorProto): boolean {
  return t.data_location === DATA_LOCATION_EXTERNAL;
}

/**
 * Where an external tensor's bytes are: file (inside baseDir, symlinks resolved), offset, length.
 * Everything here comes from the model file: each field is checked and named when wrong.
 */
export function externalLocation(t: TensorProto, baseDir: string): { file: string; offset: number; length: number | undefined } {
  const entries = new Map(t.external_data.map((e) => [e.key ?? '', e.value ?? '']));
  const location = entries.get('location');
  if (!location) throw new QuantbookError('INVALID_MODEL', `tensor "${t.name}" is marked external but has no "location" entry`);
  const modelField = <T>(read: () => T): T => {
    try {
      return read();
    } catch (e) {
      throw e instanceof QuantbookError ? new QuantbookError('INVALID_MODEL', e.message) : e;
    }
  };
  const file = modelField(() => confinedPath(baseDir, location, `tensor "${t.name}": external data location`));
  const offset = entries.has('offset') ? modelField(() => checkedIndex(entries.get('offset'), `tensor "${t.name}": external data offset`)) : 0;
  const length = entries.has('length') ? modelField(() => checkedIndex(entries.get('length'), `tensor "${t.name}": external data length`)) : undefined;
  return { file, offset, length };
}

/** Reads the bytes of an external tensor from disk (a regular file inside the model's folder only). */
export function readExternalBytes(t: TensorProto, baseDir: string | undefined): Uint8Array {
  // a tensor the quantizer made from a model held by reference (spill.ts)
  const spilled = readSpilled(t);
  if (spilled) return spilled;
  if (baseDir === undefined) {
    throw new QuantbookError('INVALID_ARGUMENT', `tensor "${t.name}" stores its data in an external file; load the model from its path, or pass {baseDir} naming the folder that holds the data file`);
  }
  const { file, offset, length } = externalLocation(t, baseDir);
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new QuantbookError('FILE_NOT_FOUND', `external data file of tensor "${t.name}" not found: ${file}`, { cause: e });
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new QuantbookError('INVALID_MODEL', `tensor "${t.name}": external data ${file} is not a regular file`);
    const size = stat.size;
    if (offset > size) throw new QuantbookError('INVALID_MODEL', `tensor "${t.name}": external data offset ${offset} is past the end of ${file} (${size} bytes)`);
    const n = length ?? size - offset;
    if (offset + n > size) {
      throw new QuantbookError('INVALID_MODEL', `tensor "${t.name}": external data ${file} holds ${size} bytes, the tensor needs bytes ${offset}..${offset + n}`);
    }
    const buf = Buffer.alloc(n);
    let read = 0;
    while (read < n) {
      const got = fs.readSync(fd, buf, read, n - read, offset + read);
      if (got === 0) throw new QuantbookError('INVALID_MODEL', `tensor "${t.name}": external data ${file} ended after ${offset + read} bytes`);
      read += got;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** Unpacks `count` sub-byte elements of `bits` each from packed bytes (low bits first). */
function unpackSubByte(bytes: ArrayLike<number>, count: number, bits: number, signed: boolean): Int8Array | Uint8Array {
  const out = signed ? new Int8Array(count) : new Uint8Array(count);
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  for (let i = 0; i < count; i++) {
    const v = (bytes[Math.floor(i / perByte)] >> ((i % perByte) * bits)) & mask;
    out[i] = signed && v >= 1 << (bits - 1) ? v - (1 << bits) : v;
  }
  return out;
}

export function packSubByte(values: ArrayLike<number>, bits: number): Uint8Array {
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(Math.ceil(values.length / perByte));
  for (let i = 0; i < values.length; i++) out[Math.floor(i / perByte)] |= (values[i] & mask) << ((i % perByte) * bits);
  return out;
}

/** Reads a tensor's elements. External data is read from `baseDir` (the model's folder). */
export function readTensor(t: TensorProto, baseDir?: string): TensorData {
  const type = t.data_type ?? DataType.UNDEFINED;
  const info = typeInfo(type);
  const dims = tensorDims(t);
  const count = elementCount(dims);
  const name = t.name ?? '';
  const slots = type === DataType.COMPLEX64 || type === DataType.COMPLEX128 ? count * 2 : count;

  if (type === DataType.STRING) {
    const decoder = new TextDecoder();
    return { name, type, dims, data: t.string_data.map((s) => decoder.decode(s)) };
  }
  const Storage = info.storage!;
  let data: TensorArray;
  const raw = isExternal(t) ? readExternalBytes(t, baseDir) : has(t, 'raw_data') ? t.raw_data! : undefined;
  if (raw !== undefined) {
    if (isSubByte(type)) {
      data = unpackSubByte(raw, count, info.bits, Storage === Int8Array);
    } else {
      const need = (count * info.bits) / 8;
      if (raw.byteLength !== need) {
        throw new QuantbookError('INVALID_MODEL', `tensor "${name}" (${typeName(type)} [${dims}]) needs ${need} bytes of data, has ${raw.byteLength}`);
      }
      // raw_data can sit at any offset inside the decoded buffer (and is the proto's own): copy to
      // an aligned one; bytes just read from an external file are ours already when aligned
      const owned = isExternal(t) && raw.byteOffset % (info.bits / 8 || 1) === 0;
      const aligned = owned ? raw : Uint8Array.from(raw);
      data = new (Storage as unknown as { new (b: ArrayBuffer, o: number, n: number): TensorArray })(aligned.buffer as ArrayBuffer, aligned.byteOffset, slots);
    }
  } else {
    data = fromTypedField(t, type, slots, count);
  }
  if (!isSubByte(type) && data.length !== slots) {
    throw new QuantbookError('INVALID_MODEL', `tensor "${name}" (${typeName(type)} [${dims}]) needs ${slots} values, holds ${data.length}`);
  }
  return { name, type, dims, data };
}

function fromTypedField(t: TensorProto, type: DataType, slots: number, count: number): TensorArray {
  const info = typeInfo(type);
  switch (info.field) {
    case 'float_data': return Float32Array.from(t.float_data);
    case 'double_data': return Float64Array.from(t.double_data);
    case 'int64_data': return BigInt64Array.from(t.int64_data, (v) => int64ToBigInt(v));
    case 'uint64_data':
      return type === DataType.UINT64
        ? BigUint64Array.from(t.uint64_data, (v) => int64ToBigInt(v, true))
        : Uint32Array.from(t.uint64_data, (v) => Number(int64ToBigInt(v, true)));
    case 'int32_data':
      // sub-byte types keep one packed byte per int32 slot; the others one element per slot
      if (isSubByte(type)) return unpackSubByte(t.int32_data, count, info.bits, info.storage === Int8Array);
      return (info.storage as unknown as { from(a: number[]): TensorArray }).from(t.int32_data);
    default:
      throw new QuantbookError('INVALID_MODEL', `tensor "${t.name}": cannot read ${typeName(type)} from ${info.field} (${slots} slots)`);
  }
}

/** A tensor's values as float32, decoding narrow floats and widening integers. */
export function readTensorAsFloat32(t: TensorProto, baseDir?: string): Float32Array {
  const td = readTensor(t, baseDir);
  if (Array.isArray(td.data)) throw new QuantbookError('UNSUPPORTED', `tensor "${td.name}" holds strings, not numbers`);
  return td.type === DataType.FLOAT ? (td.data as Float32Array) : toFloat32(td.type, td.data);
}

/** Builds a TensorProto holding `data` in raw_data (strings in string_data). */
export function makeTensor(name: string, type: DataType, dims: readonly number[], data: TensorArray | string[] | ArrayLike<number>): TensorProto {
  const info = typeInfo(type);
  const count = elementCount(dims);
  const slots = type === DataType.COMPLEX64 || type === DataType.COMPLEX128 ? count * 2 : count;
  if (data.length !== slots) {
    throw new QuantbookError('INVALID_ARGUMENT', `tensor "${name}": dims [${dims}] need ${slots} values, got ${data.length}`);
  }
  if (type === DataType.STRING) {
    const enc = new TextEncoder();
    return newTensor({ name, data_type: type, dims: [...dims], string_data: (data as string[]).map((s) => enc.encode(s)) });
  }
  let raw: Uint8Array;
  if (isSubByte(type)) {
    raw = packSubByte(data as ArrayLike<number>, info.bits);
  } else {
    const Storage = info.storage!;
    const typed = data instanceof Storage ? (data as TensorArray) : (Storage as unknown as { from(a: ArrayLike<unknown>): TensorArray }).from(data as ArrayLike<number>);
    raw = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength).slice();
  }
  return newTensor({ name, data_type: type, dims: [...dims], raw_data: raw });
}

/** Bytes the tensor's data occupies (in the model or in an external file). */
export function tensorByteSize(t: TensorProto): number {
  if (isExternal(t)) {
    const len = t.external_data.find((e) => e.key === 'length');
    return len ? Number(len.value) : 0;
  }
  if (has(t, 'raw_data')) return t.raw_data!.byteLength;
  const type = t.data_type ?? 0;
  if (type === DataType.STRING) return t.string_data.reduce((a, s) => a + s.byteLength, 0);
  return Math.ceil((elementCount(tensorDims(t)) * typeInfo(type).bits) / 8);
}
