/**
 * W8A8 dynamic quantization: weights int8 per channel (as in static W8A8); activations get
 * their scales at run time, so no calibration data is needed.
 *   MatMul / Gemm inputs: per token — symmetric int8 with one scale per row along the last
 *   axis, s = max|x| / 127 (msModelSlim's W8A8_DYNAMIC). ONNX has no per-token dynamic
 *   quantize operator, so this is written with ReduceMax/Abs/Div/Round/Clip/Mul.
 *   Conv / pooling inputs: per tensor with DynamicQuantizeLinear → DequantizeLinear (uint8).
 */
import { resolveReduceRange, weightBits } from '../runtime/cpu-features';
import { DataType } from '../onnx/dtype';
import { Graph, makeAttribute, renameReads } from '../onnx/graph';
import { Model } from '../onnx/model';
import { newNode } from '../onnx/proto';
import { removeUnusedConstants } from './fold-batchnorm';
import { LayerRecord, applyQdq } from './qdq';
import { LayerSelection, layerGraph, layerTensorKey, requireLayers, selectLayers } from './layers';
import { definingGraph, scopes } from '../onnx/scopes';
import { reduceAxesAreInput } from '../onnx/opset-rules';
import { prepareFloat } from './w8a8';
import { QuantizedLstm, finishWithLstms } from './lstm';
import { spillFor } from './spill-for';

export interface W8A8DynamicOptions {
  disableNames?: string[];
  weightPerChannel?: boolean;
  /** weights on 7 bits (ONNX Runtime's reduce_range), for x86 CPUs without VNNI where 8-bit products saturate; 'auto': only on such a host; default false */
  reduceRange?: boolean | 'auto';
}

export interface W8A8DynamicResult {
  float: Model;
  /** weights as QDQ, activations quantized at run time */
  qdq: Model;
  /** the same with weights stored as dequantized floats */
  fakeQuant: Model;
  layers: LayerRecord[];
  /** whether the weights were put on 7 bits (see W8A8DynamicOptions.reduceRange) */
  reduceRange: boolean;
  selection: LayerSelection;
  /** 'per-token' or 'per-tensor' for each activation tensor */
  granularity: Map<string, 'per-token' | 'per-tensor'>;
  /** LSTMs rewritten as com.microsoft.DynamicQuantizeLSTM */
  lstm: QuantizedLstm[];
}

/** x → per-token symmetric int8 fake quantization along the last axis. Returns the new tensor. */
function insertPerToken(g: Graph, tensor: string, opset: number): string {
  const name = (k: string) => g.uniqueName(`${tensor}_${k}`);
  const c = (k: string, v: number) => g.addInitializer({ name: name(k), type: DataType.FLOAT, dims: [], data: Float32Array.of(v) }).name!;
  const [qmax, qmin, tiny] = [c('qmax', 127), c('qmin', -127), c('tiny', 1e-12)];
  const [abs, amax, safe, scale, div, round, clip, out] = ['abs', 'absmax', 'absmax_safe', 'token_scale', 'div', 'round', 'clip', 'dynamic_quant'].map(name);
  const readers = g.consumers(tensor);
  const lastAxis = reduceAxesAreInput('ReduceMax', opset)
    ? { input: [g.addInitializer({ name: name('axes'), type: DataType.INT64, dims: [1], data: BigInt64Array.of(-1n) }).name!], attribute: [] }
    : { input: [], attribute: [makeAttribute('axes', [-1])] };
  const nodes = [
    newNode({ op_type: 'Abs', name: `${abs}_node`, input: [tensor], output: [abs] }),
    newNode({ op_type: 'ReduceMax', name: `${amax}_node`, input: [abs, ...lastAxis.input], output: [amax], attribute: [...lastAxis.attribute, makeAttribute('keepdims', 1)] }),
    newNode({ op_type: 'Max', name: `${safe}_node`, input: [amax, tiny], output: [safe] }),
    newNode({ op_type: 'Div', name: `${scale}_node`, input: [safe, qmax], output: [scale] }),
    newNode({ op_type: 'Div', name: `${div}_node`, input: [tensor, scale], output: [div] }),
    newNode({ op_type: 'Round', name: `${round}_node`, input: [div], output: [round] }),
    newNode({ op_type: 'Clip', name: `${clip}_node`, input: [round, qmin, qmax], output: [clip] }),
    newNode({ op_type: 'Mul', name: `${out}_node`, input: [clip, scale], output: [out] }),
  ];
  for (const r of readers) renameReads(r, tensor, out);
  const p = g.producer(tensor);
  g.proto.node.splice(p ? g.proto.node.indexOf(p) + 1 : 0, 0, ...nodes);
  g.invalidate();
  return out;
}

