/**
 * The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
 * (name → {dtype, shape, data_offsets} relative to the data start, plus an optional
 * string-to-string `__metadata__`), spaces padding the header to a multiple of 8, then the
 * tensors' little-endian row-major bytes back to back with no holes.
 * Sharded sets follow the Hugging Face convention: `<stem>-00001-of-0000N.safetensors` files and
 * `<stem>.safetensors.index.json` = {metadata: {total_size}, weight_map: {tensor: file}}.
 * No maintained npm writer exists, hence this module; reading validates everything the spec asks.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError } from '../errors';
import { DataType, TensorArray } from '../onnx/dtype';
import { elementCount } from '../onnx/tensor';
import { PendingFile, writeAll, writeFilesAtomically } from '../util/atomic-write';
import { checkedIndex, checkedShape, confinedPath, hasOwn, jsonObject, readRegularFile } from '../util/untrusted';

export const SAFETENSORS_DTYPES = {
  F64: { bytes: 8, array: Float64Array },
  F32: { bytes: 4, array: Float32Array },
  F16: { bytes: 2, array: Uint16Array },
  BF16: { bytes: 2, array: Uint16Array },
  I64: { bytes: 8, array: BigInt64Array },
  I32: { bytes: 4, array: Int32Array },
  I16: { bytes: 2, array: Int16Array },
  I8: { bytes: 1, array: Int8Array },
  U64: { bytes: 8, array: BigUint64Array },
  U32: { bytes: 4, array: Uint32Array },
  U16: { bytes: 2, array: Uint16Array },
  U8: { bytes: 1, array: Uint8Array },
  BOOL: { bytes: 1, array: Uint8Array },
  F8_E4M3: { bytes: 1, array: Uint8Array },
  F8_E5M2: { bytes: 1, array: Uint8Array },
} as const;
export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

/** One tensor as stored: dtype, shape and its values (F16/BF16/F8 as raw bit patterns). */
export interface StoredTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** the values; a getter for a deferred tensor (read when asked: see deferredTensor) */
  data: TensorArray;
}

/**
 * A tensor whose values are read only when written (or asked for), each time: a set of them can
 * describe a model larger than memory, and writing it holds one tensor at a time.
 */
export function deferredTensor(dtype: SafetensorsDtype, shape: number[], read: () => TensorArray): StoredTensor {
  return Object.defineProperty({ dtype, shape } as StoredTensor, 'data', { enumerable: true, get: read });
}

function isDeferred(t: StoredTensor): boolean {
  return !!Object.getOwnPropertyDescriptor(t, 'data')?.get;
}

/** Bytes the tensor takes in the file, from its dtype and shape (a deferred tensor is not read for it). */
function storedBytes(t: StoredTensor): number {
  return elementCount(t.shape) * (SAFETENSORS_DTYPES[t.dtype]?.bytes ?? 0); // an unknown dtype is named by checkTensor
}

const FROM_ONNX: Partial<Record<DataType, SafetensorsDtype>> = {
  [DataType.DOUBLE]: 'F64', [DataType.FLOAT]: 'F32', [DataType.FLOAT16]: 'F16', [DataType.BFLOAT16]: 'BF16',
  [DataType.INT64]: 'I64', [DataType.INT32]: 'I32', [DataType.INT16]: 'I16', [DataType.INT8]: 'I8',
  [DataType.UINT64]: 'U64', [DataType.UINT32]: 'U32', [DataType.UINT16]: 'U16', [DataType.UINT8]: 'U8',
  [DataType.BOOL]: 'BOOL', [DataType.FLOAT8E4M3FN]: 'F8_E4M3', [DataType.FLOAT8E5M2]: 'F8_E5M2',
};

/** The safetensors dtype holding an ONNX element type, or undefined (strings, int4, complex …). */
export function safetensorsDtype(type: DataType): SafetensorsDtype | undefined {
  return FROM_ONNX[type];
}

function checkTensor(name: string, t: StoredTensor): void {
  const info = SAFETENSORS_DTYPES[t.dtype];
  if (!info) throw new QuantbookError('INVALID_ARGUMENT', `safetensors tensor "${name}": dtype ${String(t.dtype)} is not one of ${Object.keys(SAFETENSORS_DTYPES).join(', ')}`);
  if (!Array.isArray(t.shape) || t.shape.some((d) => !Number.isInteger(d) || d < 0)) throw new QuantbookError('INVALID_ARGUMENT', `safetensors tensor "${name}": shape ${JSON.stringify(t.shape)} must be a list of non-negative integers`);
  if (!isDeferred(t)) checkData(name, t, t.data); // a deferred tensor is checked when it is read
}

