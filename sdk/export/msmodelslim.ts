/**
 * msModelSlim's weight export: one safetensors set with every tensor of the model plus a
 * description JSON naming the quant type of each. Per quantized layer `<p>`:
 *   W8A8 (static):   <p>.weight int8 · <p>.input_scale, <p>.input_offset float32 [1] ·
 *                    <p>.quant_bias int32 [n] · <p>.deq_scale float32 [n] (or int64, see below)
 *   W8A8_DYNAMIC:    <p>.weight int8 · <p>.weight_scale, <p>.weight_offset float32 [n]
 * with msModelSlim's signed convention: x_q = round(x / input_scale) + input_offset in
 * [−128, 127]; y = (Σ x_q·w + quant_bias) · deq_scale, so quant_bias carries the float bias
 * and the activation offset's correction (−input_offset·Σw). msModelSlim files are always
 * signed: uint8 weights (w_signed false) are written as w − 128 with offsets − 128, the same
 * grid. weight_offset is the weight zero point (w = (w_q − weight_offset)·weight_scale); W8A8
 * static has no place for one, so it refuses asymmetric weights. Every other initializer is
 * written as it was, described "FLOAT".
 * `<p>` is the weight's name without ".weight" when it has that suffix (PyTorch exports), else
 * the layer's node name. Weights keep their ONNX layout (MatMul [k, n], Conv [n, c, kh, kw]).
 *
 * w8a8_timestep writes both of its sides into the one set: each layer's static W8A8 tensors
 * (described "W8A8", used for t ≥ timestep_sep) and, from the dynamic side (t < timestep_sep),
 * <p>.weight_scale and <p>.weight_offset (described "W8A8_DYNAMIC"); <p>.weight is the same
 * int8 tensor for both (refused if the two sides quantized a weight differently).
 *
 * fa3 (static per-head int8 Q, K, V) adds, per attention site `<a>` (the scores MatMul's node
 * name), the names Ascend's FA quantization loaders read:
 *   <a>.fa_q.scale, <a>.fa_k.scale, <a>.fa_v.scale    float32 [heads, 1]
 *   <a>.fa_q.offset, <a>.fa_k.offset, <a>.fa_v.offset  float32 [heads, 1] (0: symmetric)
 * ([1, 1] where the tensor is not [batch, heads, tokens, head_dim]), each described "FAQuant",
 * and "fa_quant_type": "FAQuant" at the top of the description.
 */
import * as path from 'path';
import { QuantbookError } from '../errors';
import { Model } from '../onnx/model';
import { isExternal, readTensor, tensorDims } from '../onnx/tensor';
import { TensorProto } from '../onnx/proto';
import { forEachChannel } from '../kernels/quant';
import { LayerRecord } from '../quantize/qdq';
import type { QParams } from '../observers/qparams';
import { writeAll, writeFilesAtomically } from '../util/atomic-write';
import { StoredTensor, deferredTensor, safetensorsDtype, writeSafetensorsSet } from './safetensors';

export type MsModelSlimQuantType = 'W8A8' | 'W8A8_DYNAMIC';
/** deq_scale as float32 (bf16 deployments) or int64 holding the float32 bits in its low half (fp16 deployments). */
export type DeqScaleFormat = 'float32' | 'int64';

export interface MsModelSlimWeights {
  quantType: MsModelSlimQuantType;
  tensors: Map<string, StoredTensor>;
  /** tensor name → quant type, plus "model_quant_type" */
  description: Record<string, string>;
  /** layer (node) name → the prefix its tensors carry */
  prefixes: Map<string, string>;
}

/** fa3's quantization of one attention site: Q, K and V (K before its transpose), one scale per head. */
export interface Fa3Export { prefix: string; q: QParams; k: QParams; v: QParams }

export interface MsModelSlimWeightOptions {
  deqScale?: DeqScaleFormat;
  /** w8a8_timestep: the dynamic side's layers (t < timestep_sep), written beside the static ones */
  dynamicLayers?: LayerRecord[];
  /** fa3: per-head Q/K/V parameters per attention site */
  attention?: Fa3Export[];
}

/** The description type of fa3's tensors, and the value of the description's "fa_quant_type". */
export const FA_QUANT_TYPE = 'FAQuant';

/** The default file names msModelSlim gives a quant type, e.g. quant_model_weight_w8a8.safetensors. */
export function defaultExportNames(quantType: MsModelSlimQuantType): { safetensors: string; json: string } {
  const t = quantType.toLowerCase();
  return { safetensors: `quant_model_weight_${t}.safetensors`, json: `quant_model_description_${t}.json` };
}

function layerPrefix(rec: LayerRecord): string {
  return rec.weight?.tensor.endsWith('.weight') ? rec.weight.tensor.slice(0, -'.weight'.length) : rec.name;
}

/** The weight on msModelSlim's signed grid: uint8 values and zero points shifted by −128 (same dequantized values). */
function signedWeight(w: NonNullable<LayerRecord['weight']>): { int8: Int8Array; offset: Int32Array } {
  const shift = w.int8 instanceof Uint8Array ? 128 : 0;
  const offset = Int32Array.from(w.zeroPoint ?? new Int32Array(w.scale.length), (z) => z - shift);
  return { int8: w.int8 instanceof Int8Array ? w.int8 : Int8Array.from(w.int8, (v) => v - shift), offset };
}

