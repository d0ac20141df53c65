/**
 * float32 → float16 conversion as Transformers.js' `model_fp16.onnx` files are made: weights and
 * activations in float16, graph inputs and outputs kept float32 (Casts at the border, so callers
 * feed and read what they did before), and some nodes kept in float32 behind Casts:
 *   - numerically sensitive or type-bound ops (FLOAT32_OPS): Softmax/LayerNormalization and the
 *     ReduceMean/Pow/Sqrt of decomposed norms, Resize, Range, random generators, (de)quantizers…;
 *     their weights stay float32 when nothing else reads them;
 *   - with target 'cpu' (the default), every node ONNX Runtime's CPU provider has no float16
 *     kernel for: found by asking ORT (elem-types.ts: where it would insert float32 Casts itself).
 *     Their weights are still stored float16 (the file halves) and cast once at load time.
 * Element types come from ORT's own type inference. Models with If/Loop/Scan bodies are refused
 * (FLOAT16_SUBGRAPHS): their bodies are not converted yet.
 */
import { QuantbookError, invalidArgument } from '../errors';
import { DataType, numberToFloat16Bits } from '../onnx/dtype';
import { promoteFloat16 } from '../onnx/float16';
import { attributeValue, makeAttribute } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto, TensorProto, newNode } from '../onnx/proto';
import { makeTensor, readTensorAsFloat32, tensorDims } from '../onnx/tensor';
import { cpuFloat16Fallbacks, inferElemTypes } from './elem-types';

/** Ops always computed in float32: precision (normalizations, softmax), or inputs ONNX ties to float32 or to an attribute. */
export const FLOAT32_OPS = [
  'Softmax', 'LogSoftmax', 'LayerNormalization', 'SimplifiedLayerNormalization', 'SkipLayerNormalization', 'ReduceMean', 'Pow', 'Sqrt',
  'Resize', 'Upsample', 'Range', 'CumSum', 'TopK', 'NonMaxSuppression', 'RoiAlign',
  'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Bernoulli', 'Multinomial', 'EyeLike',
  'QuantizeLinear', 'DequantizeLinear', 'DynamicQuantizeLinear',
] as const;

/** Ops that accept any element type on their inputs: they read a float16 tensor as it is. */
const ANY_TYPE_INPUTS = new Set(['Cast', 'CastLike', 'Shape', 'Size']);

export type Float16Target = 'cpu' | 'any';

export interface Float16Options {
  /** 'cpu' (default): also keep float32 the nodes ORT's CPU provider has no float16 kernel for; 'any': only FLOAT32_OPS (for runtimes with float16 kernels, e.g. WebGPU) */
  target?: Float16Target;
  /** more op types to keep in float32 */
  keepFloat32?: string[];
}

export interface KeptFloat32 { node: string; opType: string; reason: 'numerically sensitive or float32-bound' | 'no float16 kernel in ONNX Runtime CPU' | 'keepFloat32' }

export interface Float16Result {
  model: Model;
  /** nodes computed in float32 and why */
  keptFloat32: KeptFloat32[];
  /** float initializers (and Constant values) stored as float16 */
  float16Tensors: number;
  /** those left float32 (read only by float32 nodes) */
  float32Tensors: number;
  /** Cast nodes added */
  casts: number;
}

const F16_MAX = 65504;

/** float32 values → float16 tensor; finite values beyond float16's range saturate at ±65504 (masks like −3.4e38 stay finite). */
export function toFloat16Tensor(t: TensorProto, baseDir?: string): TensorProto {
  const values = readTensorAsFloat32(t, baseDir);
  const bits = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    bits[i] = numberToFloat16Bits(Number.isFinite(v) ? Math.max(-F16_MAX, Math.min(F16_MAX, v)) : v);
  }
  return makeTensor(t.name ?? '', DataType.FLOAT16, tensorDims(t), bits);
}

function refuseSubgraphs(model: Model): void {
  for (const n of model.proto.graph!.node) {
    if (n.attribute.some((a) => a.g || a.graphs.length)) {
      throw new QuantbookError('UNSUPPORTED', `fp16 (FLOAT16_SUBGRAPHS): node "${n.name}" (${n.op_type}) has a subgraph body; this converter handles the main graph only, and converting half a model would leave float32/float16 mismatches at the body's outer-scope reads`);
    }
  }
}

