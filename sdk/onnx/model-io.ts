/**
 * Reading and writing .onnx files: validation of what was read, external data
 * (tensor bytes kept in a file beside the model), and atomic saves. Models whose
 * tensors exceed protobuf's 2 GB message limit are saved with external data.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError } from '../errors';
import { PendingFile, writeAll, writeFilesAtomically } from '../util/atomic-write';
import { restoreInterruptedSet } from '../util/file-set';
import { GraphProto, ModelProto, TensorProto, decodeModel, encodeModel, int64ToNumber, newTensor } from './proto';
import { withConformingIr } from './ir-version';
import { DATA_LOCATION_EXTERNAL, isExternal, readExternalBytes, tensorByteSize } from './tensor';

/** Protobuf cannot encode messages of 2 GiB or more; leave headroom for the graph itself. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1;
const AUTO_EXTERNAL_THRESHOLD = 2 ** 31 - 64 * 2 ** 20;

export interface LoadOptions {
  /** folder that holds external data files (defaults to the model file's folder) */
  baseDir?: string;
  /** read external tensor bytes into memory (default true); false keeps the references */
  loadExternalData?: boolean;
}

export interface ExternalDataOptions {
  /** data file name, relative to the model's folder (default: `<model file name>.data`) */
  location?: string;
  /** tensors smaller than this many bytes stay inside the model (default 1024) */
  sizeThreshold?: number;
}

export interface SaveOptions {
  /** true or options: store initializer bytes in a separate file. Default: only when the
   *  model would exceed protobuf's 2 GB limit. */
  externalData?: boolean | ExternalDataOptions;
}

export interface SaveResult { modelPath: string; externalDataPath?: string; modelBytes: number }

export function readModelProto(source: string | Uint8Array, options: LoadOptions = {}): { proto: ModelProto; baseDir?: string } {
  let bytes: Uint8Array;
  let label: string;
  let baseDir = options.baseDir;
  if (typeof source === 'string') {
    label = source;
    let stat: fs.Stats;
    try {
      stat = fs.statSync(source);
    } catch {
      // a save killed between its two renames leaves the previous set beside its folder: restore it
      if (!restoreInterruptedSet(source) || !fs.existsSync(source)) throw new QuantbookError('FILE_NOT_FOUND', `model file not found: ${source}`);
      stat = fs.statSync(source);
    }
    if (stat.isDirectory()) throw new QuantbookError('INVALID_ARGUMENT', `model path ${source} is a folder; give the path of an .onnx file`);
    bytes = fs.readFileSync(source);
    baseDir ??= path.dirname(path.resolve(source));
  } else if (source instanceof Uint8Array) {
    label = `buffer of ${source.byteLength} bytes`;
    bytes = source;
  } else {
    throw new QuantbookError('INVALID_ARGUMENT', `model: got ${typeof source}; expected a file path (string) or the file's bytes (Buffer/Uint8Array)`);
  }
  if (bytes.byteLength === 0) throw new QuantbookError('INVALID_MODEL', `${label} is empty, not an ONNX model`);

  let proto: ModelProto;
  try {
    proto = decodeModel(bytes);
  } catch (e) {
    throw new QuantbookError('INVALID_MODEL', `${label} is not a valid ONNX model: protobuf decoding failed (${(e as Error).message}); the file may be truncated or of another format`, { cause: e });
  }
  validateModelProto(proto, label);
  if (options.loadExternalData !== false) inlineExternalData(proto, baseDir);
  return { proto, baseDir };
}

function validateModelProto(m: ModelProto, label: string): void {
  const problems: string[] = [];
  const ir = m.ir_version === undefined ? 0 : int64ToNumber(m.ir_version);
  if (!(ir >= 1)) problems.push('no ir_version');
  if (!m.graph) problems.push('no graph');
  else if (m.graph.node.some((n) => !n.op_type)) problems.push('a node without op_type');
  if (ir >= 3 && m.opset_import.length === 0) problems.push('no opset_import');
  if (problems.length) {
    throw new QuantbookError('INVALID_MODEL', `${label} is not a valid ONNX model: ${problems.join(', ')}; the file may be truncated or of another format`);
  }
}

/** Every initializer of a graph and of its subgraphs (the tensors that can live outside the model). */
export function* allInitializers(g: GraphProto): Generator<TensorProto, void, undefined> {
  yield* g.initializer;
  for (const n of g.node) for (const a of n.attribute) {
    if (a.g) yield* allInitializers(a.g);
    for (const sg of a.graphs) yield* allInitializers(sg);
  }
}

function inlineExternalData(m: ModelProto, baseDir: string | undefined): void {
  for (const t of allInitializers(m.graph!)) {
    if (!isExternal(t)) continue;
    t.raw_data = readExternalBytes(t, baseDir);
    t.external_data = [];
    delete t.data_location;
  }
}

