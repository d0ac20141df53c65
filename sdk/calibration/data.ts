/**
 * Calibration data sources, all turned into a stream of ORT feeds one batch at a time:
 * arrays or (async) iterables of feeds, or a folder of .npy / .json files (sorted by name).
 * A file holds one batch: for a single-input model, the input tensor itself; otherwise an
 * object keyed by input name ({"x": {"dims": [...], "data": [...]}} in JSON).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';
import type { Feeds } from '../runtime/runner';
import { ImageFolderSource, imageFolderBatches, isImageFolderSource } from './images';

export type CalibrationSource = string | ImageFolderSource | Iterable<Feeds> | AsyncIterable<Feeds>;

export const FILE_EXTENSIONS = ['.npy', '.json'];

export async function* batchesFrom(source: CalibrationSource, inputNames: readonly string[]): AsyncGenerator<Feeds, void, undefined> {
  if (typeof source === 'string') {
    yield* folderBatches(source, inputNames);
  } else if (isImageFolderSource(source)) {
    yield* imageFolderBatches(source, inputNames);
  } else if (source && (Symbol.iterator in Object(source) || Symbol.asyncIterator in Object(source))) {
    yield* source as AsyncIterable<Feeds>;
  } else {
    throw new QuantbookError('INVALID_ARGUMENT', `calibration data: got ${typeof source}; expected a folder of .npy/.json batches, { imageFolder, preprocess }, an array, or an (async) iterable of feeds`);
  }
}

/** What hashFeeds needs of a hash: a streaming update (node's crypto.Hash and hash-wasm's hashers both have it). */
export interface StreamingHash { update(data: string | Uint8Array): unknown }

/** Adds one batch to a running hash: input names (sorted), element types, shapes and raw bytes. */
export function hashFeeds(hash: StreamingHash, feeds: Feeds): void {
  for (const name of Object.keys(feeds).sort()) {
    const t = feeds[name];
    const data = t.data as ArrayBufferView | string[];
    hash.update(`${name}:${t.type}:${t.dims.join('x')};`);
    if (Array.isArray(data)) hash.update(JSON.stringify(data));
    else hash.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
}

async function* folderBatches(dir: string, inputNames: readonly string[]): AsyncGenerator<Feeds, void, undefined> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new QuantbookError('FILE_NOT_FOUND', `calibration data folder not found: ${dir}`);
  const files = fs.readdirSync(dir).filter((f) => FILE_EXTENSIONS.includes(path.extname(f).toLowerCase())).sort();
  if (!files.length) throw new QuantbookError('INVALID_ARGUMENT', `calibration data folder ${dir} holds no ${FILE_EXTENSIONS.join(' or ')} files (for images, pass { imageFolder, preprocess: { size, mean, std, channelOrder } })`);
  for (const f of files) {
    const file = path.join(dir, f);
    yield path.extname(f).toLowerCase() === '.npy' ? singleInput(readNpy(file), inputNames, file) : jsonFeeds(file, inputNames);
  }
}

function singleInput(t: ort.Tensor, inputNames: readonly string[], file: string): Feeds {
  if (inputNames.length !== 1) throw new QuantbookError('INVALID_ARGUMENT', `${file}: a .npy file holds one tensor, but the model has inputs ${inputNames.join(', ')}; use .json files keyed by input name`);
  return { [inputNames[0]]: t };
}

const NPY_TYPES: Record<string, [ort.Tensor.Type, (b: ArrayBuffer, n: number) => ArrayLike<number> | BigInt64Array]> = {
  '<f4': ['float32', (b, n) => new Float32Array(b, 0, n)],
  '<f8': ['float32', (b, n) => Float32Array.from(new Float64Array(b, 0, n))],
  '<i8': ['int64', (b, n) => new BigInt64Array(b, 0, n)],
  '<i4': ['int32', (b, n) => new Int32Array(b, 0, n)],
  '|u1': ['uint8', (b, n) => new Uint8Array(b, 0, n)],
  '|i1': ['int8', (b, n) => new Int8Array(b, 0, n)],
};

/** Reads a NumPy .npy file (format 1.x–3.x, C order). */
export function readNpy(file: string): ort.Tensor {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf.readUInt8(0) !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') throw new QuantbookError('INVALID_ARGUMENT', `${file} is not a .npy file`);
  const major = buf.readUInt8(6);
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (!descr || !NPY_TYPES[descr]) throw new QuantbookError('UNSUPPORTED', `${file}: dtype ${descr} is not supported; use one of ${Object.keys(NPY_TYPES).join(', ')}`);
  if (fortran) throw new QuantbookError('UNSUPPORTED', `${file}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray`);
  const n = shape.reduce((a, b) => a * b, 1);
  const body = buf.subarray(start + headerLen);
  const aligned = new Uint8Array(body.length);
  aligned.set(body);
  const [type, view] = NPY_TYPES[descr];
  return new ort.Tensor(type, view(aligned.buffer, n) as Float32Array, shape);
}

/** Writes a NumPy .npy file (format 1.0, C order, little-endian) that numpy.load reads. */
export function writeNpy(file: string, data: Float32Array | Int32Array | Int8Array | Uint8Array, shape: readonly number[]): void {
  const descr = data instanceof Float32Array ? '<f4' : data instanceof Int32Array ? '<i4' : data instanceof Int8Array ? '|i1' : '|u1';
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  // magic (6) + version (2) + length (2) + header + newline: a multiple of 64 bytes
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head.writeUInt8(1, 6);
  head.writeUInt8(0, 7);
  head.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

function jsonFeeds(file: string, inputNames: readonly string[]): Feeds {
  let doc: unknown;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new QuantbookError('INVALID_ARGUMENT', `${file}: not valid JSON (${(e as Error).message})`);
  }
  const asTensor = (v: unknown, where: string): ort.Tensor => {
    const o = v as { dims?: number[]; data?: number[]; type?: string };
    if (!o || !Array.isArray(o.dims) || !Array.isArray(o.data)) throw new QuantbookError('INVALID_ARGUMENT', `${file}: ${where} must be {"dims": [...], "data": [...]}`);
    if (o.type === 'int64') return new ort.Tensor('int64', BigInt64Array.from(o.data.map((x) => BigInt(x))), o.dims);
    return new ort.Tensor('float32', Float32Array.from(o.data), o.dims);
  };
  const obj = doc as Record<string, unknown>;
  if (obj && 'dims' in obj && 'data' in obj) return singleInput(asTensor(obj, 'the tensor'), inputNames, file);
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, asTensor(v, `input "${k}"`)]));
}