/** Σ of the integer weights feeding each output channel. */
function channelSums(w: NonNullable<LayerRecord['weight']>, int8: Int8Array): Int32Array {
  const sums = new Int32Array(w.scale.length);
  forEachChannel(int8.length, w.scale.length, w.dims, w.axis, (start, end, stride, c) => {
    for (let i = start; i < end; i += stride) sums[c] += int8[i];
  });
  return sums;
}

/**
 * A weight's int8 tensor for the safetensors file. A record whose integers were spilled (a model
 * held by reference, quantize/qdq.ts) gives a tensor that reads them when written, so the export
 * never holds every weight at once.
 */
function weightTensor(w: NonNullable<LayerRecord['weight']>, signedInt8: Int8Array): StoredTensor {
  if (!Object.getOwnPropertyDescriptor(w, 'int8')?.get) return { dtype: 'I8', shape: w.dims, data: signedInt8 };
  return deferredTensor('I8', w.dims, () => signedWeight(w).int8);
}

/** An initializer for the safetensors file: read when written if the model holds it by reference. */
function initializerTensor(init: TensorProto, baseDir: string | undefined): StoredTensor {
  const typed = (t: ReturnType<typeof readTensor>) => {
    const dtype = safetensorsDtype(t.type);
    if (!dtype || typeof t.data[0] === 'string') throw new QuantbookError('UNSUPPORTED', `msModelSlim export: initializer "${init.name}" has an element type safetensors cannot hold`);
    return { dtype, data: t.data as StoredTensor['data'] };
  };
  if (!isExternal(init)) {
    const t = readTensor(init, baseDir);
    return { ...typed(t), shape: t.dims };
  }
  const dtype = safetensorsDtype(init.data_type ?? 0);
  if (!dtype) throw new QuantbookError('UNSUPPORTED', `msModelSlim export: initializer "${init.name}" has an element type safetensors cannot hold`);
  return deferredTensor(dtype, tensorDims(init), () => typed(readTensor(init, baseDir)).data);
}

function f32(shape: number[], values: ArrayLike<number>): StoredTensor {
  return { dtype: 'F32', shape, data: Float32Array.from(values) };
}

/** Packs float32 values as int64 whose low 32 bits are the float's bits (the Ascend deq_scale layout). */
export function packDeqScale(values: Float32Array): BigInt64Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  return BigInt64Array.from(bits, (b) => BigInt(b));
}

/** Reads back a deq_scale in either format as float32. */
export function unpackDeqScale(t: StoredTensor): Float32Array {
  if (t.dtype === 'F32') return t.data as Float32Array;
  if (t.dtype === 'I64') return new Float32Array(Uint32Array.from(t.data as BigInt64Array, (v) => Number(v & 0xffffffffn)).buffer);
  throw new QuantbookError('INVALID_ARGUMENT', `deq_scale: dtype ${t.dtype}; expected F32 or I64`);
}

/**
 * Builds the tensor set and description for a quantized model. `float` is the float model the
 * layers were quantized from (opset-upgraded, BatchNorm folded), whose other initializers are
 * kept as they are.
 */