/** float32 → float16 (see the module comment). `model` is not changed. */
export async function convertToFloat16(model: Model, options: Float16Options = {}): Promise<Float16Result> {
  const target = options.target ?? 'cpu';
  if (target !== 'cpu' && target !== 'any') throw invalidArgument('target', target, "'cpu' or 'any'");
  const extra = options.keepFloat32 ?? [];
  if (!Array.isArray(extra) || extra.some((x) => typeof x !== 'string')) throw invalidArgument('keepFloat32', extra, 'a list of op types');
  const base = model.clone();
  promoteFloat16(base);
  refuseSubgraphs(base);
  const names = base.graph.nameSource();
  for (const n of base.proto.graph!.node) if (!n.name) n.name = names.fresh(`${n.op_type}_node`);
  base.graph.invalidate();
  const types = await inferElemTypes(base);
  const reasons = new Map<string, KeptFloat32['reason']>();
  for (const n of base.proto.graph!.node) {
    const op = n.op_type ?? '';
    if ((FLOAT32_OPS as readonly string[]).includes(op)) reasons.set(n.name!, 'numerically sensitive or float32-bound');
    else if (extra.includes(op)) reasons.set(n.name!, 'keepFloat32');
    // operators of other domains (custom ops) are not assumed to take float16
    else if (n.domain && n.domain !== 'ai.onnx' && n.domain !== 'com.microsoft') reasons.set(n.name!, 'keepFloat32');
  }
  let result = rewrite(base, types, reasons);
  if (target === 'cpu') {
    const fallbacks = await cpuFloat16Fallbacks(result.model);
    let added = 0;
    for (const name of fallbacks) if (!reasons.has(name) && base.graph.node(name)) { reasons.set(name, 'no float16 kernel in ONNX Runtime CPU'); added++; }
    if (added) result = rewrite(base, types, reasons);
  }
  return result;
}

