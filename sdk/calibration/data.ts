/**
 * Calibration data sources, all turned into a stream of ORT feeds one batch at a time:
 * arrays or (async) iterables of feeds, or a folder of .npy / .json files (sorted by name).
 * A file holds one batch: for a single-input model, the input tensor itself; otherwise an
 * object keyed by input name ({"x": {"dims": [...], "data": [...]}} in JSON).
 * Files that describe the data rather than hold it (labels.json and the others NON_BATCH_FILE
 * matches) are left out. The formats: docs/formats.md.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';
import { checkedShape, hasOwn, jsonObject, readRegularFile } from '../util/untrusted';
import type { Feeds } from '../runtime/runner';
import { ImageFolderSource, imageFolderBatches, isImageFolderSource } from './images';

export type CalibrationSource = string | ImageFolderSource | Iterable<Feeds> | AsyncIterable<Feeds>;

export const FILE_EXTENSIONS = ['.npy', '.json'];

/**
 * Files in a data folder that are never batches, though they end in .json: labels and other
 * metadata shipped beside the data (labels.json, meta.json, metadata.json, manifest.json,
 * schedule.json, config.json, and any *.labels.json / *.meta.json / *.manifest.json), and hidden
 * or underscore-prefixed files (.x.json, _x.json). Documented in docs/formats.md.
 */
export const NON_BATCH_FILE = /^[._]|^(labels?|meta|metadata|manifest|schedule|config)\.json$|\.(labels?|meta|manifest)\.json$/i;

/** Whether a file of a data folder is a calibration batch: .npy or .json, and not metadata (NON_BATCH_FILE). */
export function isBatchFile(name: string): boolean {
  return FILE_EXTENSIONS.includes(path.extname(name).toLowerCase()) && !NON_BATCH_FILE.test(name);
}

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

/**
 * The batches of `source` held in memory (at most `max`), for work that passes over the data
 * more than once; the one normalising step every entry that takes data goes through, with batchesFrom.
 */
export async function collectBatches(source: CalibrationSource, inputNames: readonly string[], max = Infinity): Promise<Feeds[]> {
  const out: Feeds[] = [];
  if (out.length >= max) return out;
  for await (const b of batchesFrom(source, inputNames)) {
    out.push(b);
    if (out.length >= max) break;
  }
  return out;
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
  const files = fs.readdirSync(dir).filter(isBatchFile).sort();
  if (!files.length) throw new QuantbookError('INVALID_ARGUMENT', `calibration data folder ${dir} holds no ${FILE_EXTENSIONS.join(' or ')} batch files (labels.json and other metadata are not batches: docs/formats.md; for images, pass { imageFolder, preprocess: { size, mean, std, channelOrder } })`);
  for (const f of files) {
    const file = path.join(dir, f);
    yield path.extname(f).toLowerCase() === '.npy' ? singleInput(readNpy(file), inputNames, file) : jsonFeeds(file, inputNames);
  }
}

function singleInput(t: ort.Tensor, inputNames: readonly string[], file: string): Feeds {
  if (inputNames.length !== 1) throw new QuantbookError('INVALID_ARGUMENT', `${file}: a .npy file holds one tensor, but the model has inputs ${inputNames.join(', ')}; use .json files keyed by input name`);
  return { [inputNames[0]]: t };
}

const NPY_TYPES: Record<string, [ort.Tensor.Type, number, (b: ArrayBuffer, n: number) => ArrayLike<number> | BigInt64Array]> = {
  '<f4': ['float32', 4, (b, n) => new Float32Array(b, 0, n)],
  '<f8': ['float32', 8, (b, n) => Float32Array.from(new Float64Array(b, 0, n))],
  '<i8': ['int64', 8, (b, n) => new BigInt64Array(b, 0, n)],
  '<i4': ['int32', 4, (b, n) => new Int32Array(b, 0, n)],
  '|u1': ['uint8', 1, (b, n) => new Uint8Array(b, 0, n)],
  '|i1': ['int8', 1, (b, n) => new Int8Array(b, 0, n)],
};

/** More elements than any batch file can hold: a shape beyond it is refused before its size is computed. */
const MAX_ELEMENTS = 2 ** 32;

