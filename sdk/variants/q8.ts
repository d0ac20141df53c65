/**
 * Dynamic weight quantization as ONNX Runtime's `quantize_dynamic` writes it, the form of
 * Transformers.js' `model_quantized.onnx` (q8), `model_int8.onnx` and `model_uint8.onnx`:
 *   MatMul/Gemm  x → DynamicQuantizeLinear (uint8, at run time) → MatMulInteger(x_q, W_q, x_zp, W_zp)
 *                → Cast(float) → Mul(x_scale·W_scale) [→ Add(β·C) for Gemm]
 *   Conv         the same with ConvInteger, scales and bias broadcast over [1, C, 1, …]
 *   Gather       (embedding tables) Gather of the 8-bit table → DequantizeLinear
 * W is int8 (symmetric) or uint8 (asymmetric, as ORT's default for QUInt8), per output channel or
 * per tensor, optionally on 7 bits (reduce_range). Layers come from the processors' own selection
 * (quantize/layers.ts: constant float weights, not shared) and weights from quantizeWeight (qdq.ts).
 * Forms ORT's CPU kernels refuse are not written: MatMul weights of rank ≠ 2 (per-column
 * MatMulInteger), ConvInteger with per-channel zero points (per-channel uint8 Conv weights are
 * symmetric instead). ORT CPU (1.30) runs ConvInteger with int8 and uint8 weights.
 */
import { QuantbookError, invalidArgument } from '../errors';
import { resolveReduceRange, weightBits } from '../runtime/cpu-features';
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue, makeAttribute } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto, newNode } from '../onnx/proto';
import { removeUnusedConstants } from '../quantize/fold-batchnorm';
import { QuantLayer, selectLayers } from '../quantize/layers';
import { quantizeWeight } from '../quantize/qdq';
import { prepareFloat } from '../quantize/w8a8';
import { SmoothedNorm, smoothLayerNormOutliers } from './ln-smooth';

export type WeightType = 'int8' | 'uint8';
export const DYNAMIC_OP_TYPES = ['MatMul', 'Gemm', 'Conv', 'Gather'] as const;
export type DynamicOpType = (typeof DYNAMIC_OP_TYPES)[number];

export interface DynamicWeightOptions {
  weightType: WeightType;
  /** one scale (and zero point) per output channel; default true. Gather tables are per tensor, as ORT writes them */
  perChannel?: boolean;
  /** weights on 7 bits (ORT's reduce_range); 'auto': where the CPU's int8 products would saturate; default false */
  reduceRange?: boolean | 'auto';
  /** default: all of DYNAMIC_OP_TYPES */
  opTypes?: DynamicOpType[];
  /** node names kept float (ORT's nodes_to_exclude) */
  exclude?: string[];
  /**
   * move LayerNormalization outlier channels into the weights of the MatMuls reading them
   * (ln-smooth.ts; the float function is unchanged): per-tensor dynamic activations lose less.
   * A number is the migration strength α; true: 0.5; default true
   */
  smoothLayerNorm?: boolean | number;
}

export interface DynamicWeightLayer { name: string; opType: DynamicOpType; weight: string; perChannel: boolean; symmetric: boolean }

export interface DynamicWeightResult {
  model: Model;
  weightType: WeightType;
  reduceRange: boolean;
  layers: DynamicWeightLayer[];
  skipped: Array<{ name: string; opType: string; reason: string }>;
  /** LayerNormalizations whose outlier channels were moved into the weights */
  smoothed: SmoothedNorm[];
}

const ELEM = { int8: DataType.INT8, uint8: DataType.UINT8 } as const;