export function msModelSlimWeights(quantType: MsModelSlimQuantType, float: Model, layers: LayerRecord[], options: MsModelSlimWeightOptions = {}): MsModelSlimWeights {
  const deqFormat = options.deqScale ?? 'float32';
  if (deqFormat !== 'float32' && deqFormat !== 'int64') throw new QuantbookError('INVALID_ARGUMENT', `deq_scale format: got ${String(deqFormat)}; expected 'float32' or 'int64'`);
  const tensors = new Map<string, StoredTensor>();
  const description: Record<string, string> = { model_quant_type: quantType };
  const prefixes = new Map<string, string>();
  const replaced = new Set<string>();
  const put = (name: string, t: StoredTensor, type: string) => {
    if (tensors.has(name)) throw new QuantbookError('INVALID_ARGUMENT', `msModelSlim export: two tensors would be named "${name}"; rename the layer or initializer`);
    tensors.set(name, t);
    description[name] = type;
  };

  for (const rec of layers) {
    const p = layerPrefix(rec);
    prefixes.set(rec.name, p);
    const w = rec.weight;
    const signed = w && signedWeight(w);
    if (w && signed) {
      replaced.add(w.tensor);
      put(`${p}.weight`, weightTensor(w, signed.int8), quantType);
    }
    if (quantType === 'W8A8_DYNAMIC') {
      if (w && signed) {
        put(`${p}.weight_scale`, f32([w.scale.length], w.scale), quantType);
        put(`${p}.weight_offset`, f32([w.scale.length], signed.offset), quantType);
      }
      continue;
    }
    // the weight offset would multiply Σx_q, which changes per input: it cannot fold into quant_bias
    if (signed?.offset.some(Boolean)) throw new QuantbookError('UNSUPPORTED', `msModelSlim W8A8 export: layer "${rec.name}" has asymmetric weights (weight offset ${signed.offset.find(Boolean)}); W8A8 needs symmetric weights (w_sym true), or export W8A8_DYNAMIC, which records weight_offset`);
    if (!rec.input) continue;
    // the int8 offset for the same grid: uint8 zero point z ↔ int8 offset z − 128
    const offset = rec.input.zeroPoint + (-128 - rec.input.qmin);
    put(`${p}.input_scale`, f32([1], [rec.input.scale]), quantType);
    put(`${p}.input_offset`, f32([1], [offset]), quantType);
    if (!w) continue;
    const n = w.scale.length;
    const deq = Float32Array.from(w.scale, (s) => Math.fround(s * rec.input!.scale));
    const sums = channelSums(w, signed!.int8);
    const folded = Array.from({ length: n }, (_, c) => (rec.bias ? rec.bias.int32[c] : 0) - offset * sums[c]);
    // biases are kept within ±2^30 (int32-bias.ts); the offset term could only pass int32 for K > 66 000 inputs per channel
    const outside = folded.findIndex((v) => v < -(2 ** 31) || v > 2 ** 31 - 1);
    if (outside >= 0) throw new QuantbookError('UNSUPPORTED', `msModelSlim export: layer "${rec.name}" channel ${outside}: quant_bias ${folded[outside]} (bias − input_offset·Σw) does not fit int32`);
    const quantBias = Int32Array.from(folded);
    if (rec.bias) replaced.add(rec.bias.tensor);
    put(`${p}.quant_bias`, { dtype: 'I32', shape: [n], data: quantBias }, quantType);
    put(`${p}.deq_scale`, deqFormat === 'int64' ? { dtype: 'I64', shape: [n], data: packDeqScale(deq) } : f32([n], deq), quantType);
  }

  // w8a8_timestep's dynamic side: its weight scales and offsets beside the static tensors, one shared int8 weight
  for (const rec of options.dynamicLayers ?? []) {
    const w = rec.weight;
    if (!w) continue;
    const p = layerPrefix(rec);
    const signed = signedWeight(w);
    const known = prefixes.get(rec.name);
    if (known !== undefined && known !== p) throw new QuantbookError('INVALID_ARGUMENT', `msModelSlim export: layer "${rec.name}" has prefix "${known}" on the static side and "${p}" on the dynamic side`);
    prefixes.set(rec.name, p);
    const stored = tensors.get(`${p}.weight`);
    if (stored) {
      const same = stored.data.length === signed.int8.length && (stored.data as Int8Array).every((v, i) => v === signed.int8[i]);
      if (!same) throw new QuantbookError('UNSUPPORTED', `msModelSlim export: layer "${rec.name}" has different int8 weights on the static and the dynamic side; one <p>.weight cannot hold both`);
    } else {
      replaced.add(w.tensor);
      put(`${p}.weight`, weightTensor(w, signed.int8), 'W8A8_DYNAMIC');
    }
    put(`${p}.weight_scale`, f32([w.scale.length], w.scale), 'W8A8_DYNAMIC');
    put(`${p}.weight_offset`, f32([w.scale.length], signed.offset), 'W8A8_DYNAMIC');
  }

  // fa3: per-head Q, K, V scales and offsets per attention site
  if (options.attention?.length) description.fa_quant_type = FA_QUANT_TYPE;
  for (const site of options.attention ?? []) {
    for (const [which, q] of [['q', site.q], ['k', site.k], ['v', site.v]] as const) {
      const heads = q.scale.length;
      put(`${site.prefix}.fa_${which}.scale`, f32([heads, 1], q.scale), FA_QUANT_TYPE);
      put(`${site.prefix}.fa_${which}.offset`, f32([heads, 1], q.zeroPoint), FA_QUANT_TYPE);
    }
  }

  const baseDir = float.baseDir;
  for (const init of float.graph.proto.initializer) {
    if (replaced.has(init.name!)) continue;
    put(init.name!, initializerTensor(init, baseDir), 'FLOAT');
  }
  return { quantType, tensors, description, prefixes };
}

export interface MsModelSlimSaveOptions {
  safetensorsName?: string;
  jsonName?: string;
  /** shard the weights into parts of about this many bytes */
  partBytes?: number;
  metadata?: Record<string, string>;
}

/** Writes the weights (one file or shards + index) and the description JSON into `dir`. */
export function saveMsModelSlim(dir: string, weights: MsModelSlimWeights, options: MsModelSlimSaveOptions = {}): string[] {
  const names = defaultExportNames(weights.quantType);
  const set = writeSafetensorsSet(dir, options.safetensorsName ?? names.safetensors, weights.tensors, { partBytes: options.partBytes, metadata: options.metadata });
  const json = path.join(dir, options.jsonName ?? names.json);
  const text = new TextEncoder().encode(`${JSON.stringify(weights.description, null, 2)}\n`);
  writeFilesAtomically([{ path: json, write: (fd) => writeAll(fd, text) }]);
  return [...set.files, ...(set.index ? [set.index] : []), json];
}