function checkData(name: string, t: StoredTensor, data: TensorArray): Uint8Array {
  if (data.byteLength !== storedBytes(t)) {
    throw new QuantbookError('INVALID_ARGUMENT', `safetensors tensor "${name}": ${data.byteLength} bytes of data for shape [${t.shape}] of ${t.dtype} (needs ${storedBytes(t)})`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** The header bytes (length prefix included) for tensors in the given order. */
function encodeHeader(tensors: Array<[string, StoredTensor]>, metadata?: Record<string, string>): Uint8Array {
  // null prototype: a tensor named "__proto__" (or "constructor") is an ordinary key here
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw new QuantbookError('INVALID_ARGUMENT', `safetensors __metadata__["${k}"]: got ${typeof v}; the format allows strings only`);
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '__metadata__') throw new QuantbookError('INVALID_ARGUMENT', 'safetensors: "__metadata__" is reserved and cannot name a tensor');
    checkTensor(name, t);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + storedBytes(t)] };
    offset += storedBytes(t);
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

function pendingFile(file: string, tensors: Array<[string, StoredTensor]>, metadata?: Record<string, string>): PendingFile {
  const header = encodeHeader(tensors, metadata);
  return {
    path: file,
    write: (fd) => {
      writeAll(fd, header);
      for (const [name, t] of tensors) writeAll(fd, checkData(name, t, t.data));
    },
  };
}

export type TensorSet = Map<string, StoredTensor> | Array<[string, StoredTensor]>;

/** Writes one safetensors file (atomically). */
export function writeSafetensors(file: string, tensors: TensorSet, metadata?: Record<string, string>): void {
  writeFilesAtomically([pendingFile(file, [...tensors], metadata)]);
}

export interface ShardedWrite {
  /** the weight files, in order */
  files: string[];
  /** the index file, when the set was sharded */
  index?: string;
}

/**
 * Writes `tensors` as `<dir>/<fileName>`, or, when `partBytes` is given and the tensors do not
 * fit one part, as numbered shards plus an index JSON. A shard is closed once it reaches
 * `partBytes`, so a shard can exceed it by up to one tensor (as msModelSlim documents).
 * All files appear together or none does.
 */
export function writeSafetensorsSet(dir: string, fileName: string, tensors: TensorSet, options: { partBytes?: number; metadata?: Record<string, string> } = {}): ShardedWrite {
  const list = [...tensors];
  const total = list.reduce((n, [, t]) => n + storedBytes(t), 0);
  const { partBytes } = options;
  if (partBytes !== undefined && !(partBytes > 0)) throw new QuantbookError('INVALID_ARGUMENT', `part size: got ${partBytes}; expected a positive number of bytes`);
  if (partBytes === undefined || total <= partBytes) {
    const file = path.join(dir, fileName);
    writeSafetensors(file, list, options.metadata);
    return { files: [file] };
  }
  const shards: Array<Array<[string, StoredTensor]>> = [[]];
  let size = 0;
  for (const entry of list) {
    if (size >= partBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(entry);
    size += storedBytes(entry[1]);
  }
  const stem = fileName.replace(/\.safetensors$/i, '');
  const n = String(shards.length).padStart(5, '0');
  const names = shards.map((_, i) => `${stem}-${String(i + 1).padStart(5, '0')}-of-${n}.safetensors`);
  const weightMap: Record<string, string> = Object.create(null);
  shards.forEach((s, i) => s.forEach(([name]) => (weightMap[name] = names[i])));
  const index = path.join(dir, `${stem}.safetensors.index.json`);
  const indexJson = Buffer.from(`${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`);
  writeFilesAtomically([
    ...shards.map((s, i) => pendingFile(path.join(dir, names[i]), s, options.metadata)),
    { path: index, write: (fd) => writeAll(fd, indexJson) },
  ]);
  return { files: names.map((f) => path.join(dir, f)), index };
}

export interface SafetensorsFile {
  tensors: Map<string, StoredTensor>;
  metadata?: Record<string, string>;
}

function corrupt(file: string, why: string): QuantbookError {
  return new QuantbookError('INVALID_ARGUMENT', `${file}: not a valid safetensors file (${why})`);
}

/** Reads one safetensors file, validating the header the way the reference implementation does. */
export function readSafetensors(file: string): SafetensorsFile {
  const bytes = readRegularFile(file, 'safetensors file');
  if (bytes.length < 8) throw corrupt(file, 'shorter than the 8-byte header length');
  const declared = bytes.readBigUInt64LE(0);
  if (declared > BigInt(bytes.length - 8)) throw corrupt(file, `header length ${declared} runs past the end of the file (${bytes.length} bytes)`);
  const headerLength = Number(declared);
  let header: unknown;
  try {
    header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  } catch (e) {
    throw corrupt(file, `header is not JSON: ${(e as Error).message}`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) throw corrupt(file, 'the header is not a JSON object');
  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;
  const tensors = new Map<string, StoredTensor>();
  let metadata: Record<string, string> | undefined;
  const spans: Array<[number, number, string]> = [];
  for (const [name, e] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = readMetadata(file, e);
      continue;
    }
    if (!e || typeof e !== 'object' || Array.isArray(e)) throw corrupt(file, `tensor "${name}" is not an object`);
    const entry = e as Record<string, unknown>;
    const dtype = entry.dtype;
    if (typeof dtype !== 'string' || !hasOwn(SAFETENSORS_DTYPES, dtype)) throw corrupt(file, `tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}`);
    const info = SAFETENSORS_DTYPES[dtype as SafetensorsDtype];
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2) throw corrupt(file, `tensor "${name}" needs "data_offsets": [begin, end]`);
    const begin = checkedIndex(offsets[0], `${file}: tensor "${name}" data_offsets[0]`);
    const end = checkedIndex(offsets[1], `${file}: tensor "${name}" data_offsets[1]`);
    if (typeof offsets[0] !== 'number' || typeof offsets[1] !== 'number') throw corrupt(file, `tensor "${name}" data_offsets must be numbers`);
    if (!(end >= begin && end <= dataLength)) throw corrupt(file, `tensor "${name}" offsets [${begin}, ${end}] outside the data (${dataLength} bytes)`);
    const shape = checkedShape(entry.shape, Math.floor(dataLength / info.bytes), `${file}: tensor "${name}"`);
    if (end - begin !== elementCount(shape) * info.bytes) throw corrupt(file, `tensor "${name}" holds ${end - begin} bytes for shape [${shape}] of ${dtype}`);
    // copy: the data start is not aligned for wide element types
    const copy = new Uint8Array(bytes.subarray(dataStart + begin, dataStart + end));
    tensors.set(name, { dtype: dtype as SafetensorsDtype, shape, data: new info.array(copy.buffer, 0, (end - begin) / info.bytes) });
    spans.push([begin, end, name]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  let covered = 0;
  for (const [begin, end, name] of spans) {
    if (begin !== covered) throw corrupt(file, `tensor "${name}" starts at ${begin}, expected ${covered} (holes or overlaps are not allowed)`);
    covered = end;
  }
  if (covered !== dataLength) throw corrupt(file, `${dataLength - covered} bytes after the last tensor`);
  return { tensors, metadata };
}

/** `__metadata__`: string → string, kept in a null-prototype record. */
function readMetadata(file: string, value: unknown): Record<string, string> {
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw corrupt(file, '"__metadata__" must be an object of strings');
  const out: Record<string, string> = Object.create(null);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw corrupt(file, `"__metadata__"["${k}"] is ${typeof v}; the format allows strings only`);
    out[k] = v;
  }
  return out;
}

/**
 * Reads a single file or a sharded set (given its index JSON) into one tensor map. Shard names
 * from the index must be files inside the index's folder (symlinks resolved).
 */
export function loadSafetensors(file: string): SafetensorsFile {
  if (!file.endsWith('.index.json')) return readSafetensors(file);
  const index = jsonObject(readRegularFile(file, 'safetensors index').toString('utf8'), `safetensors index ${file}`);
  const weightMap = index.weight_map;
  if (!weightMap || typeof weightMap !== 'object' || Array.isArray(weightMap)) throw new QuantbookError('INVALID_ARGUMENT', `${file}: a safetensors index needs a "weight_map" object`);
  const mapped = new Map<string, string>(Object.entries(weightMap as Record<string, unknown>).map(([name, shard]) => {
    if (typeof shard !== 'string') throw new QuantbookError('INVALID_ARGUMENT', `${file}: weight_map["${name}"] is ${JSON.stringify(shard)}; expected a shard file name`);
    return [name, shard];
  }));
  const dir = path.dirname(file);
  const tensors = new Map<string, StoredTensor>();
  let metadata: Record<string, string> | undefined;
  for (const shard of new Set(mapped.values())) {
    const part = readSafetensors(confinedPath(dir, shard, `${file}: shard`));
    metadata ??= part.metadata;
    for (const [name, t] of part.tensors) {
      if (mapped.get(name) !== shard) throw new QuantbookError('INVALID_ARGUMENT', `${file}: tensor "${name}" is in ${shard} but the index maps it to ${mapped.get(name) ?? 'nothing'}`);
      tensors.set(name, t);
    }
  }
  const missing = [...mapped.keys()].filter((n) => !tensors.has(n));
  if (missing.length) throw new QuantbookError('INVALID_ARGUMENT', `${file}: the index lists tensors no shard holds: ${missing.slice(0, 5).join(', ')}`);
  return { tensors, metadata };
}