export function quantizeDynamicWeights(model: Model, options: DynamicWeightOptions): DynamicWeightResult {
  const weightType = options?.weightType;
  if (weightType !== 'int8' && weightType !== 'uint8') throw invalidArgument('weightType', weightType, "'int8' or 'uint8'");
  const perChannel = options.perChannel ?? true;
  if (typeof perChannel !== 'boolean') throw invalidArgument('perChannel', perChannel, 'true or false');
  const opTypes = options.opTypes ?? [...DYNAMIC_OP_TYPES];
  if (!Array.isArray(opTypes) || opTypes.some((o) => !(DYNAMIC_OP_TYPES as readonly string[]).includes(o))) throw invalidArgument('opTypes', opTypes, `a list of ${DYNAMIC_OP_TYPES.join(', ')}`);
  const exclude = options.exclude ?? [];
  if (!Array.isArray(exclude) || exclude.some((x) => typeof x !== 'string')) throw invalidArgument('exclude', exclude, 'a list of node names');
  const reduceRange = resolveReduceRange(options.reduceRange);
  const numBits = weightBits(reduceRange);
  const signed = weightType === 'int8';

  const smooth = options.smoothLayerNorm ?? true;
  if (typeof smooth !== 'boolean' && !(typeof smooth === 'number' && smooth > 0 && smooth <= 1)) throw invalidArgument('smoothLayerNorm', smooth, 'true, false or a strength α in (0, 1]');
  const out = prepareFloat(model);
  const smoothed = smooth === false ? [] : smoothLayerNormOutliers(out, smooth === true ? 0.5 : smooth);
  const g = out.graph;
  const selection = selectLayers(out, [], { subgraphs: false });
  const skipped: DynamicWeightResult['skipped'] = selection.skipped
    .filter((s) => (opTypes as string[]).includes(s.opType))
    .map(({ name, opType, reason }) => ({ name, opType, reason }));
  const layers: DynamicWeightLayer[] = [];
  const names = g.nameSource();
  const fresh = (base: string) => names.fresh(base);
  const replacements = new Map<NodeProto, NodeProto[]>();
  const initializers: Parameters<Graph['addInitializer']>[0][] = [];
  const addConst = (base: string, type: DataType, dims: number[], data: ArrayLike<number>) => {
    const name = fresh(base);
    initializers.push({ name, type, dims, data: type === DataType.FLOAT ? Float32Array.from(data) : type === DataType.INT8 ? Int8Array.from(data) : Uint8Array.from(data) });
    return name;
  };
  // one DynamicQuantizeLinear per activation tensor, emitted before its first quantized reader
  const dynamic = new Map<string, { q: string; s: string; z: string; node: NodeProto; emitted: boolean }>();
  const quantizeActivation = (t: string) => {
    let d = dynamic.get(t);
    if (!d) {
      const [q, s, z] = [fresh(`${t}_quantized`), fresh(`${t}_scale`), fresh(`${t}_zero_point`)];
      d = { q, s, z, emitted: false, node: newNode({ op_type: 'DynamicQuantizeLinear', name: fresh(`${t}_DynamicQuantizeLinear`), input: [t], output: [q, s, z] }) };
      dynamic.set(t, d);
    }
    const nodes = d.emitted ? [] : [d.node];
    d.emitted = true;
    return { ...d, nodes };
  };

  const quantizeLinearLayer = (l: QuantLayer): string | undefined => {
    const n = l.node;
    const op = l.opType as 'MatMul' | 'Gemm' | 'Conv';
    // activation × activation (attention scores): ORT's MatMulConstBOnly leaves them float too
    if (!l.weight) return 'no constant weight (both inputs are computed)';
    const w = g.constantValue(l.weight)!;
    const wData = w.data as Float32Array;
    if (op === 'MatMul' && w.dims.length !== 2) return `weight of rank ${w.dims.length} (MatMulInteger takes a 2-D weight per column)`;
    if (op === 'Gemm' && n.input[0] !== l.activations[0]) return 'constant first input';
    let dims = w.dims;
    let data = wData;
    let axis = l.weightAxis!;
    if (op === 'Gemm' && attributeValue(n, 'transB') === 1) {
      // MatMulInteger reads [K, N]: store the transpose
      const [N, K] = dims;
      data = new Float32Array(N * K);
      for (let i = 0; i < N; i++) for (let k = 0; k < K; k++) data[k * N + i] = wData[i * K + k];
      dims = [K, N];
      axis = 1;
    }
    // ConvInteger takes one zero point for all channels: per-channel uint8 weights are symmetric (zero point 2^(bits−1))
    const symmetric = signed || (op === 'Conv' && perChannel);
    const q = quantizeWeight(data, dims, axis, { numBits, signed, symmetric, perChannel, narrowRange: false });
    const channels = dims[axis];
    const wq = addConst(`${l.weight}_quantized`, ELEM[weightType], dims, q.int8);
    const perCh = perChannel && op !== 'Conv';
    const wz = perCh ? addConst(`${l.weight}_zero_point`, ELEM[weightType], [channels], q.zeroPoint) : addConst(`${l.weight}_zero_point`, ELEM[weightType], [], [q.zeroPoint[0]]);
    const alpha = op === 'Gemm' ? ((attributeValue(n, 'alpha') as number | undefined) ?? 1) : 1;
    const scaleDims = op === 'Conv' ? [1, channels, ...dims.slice(2).map(() => 1)] : [channels];
    const wsValues = perChannel ? Array.from(q.scale, (s) => s * alpha) : [q.scale[0] * alpha];
    const ws = addConst(`${l.weight}_scale`, DataType.FLOAT, perChannel ? scaleDims : [], wsValues);
    const x = quantizeActivation(l.activations[0]);
    const [yi, yf, scale] = [fresh(`${n.output[0]}_int32`), fresh(`${n.output[0]}_float`), fresh(`${n.output[0]}_scale`)];
    const integer = op === 'Conv'
      ? newNode({ op_type: 'ConvInteger', name: fresh(`${n.name || n.output[0]}_quant`), input: [x.q, wq, x.z, wz], output: [yi], attribute: n.attribute.filter((a) => ['dilations', 'group', 'kernel_shape', 'pads', 'strides'].includes(a.name ?? '')) })
      : newNode({ op_type: 'MatMulInteger', name: fresh(`${n.name || n.output[0]}_quant`), input: [x.q, wq, x.z, wz], output: [yi] });
    const bias = op === 'Gemm' ? n.input[2] : op === 'Conv' ? n.input[2] : undefined;
    const scaled = bias ? fresh(`${n.output[0]}_scaled`) : n.output[0];
    const nodes = [
      ...x.nodes,
      integer,
      newNode({ op_type: 'Cast', name: fresh(`${yi}_Cast`), input: [yi], output: [yf], attribute: [makeAttribute('to', DataType.FLOAT)] }),
      newNode({ op_type: 'Mul', name: fresh(`${scale}_Mul`), input: [x.s, ws], output: [scale] }),
      newNode({ op_type: 'Mul', name: fresh(`${scaled}_Mul`), input: [yf, scale], output: [scaled] }),
    ];
    if (bias) {
      const b = g.constantValue(bias)!.data as Float32Array;
      const beta = op === 'Gemm' ? ((attributeValue(n, 'beta') as number | undefined) ?? 1) : 1;
      const bDims = op === 'Conv' ? scaleDims : g.constantValue(bias)!.dims;
      const bName = addConst(`${bias}_scaled`, DataType.FLOAT, bDims, Array.from(b, (v) => v * beta));
      nodes.push(newNode({ op_type: 'Add', name: fresh(`${n.output[0]}_Add`), input: [scaled, bName], output: [n.output[0]] }));
    }
    replacements.set(n, nodes);
    layers.push({ name: l.name, opType: op, weight: l.weight!, perChannel, symmetric });
    return undefined;
  };

  for (const l of selection.layers) {
    if (!(opTypes as string[]).includes(l.opType)) continue;
    if (exclude.includes(l.name)) { skipped.push({ name: l.name, opType: l.opType, reason: 'excluded' }); continue; }
    if (l.opType === 'Conv' || l.opType === 'MatMul' || l.opType === 'Gemm') {
      const why = quantizeLinearLayer(l);
      if (why) skipped.push({ name: l.name, opType: l.opType, reason: why });
    }
  }

  if ((opTypes as string[]).includes('Gather')) {
    const readers = new Map<string, number>();
    for (const n of g.proto.node) for (const i of n.input) readers.set(i, (readers.get(i) ?? 0) + 1);
    for (const n of g.nodes) {
      if (n.op_type !== 'Gather' || (n.domain ?? '') !== '') continue;
      const table = n.input[0];
      const name = n.name || n.output[0];
      if (exclude.includes(name)) { skipped.push({ name, opType: 'Gather', reason: 'excluded' }); continue; }
      if (!g.initializer(table)) continue; // Gathers of shapes and activations: nothing to store in 8 bits
      const t = g.constantValue(table)!;
      if (t.type !== DataType.FLOAT || t.dims.length < 2) continue;
      if ((readers.get(table) ?? 0) > 1 || g.outputNames.includes(table)) { skipped.push({ name, opType: 'Gather', reason: 'table shared with another node' }); continue; }
      const q = quantizeWeight(t.data as Float32Array, t.dims, 0, { numBits, signed, symmetric: signed, perChannel: false, narrowRange: false });
      const tq = addConst(`${table}_quantized`, ELEM[weightType], t.dims, q.int8);
      const ts = addConst(`${table}_scale`, DataType.FLOAT, [], [q.scale[0]]);
      const tz = addConst(`${table}_zero_point`, ELEM[weightType], [], [q.zeroPoint[0]]);
      const gathered = fresh(`${n.output[0]}_quantized`);
      replacements.set(n, [
        newNode({ op_type: 'Gather', name: fresh(`${name}_quant`), input: [tq, n.input[1]], output: [gathered], attribute: n.attribute }),
        newNode({ op_type: 'DequantizeLinear', name: fresh(`${n.output[0]}_DequantizeLinear`), input: [gathered, ts, tz], output: [n.output[0]] }),
      ]);
      layers.push({ name, opType: 'Gather', weight: table, perChannel: false, symmetric: signed });
    }
  }
  if (!layers.length) {
    throw new QuantbookError('UNSUPPORTED', `${weightType} weights: no layer can be quantized (op types ${opTypes.join(', ')}); ${skipped.length ? `kept float: ${skipped.slice(0, 5).map((s) => `"${s.name}" (${s.reason})`).join(', ')}` : 'the model has none with a constant float weight'}`);
  }
  g.proto.node = g.nodes.flatMap((n) => replacements.get(n) ?? [n]);
  g.invalidate();
  for (const t of initializers) g.addInitializer(t);
  removeUnusedConstants(g);
  // declared types of replaced outputs stay right (float32); nothing else changed type
  return { model: out, weightType, reduceRange, layers, skipped, smoothed };
}