/** Reads a NumPy .npy file (format 1.x–3.x, C order); every malformed part is a named error. */
export function readNpy(file: string): ort.Tensor {
  const buf = readRegularFile(file, '.npy file');
  const bad = (why: string) => new QuantbookError('INVALID_ARGUMENT', `${file}: not a valid .npy file (${why})`);
  if (buf.length < 10 || buf.readUInt8(0) !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') throw new QuantbookError('INVALID_ARGUMENT', `${file} is not a .npy file`);
  const major = buf.readUInt8(6);
  if (major < 1 || major > 3) throw bad(`format version ${major}.x is unknown (1.x–3.x are)`);
  if (major > 1 && buf.length < 12) throw bad('shorter than its header length field');
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  if (start + headerLen > buf.length) throw bad(`header length ${headerLen} runs past the end of the file (${buf.length} bytes)`);
  const header = buf.toString(major === 3 ? 'utf8' : 'latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (shapeText === undefined) throw bad('the header has no shape');
  if (!descr || !hasOwn(NPY_TYPES, descr)) throw new QuantbookError('UNSUPPORTED', `${file}: dtype ${descr} is not supported; use one of ${Object.keys(NPY_TYPES).join(', ')}`);
  if (fortran) throw new QuantbookError('UNSUPPORTED', `${file}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray`);
  const [type, itemSize, view] = NPY_TYPES[descr];
  const body = buf.subarray(start + headerLen);
  const dims = shapeText.split(',').map((d) => d.trim()).filter(Boolean).map((d) => (/^\d+L?$/.test(d) ? Number(d.replace('L', '')) : NaN));
  const shape = checkedShape(dims, MAX_ELEMENTS, `${file}: shape (${shapeText.trim()})`);
  const n = shape.reduce((a, b) => a * b, 1);
  if (body.length !== n * itemSize) throw bad(`shape (${shape.join(', ')}) of ${descr} needs ${n * itemSize} data bytes; the file has ${body.length}`);
  const aligned = new Uint8Array(body.length);
  aligned.set(body);
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
  const doc = jsonObject(readRegularFile(file, 'JSON batch').toString('utf8'), `JSON batch ${file}`);
  const asTensor = (v: unknown, where: string): ort.Tensor => {
    const form = `${file}: ${where} must be {"dims": [...], "data": [...]} (optionally "type": "int64")`;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new QuantbookError('INVALID_ARGUMENT', form);
    const o = v as { dims?: unknown; data?: unknown; type?: unknown };
    if (!Array.isArray(o.data)) throw new QuantbookError('INVALID_ARGUMENT', form);
    const dims = checkedShape(o.dims, MAX_ELEMENTS, `${file}: ${where} dims`);
    const n = dims.reduce((a, b) => a * b, 1);
    if (n !== o.data.length) throw new QuantbookError('INVALID_ARGUMENT', `${file}: ${where} has dims [${dims}] (${n} values) but ${o.data.length} data values`);
    if (o.type !== undefined && o.type !== 'int64' && o.type !== 'float32') throw new QuantbookError('INVALID_ARGUMENT', `${file}: ${where} type ${JSON.stringify(o.type)}; expected "float32" or "int64"`);
    const data = o.data as unknown[];
    if (o.type === 'int64') {
      const bad = data.findIndex((x) => typeof x !== 'number' || !Number.isSafeInteger(x));
      if (bad >= 0) throw new QuantbookError('INVALID_ARGUMENT', `${file}: ${where} data[${bad}] is ${JSON.stringify(data[bad])}; int64 data must be whole numbers`);
      return new ort.Tensor('int64', BigInt64Array.from(data as number[], (x) => BigInt(x)), dims);
    }
    const bad = data.findIndex((x) => typeof x !== 'number');
    if (bad >= 0) throw new QuantbookError('INVALID_ARGUMENT', `${file}: ${where} data[${bad}] is ${JSON.stringify(data[bad])}; expected numbers`);
    return new ort.Tensor('float32', Float32Array.from(data as number[]), dims);
  };
  if ('dims' in doc && 'data' in doc) return singleInput(asTensor(doc, 'the tensor'), inputNames, file);
  const names = Object.keys(doc);
  const unknown = names.filter((k) => !inputNames.includes(k));
  if (unknown.length) throw new QuantbookError('INVALID_ARGUMENT', `${file}: ${unknown.map((k) => `"${k}"`).join(', ')} ${unknown.length > 1 ? 'are not inputs' : 'is not an input'} of the model; its inputs: ${inputNames.join(', ')}`);
  const missing = inputNames.filter((k) => !names.includes(k));
  if (missing.length) throw new QuantbookError('INVALID_ARGUMENT', `${file}: no value for input${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
  // defined, not assigned: a key such as "__proto__" stays an ordinary key
  return Object.fromEntries(names.map((k) => [k, asTensor(doc[k], `input "${k}"`)]));
}