export function serializeModel(m: ModelProto): Uint8Array {
  const total = [...allInitializers(m.graph!)].reduce((a, t) => a + (isExternal(t) ? 0 : tensorByteSize(t)), 0);
  if (total >= PROTOBUF_LIMIT) {
    throw new QuantbookError('UNSUPPORTED', `the model's tensors hold ${total} bytes, over protobuf's 2 GB limit: save it to a file (external data is used automatically)`);
  }
  return encodeModel(m);
}

/**
 * Saves `m` to `modelPath`. With external data, the initializers go to one data file and
 * the model holds references; the model object in memory is not changed.
 */
/** An externally stored tensor with its bytes read in. */
function inlineTensor(t: TensorProto, baseDir: string | undefined): TensorProto {
  const { external_data: _ref, data_location: _loc, ...rest } = t;
  return newTensor({ ...rest, raw_data: readExternalBytes(t, baseDir) });
}

export function writeModelProto(m: ModelProto, modelPath: string, options: SaveOptions = {}, sourceBaseDir?: string): SaveResult {
  if (typeof modelPath !== 'string' || modelPath.length === 0) {
    throw new QuantbookError('INVALID_ARGUMENT', `path: got ${JSON.stringify(modelPath)}; expected the path of the .onnx file to write`);
  }
  m = withConformingIr(m); // a file that says IR 3 but imports opset 13 is not valid ONNX
  const tensors = [...allInitializers(m.graph!)];
  const totalBytes = tensors.reduce((a, t) => a + tensorByteSize(t), 0);
  const ext = options.externalData === true ? {} : options.externalData || (totalBytes >= AUTO_EXTERNAL_THRESHOLD ? {} : undefined);
  const hasExternalRefs = tensors.some(isExternal);

  if (!ext && !hasExternalRefs) {
    const bytes = encodeModel(m);
    writeFilesAtomically([{ path: modelPath, write: (fd) => writeAll(fd, bytes) }]);
    return { modelPath, modelBytes: bytes.byteLength };
  }

  const location = (ext?.location ?? `${path.basename(modelPath)}.data`);
  if (path.isAbsolute(location) || location.split(/[\\/]/).includes('..')) {
    throw new QuantbookError('INVALID_ARGUMENT', `externalData.location: got "${location}"; expected a file name relative to the model's folder`);
  }
  const threshold = ext?.sizeThreshold ?? 1024;
  const dataPath = path.join(path.dirname(modelPath), location);

  // Plan the data file: offsets aligned to 64 bytes, each tensor read lazily when written.
  const moved = new Map<TensorProto, { offset: number; length: number }>();
  // a small tensor still held by reference (a model loaded without its external data) is written
  // inline, as it would be had it been loaded: the files depend on the tensors, not on how they were read
  const inlined = new Set<TensorProto>();
  let offset = 0;
  for (const t of tensors) {
    const size = tensorByteSize(t);
    if (ext && isExternal(t) && size < threshold) {
      inlined.add(t);
      continue;
    }
    if (!(isExternal(t) || (ext && size >= threshold && t.raw_data))) continue;
    offset = Math.ceil(offset / 64) * 64;
    moved.set(t, { offset, length: size });
    offset += size;
  }
  const replacement = (t: TensorProto): TensorProto => {
    const slot = moved.get(t)!;
    const { raw_data: _raw, ...rest } = t;
    return newTensor({
      ...rest,
      data_location: DATA_LOCATION_EXTERNAL,
      external_data: [
        { key: 'location', value: location },
        { key: 'offset', value: String(slot.offset) },
        { key: 'length', value: String(slot.length) },
      ],
    });
  };
  const out: ModelProto = { ...m, graph: mapInitializers(m.graph!, (t) => (moved.has(t) ? replacement(t) : inlined.has(t) ? inlineTensor(t, sourceBaseDir) : t)) } as ModelProto;
  const modelBytes = encodeModel(out);

  const dataFile: PendingFile = {
    path: dataPath,
    write: (fd) => {
      let at = 0;
      for (const [t, slot] of moved) {
        if (slot.offset > at) writeAll(fd, new Uint8Array(slot.offset - at));
        writeAll(fd, isExternal(t) ? readExternalBytes(t, sourceBaseDir) : t.raw_data!);
        at = slot.offset + slot.length;
      }
    },
  };
  writeFilesAtomically([dataFile, { path: modelPath, write: (fd) => writeAll(fd, modelBytes) }]);
  return { modelPath, externalDataPath: dataPath, modelBytes: modelBytes.byteLength };
}

/** A shallow copy of `g` (and its subgraphs) with each initializer passed through `f`. */
function mapInitializers(g: GraphProto, f: (t: TensorProto) => TensorProto): GraphProto {
  return {
    ...g,
    initializer: g.initializer.map(f),
    node: g.node.map((n) => {
      if (!n.attribute.some((a) => a.g || a.graphs.length)) return n;
      return {
        ...n,
        attribute: n.attribute.map((a) => (a.g || a.graphs.length ? { ...a, g: a.g && mapInitializers(a.g, f), graphs: a.graphs.map((sg) => mapInitializers(sg, f)) } : a)),
      };
    }),
  } as GraphProto;
}