/** One conversion with a fixed set of float32 nodes. */
function rewrite(base: Model, types: Map<string, DataType>, float32Nodes: Map<string, KeptFloat32['reason']>): Float16Result {
  const model = base.clone();
  const g = model.proto.graph!;
  const graph = model.graph;
  const isFloat = (t: string) => !!t && types.get(t) === DataType.FLOAT;
  const keptFloat32 = (n: NodeProto) => float32Nodes.has(n.name ?? '');
  const sensitive = (n: NodeProto) => float32Nodes.get(n.name ?? '') === 'numerically sensitive or float32-bound' || float32Nodes.get(n.name ?? '') === 'keepFloat32';
  const readers = new Map<string, NodeProto[]>();
  for (const n of g.node) for (const i of n.input) if (i) readers.set(i, [...(readers.get(i) ?? []), n]);
  const outputs = new Set(g.output.map((v) => v.name ?? ''));

  // the type each float tensor is stored in
  const home = new Map<string, DataType>();
  const initializerNames = new Set(g.initializer.map((t) => t.name ?? ''));
  for (const v of g.input) if (isFloat(v.name ?? '') && !initializerNames.has(v.name ?? '')) home.set(v.name!, DataType.FLOAT);
  let float16Tensors = 0;
  let float32Tensors = 0;
  // a constant read only by float32-bound nodes (and not a graph output) stays float32
  const constantHome = (name: string) => ((readers.get(name) ?? []).every(sensitive) && !outputs.has(name) ? DataType.FLOAT : DataType.FLOAT16);
  g.initializer = g.initializer.map((t) => {
    if (t.data_type !== DataType.FLOAT) return t;
    const h = constantHome(t.name ?? '');
    home.set(t.name ?? '', h);
    if (h === DataType.FLOAT) { float32Tensors++; return t; }
    float16Tensors++;
    return toFloat16Tensor(t, model.baseDir);
  });
  for (const n of g.node) {
    const floatOuts = n.output.filter(isFloat);
    if (!floatOuts.length) continue;
    if (n.op_type === 'Constant') {
      const h = constantHome(n.output[0]);
      home.set(n.output[0], h);
      if (h === DataType.FLOAT) { float32Tensors++; continue; }
      const value = graph.constantValue(n.output[0])!;
      n.attribute = [makeAttribute('value', toFloat16Tensor(makeTensor('', DataType.FLOAT, value.dims, value.data as Float32Array)))];
      float16Tensors++;
      continue;
    }
    if (keptFloat32(n)) { for (const o of floatOuts) home.set(o, DataType.FLOAT); continue; }
    for (const o of floatOuts) home.set(o, DataType.FLOAT16);
    if (n.op_type === 'Cast') for (const a of n.attribute) if (a.name === 'to') a.i = DataType.FLOAT16;
    if (n.op_type === 'ConstantOfShape') {
      const v = attributeValue(n, 'value') as TensorProto | undefined;
      const f16 = v ? toFloat16Tensor(v) : makeTensor('', DataType.FLOAT16, [1], Uint16Array.of(0));
      n.attribute = [...n.attribute.filter((a) => a.name !== 'value'), makeAttribute('value', f16)];
    }
  }

  // Casts where a reader wants another type than the tensor is stored in (one per tensor and type)
  const casts = new Map<string, NodeProto>();
  const names = graph.nameSource();
  const castName = (t: string, to: DataType) => {
    const key = `${t}|${to}`;
    let c = casts.get(key);
    if (!c) {
      const out = names.fresh(`${t}_${to === DataType.FLOAT ? 'float32' : 'float16'}`);
      c = newNode({ op_type: 'Cast', name: names.fresh(`${out}_Cast`), input: [t], output: [out], attribute: [makeAttribute('to', to)] });
      casts.set(key, c);
    }
    return c.output[0];
  };
  for (const n of g.node) {
    if (ANY_TYPE_INPUTS.has(n.op_type ?? '') && n.op_type !== 'CastLike') continue;
    const want = keptFloat32(n) ? DataType.FLOAT : DataType.FLOAT16;
    n.input = n.input.map((i, k) => {
      if (!isFloat(i) || (n.op_type === 'CastLike' && k === 0)) return i;
      const h = home.get(i) ?? DataType.FLOAT;
      return h === want ? i : castName(i, want);
    });
  }
  // graph outputs keep float32: the inner tensor gets a new name, a Cast writes the public one
  const tail: NodeProto[] = [];
  for (const v of g.output) {
    const o = v.name ?? '';
    if (!isFloat(o) || home.get(o) !== DataType.FLOAT16) continue;
    const inner = names.fresh(`${o}_float16`);
    for (const n of g.node) {
      n.output = n.output.map((x) => (x === o ? inner : x));
      n.input = n.input.map((x) => (x === o ? inner : x));
    }
    for (const c of casts.values()) c.input = c.input.map((x) => (x === o ? inner : x));
    g.initializer.forEach((t) => { if (t.name === o) t.name = inner; });
    tail.push(newNode({ op_type: 'Cast', name: names.fresh(`${o}_to_float32`), input: [inner], output: [o], attribute: [makeAttribute('to', DataType.FLOAT)] }));
  }
  // order: Casts of inputs/initializers first, each other Cast right after its producer
  const byProducer = new Map<string, NodeProto[]>();
  const front: NodeProto[] = [];
  const producerOf = new Map<string, NodeProto>();
  for (const n of g.node) for (const o of n.output) producerOf.set(o, n);
  for (const c of casts.values()) {
    const p = producerOf.get(c.input[0]);
    if (!p) front.push(c);
    else byProducer.set(p.name!, [...(byProducer.get(p.name!) ?? []), c]);
  }
  g.node = [...front, ...g.node.flatMap((n) => [n, ...(byProducer.get(n.name!) ?? [])]), ...tail];
  // declared float types inside the graph are stale now; ORT infers them again
  g.value_info = g.value_info.filter((v) => v.type?.tensor_type?.elem_type !== DataType.FLOAT);
  graph.invalidate();
  const kept: KeptFloat32[] = base.proto.graph!.node.filter((n) => float32Nodes.has(n.name ?? '')).map((n) => ({ node: n.name!, opType: n.op_type!, reason: float32Nodes.get(n.name!)! }));
  return { model, keptFloat32: kept, float16Tensors, float32Tensors, casts: casts.size + tail.length };
}