/** x → DynamicQuantizeLinear → DequantizeLinear (per-tensor uint8 at run time). */
function insertPerTensorDynamic(g: Graph, tensor: string): string {
  const name = (k: string) => g.uniqueName(`${tensor}_${k}`);
  const [q, s, z, out] = ['dynamic_quantized', 'dynamic_scale', 'dynamic_zero_point', 'dynamic_dequantized'].map(name);
  const readers = g.consumers(tensor);
  for (const r of readers) renameReads(r, tensor, out);
  const p = g.producer(tensor);
  g.proto.node.splice(p ? g.proto.node.indexOf(p) + 1 : 0, 0,
    newNode({ op_type: 'DynamicQuantizeLinear', name: `${q}_node`, input: [tensor], output: [q, s, z] }),
    newNode({ op_type: 'DequantizeLinear', name: `${out}_node`, input: [q, s, z], output: [out] }));
  g.invalidate();
  return out;
}

export function quantizeW8A8Dynamic(model: Model, options: W8A8DynamicOptions = {}): W8A8DynamicResult {
  const reduceRange = resolveReduceRange(options.reduceRange);
  const float = prepareFloat(model);
  const qdq = float.clone();
  // a model held by reference (loaded without its external data): weights go to disk as they are quantized
  const spill = spillFor(qdq);
  const selection = selectLayers(qdq, options.disableNames ?? [], { subgraphs: true });
  // LSTMs are quantized by their own route (lstm.ts): a model of LSTMs alone has layers to quantize
  if (!selection.skipped.some((s) => s.opType === 'LSTM')) requireLayers(selection, qdq);
  const layers = applyQdq(qdq, selection.layers.map((l) => ({ ...l, bias: undefined })), {
    activations: new Map(),
    weightSpec: { perChannel: options.weightPerChannel ?? true, numBits: weightBits(reduceRange) },
    quantizeActivations: false,
    spill,
  });
  const granularity = new Map<string, 'per-token' | 'per-tensor'>();
  for (const l of selection.layers) {
    for (const t of l.activations) {
      const key = layerTensorKey(l, t);
      if (granularity.has(key)) continue;
      const perToken = l.opType === 'MatMul' || l.opType === 'Gemm';
      granularity.set(key, perToken ? 'per-token' : 'per-tensor');
      // the quantization goes where the tensor is defined (a body may read an outer tensor)
      const g = definingGraph(layerGraph(qdq, l), t)!;
      if (perToken) insertPerToken(g, t, qdq.opsetVersion('') ?? 13);
      else insertPerTensorDynamic(g, t);
    }
  }
  qdq.graph.invalidate();
  for (const s of scopes(qdq)) removeUnusedConstants(s.graph);
  const finished = finishWithLstms(qdq, selection, options.disableNames, spill);
  if (!finished.lstm.length) requireLayers(selection, qdq);
  // `fakeQuant` stays a getter: a model held by reference makes its fake-quant copy only when asked
  return Object.defineProperties({ float, qdq, layers, selection, granularity, reduceRange, lstm: finished.lstm } as W8A8DynamicResult, { fakeQuant: Object.getOwnPropertyDescriptor(finished, 'fakeQuant')! });
}
