/**
 * Writes quantization into a float model as ONNX QDQ (opset 13): per-channel int8 weights and
 * int32 biases behind DequantizeLinear, and a QuantizeLinear → DequantizeLinear pair on every
 * activation a quantized layer reads or writes. ONNX Runtime recognises DQ → op → Q and runs
 * the integer kernel (QLinearConv, QLinearMatMul, ...).
 */
import { QuantbookError, invalidArgument } from '../errors';
import { DataType } from '../onnx/dtype';
import { Graph, NameSource, makeAttribute, renameReads } from '../onnx/graph';
import { isExternal, makeTensor, readTensor } from '../onnx/tensor';
import { NodeProto, TensorProto, newNode } from '../onnx/proto';
import { TensorSpill } from '../onnx/spill';
import { Model } from '../onnx/model';
import { quantizeLinear } from '../kernels/quant';
import { QParams, QuantSpec, WEIGHT_SPEC, quantRange, resolveSpec, weightQParams } from '../observers';
import { removeUnusedConstants } from './fold-batchnorm';
import { QuantLayer, layerGraph, layerTensorKey } from './layers';
import { definingGraph } from '../onnx/scopes';
import { RaisedChannel, settleWeightScales } from './int32-bias';

/** What each quantized layer became: the numbers the Ascend writers and reports need. */
export interface LayerRecord {
  name: string;
  opType: string;
  input?: { tensor: string; scale: number; zeroPoint: number; qmin: number; qmax: number };
  output?: { tensor: string; scale: number; zeroPoint: number };
  /** `int8` holds the weight grid's integers: Int8Array when signed, Uint8Array when unsigned (w_signed false); zeroPoint only where non-zero */
  weight?: { tensor: string; dims: number[]; axis: number; int8: Int8Array | Uint8Array; scale: Float32Array; zeroPoint?: Int32Array };
  bias?: { tensor: string; int32: Int32Array; scale: Float32Array };
  /** weight channels whose scale was raised (dead channels, biases that would leave int32) */
  raisedScales?: RaisedChannel[];
}

/**
 * Inserts Q → DQ after each tensor (every reader moves to the DQ output; graph outputs keep the
 * float tensor). One pass: readers are found once, names come from one NameSource, and the node
 * list is rebuilt once, so quantizing hundreds of tensors stays linear in the graph size.
 */
export function insertQdqPairs(g: Graph, items: Array<[string, QParams]>): Map<string, string> {
  for (const [t] of items) g.requireTensor(t, 'quantized tensor');
  const names = g.nameSource();
  const plan = items.map(([t, q]) => ({ t, q, readers: g.consumers(t), producer: g.producer(t) }));
  const after = new Map<NodeProto | undefined, NodeProto[]>();
  const outputs = new Map<string, string>();
  for (const { t, q, readers, producer } of plan) {
    const scale = names.fresh(`${t}_scale`);
    const zp = names.fresh(`${t}_zero_point`);
    const zpType = q.signed ? DataType.INT8 : DataType.UINT8;
    // per-axis parameters (e.g. one scale per attention head) are 1-D with an axis attribute
    const perAxis = q.axis !== undefined && q.scale.length > 1;
    const dims = perAxis ? [q.scale.length] : [];
    const n = perAxis ? q.scale.length : 1;
    g.proto.initializer.push(
      makeTensor(scale, DataType.FLOAT, dims, q.scale.slice(0, n)),
      makeTensor(zp, zpType, dims, zpType === DataType.INT8 ? Int8Array.from(q.zeroPoint.slice(0, n)) : Uint8Array.from(q.zeroPoint.slice(0, n))),
    );
    const axis = perAxis ? [makeAttribute('axis', q.axis!)] : [];
    const quantized = names.fresh(`${t}_quantized`);
    const dequantized = names.fresh(`${t}_dequantized`);
    outputs.set(t, dequantized);
    for (const r of readers) renameReads(r, t, dequantized);
    const list = after.get(producer) ?? [];
    list.push(
      newNode({ op_type: 'QuantizeLinear', name: names.fresh(`${t}_QuantizeLinear`), input: [t, scale, zp], output: [quantized], attribute: axis }),
      newNode({ op_type: 'DequantizeLinear', name: names.fresh(`${t}_DequantizeLinear`), input: [quantized, scale, zp], output: [dequantized], attribute: axis }),
    );
    after.set(producer, list);
  }
  g.proto.node = [...(after.get(undefined) ?? []), ...g.proto.node.flatMap((n) => [n, ...(after.get(n) ?? [])])];
  g.invalidate();
  return outputs;
}

/** Q → DQ after one tensor; returns the DQ output. */
export function insertQdq(g: Graph, tensor: string, q: QParams): string {
  return insertQdqPairs(g, [[tensor, q]]).get(tensor)!;
}

/**
 * Adds an integer constant behind a DequantizeLinear; returns the float output name. Per-channel
 * (`axis` given) writes 1-D scale/zero point; per-tensor writes scalars (what opsets 10–12 allow).
 * The caller invalidates.
 */
function dequantizedConstant(g: Graph, names: NameSource, base: string, type: DataType, dims: number[], data: Int8Array | Uint8Array | Int32Array, scale: Float32Array, axis: number | undefined, zeroPoint?: Int32Array, spill?: TensorSpill): { output: string; values: TensorProto } {
  const values = names.fresh(`${base}_quantized`);
  const s = names.fresh(`${base}_scale`);
  const z = names.fresh(`${base}_zero_point`);
  const n = axis === undefined ? 1 : scale.length;
  const qdims = axis === undefined ? [] : [n];
  const zp = zeroPoint ? zeroPoint.slice(0, n) : new Int32Array(n);
  const stored = makeTensor(values, type, dims, data);
  const kept = spill ? spill.put(stored) : stored;
  g.proto.initializer.push(
    kept,
    makeTensor(s, DataType.FLOAT, qdims, scale.slice(0, n)),
    makeTensor(z, type, qdims, type === DataType.INT8 ? Int8Array.from(zp) : type === DataType.UINT8 ? Uint8Array.from(zp) : zp),
  );
  const out = names.fresh(`${base}_dequantized`);
  g.proto.node.unshift(newNode({ op_type: 'DequantizeLinear', name: names.fresh(`${base}_DequantizeLinear`), input: [values, s, z], output: [out], attribute: axis === undefined ? [] : [makeAttribute('axis', axis)] }));
  return { output: out, values: kept };
}

/**
 * A spilled weight's record reads its integers back when asked instead of holding them. (Made
 * here, not inside applyQdq: a closure there would keep that scope's arrays alive.)
 */
function readBackWhenAsked(weight: NonNullable<LayerRecord['weight']>, spilled: TensorProto): void {
  Object.defineProperty(weight, 'int8', { enumerable: true, get: () => readTensor(spilled).data as Int8Array | Uint8Array });
}

/** One value per channel: `v` itself when it already has one per channel, else its single value repeated. */
export function perChannel<T extends Float32Array | Int32Array>(v: T, channels: number): T {
  if (v.length > 1) return v;
  const out = (v instanceof Float32Array ? new Float32Array(channels) : new Int32Array(channels)) as T;
  return out.fill(v[0]) as T;
}

/** Integers of an 8-bit (or narrower) grid in the type that holds them without wrapping: int8 when signed, uint8 when not. */
export function gridIntegers(values: ArrayLike<number>, signed: boolean): Int8Array | Uint8Array {
  return signed ? Int8Array.from(values) : Uint8Array.from(values);
}

/**
 * 8-bit weights along the output-channel `axis` (int8 or, for an unsigned spec, uint8); `scale`
 * (and `zeroPoint`: 0 for signed symmetric, the grid middle for unsigned symmetric, fitted when
 * asymmetric) have one entry per channel even when per-tensor.
 */
export function quantizeWeight(data: Float32Array, dims: number[], axis: number, spec: Partial<QuantSpec> = {}): { int8: Int8Array | Uint8Array; scale: Float32Array; zeroPoint: Int32Array } {
  const q = weightQParams(data, dims, { ...WEIGHT_SPEC, ...spec, channelAxis: axis });
  if (q.numBits > 8) throw invalidArgument('weight numBits', q.numBits, 'at most 8 (weights are stored as int8/uint8)');
  // straight into the 8-bit array (no Int32Array as large as the float weight)
  const int8 = quantizeLinear(data, q.scale, q.zeroPoint, q, dims, axis, q.signed ? new Int8Array(data.length) : new Uint8Array(data.length));
  return { int8, scale: perChannel(q.scale, dims[axis]), zeroPoint: perChannel(q.zeroPoint, dims[axis]) };
}

/**
 * Int32 bias on the accumulator's grid (`scale[c]` = s_w[c]·s_x), rounded; saturation is only a
 * guard: settleWeightScales chooses weight scales for which every bias fits.
 */
export function quantizeBias(bias: Float32Array, scale: Float32Array): Int32Array {
  return Int32Array.from(bias, (v, c) => Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.round(v / scale[c]))));
}

export interface QdqOptions {
  /** per-tensor activation parameters, from calibration */
  activations: Map<string, QParams>;
  weightSpec?: Partial<QuantSpec>;
  /** false: weights only (dynamic quantization adds its own activation handling) */
  quantizeActivations?: boolean;
  /** the activation tensors to quantize (default: activationTensors(model, layers)) */
  tensors?: string[];
  /** integer weights chosen by an algorithm (AdaRound) instead of round-to-nearest, by layer name; on the weightSpec grid */
  weightValues?: Map<string, Int32Array>;
  /** weight scales chosen by an algorithm (ADMM, EasyQuant) instead of min/max, by layer name (one per channel, or one) */
  weightScales?: Map<string, Float32Array>;
  /**
   * Where the integer weights go as they are made (a model held by reference, larger than
   * memory): the QDQ model refers to them, and each record's `weight.int8` reads them back when
   * asked, so neither holds them all at once.
   */
  spill?: TensorSpill;
}

/**
 * Quantizes `layers` of `model` in place (opset ≥ 13; ≥ 10 with per-tensor weights). Layers
 * inside If/Loop/Scan bodies get their QDQ in their own body; `activations` is keyed by the
 * tensors' scoped names (layerTensorKey).
 */
export function applyQdq(model: Model, layers: QuantLayer[], options: QdqOptions): LayerRecord[] {
  const perTensor = options.weightSpec?.perChannel === false;
  if ((model.opsetVersion('') ?? 0) < (perTensor ? 10 : 13)) {
    throw new QuantbookError('UNSUPPORTED', perTensor ? 'QDQ needs opset 10; call upgradeOpset(model, 13) first' : 'QDQ with per-channel weights needs opset 13; call upgradeOpset(model, 13) first');
  }
  const withActivations = options.quantizeActivations !== false;
  const chosen = options.tensors && new Set(options.tensors);
  const outputKeys = new Set(!withActivations ? [] : chosen ? layers.map((l) => layerTensorKey(l, l.node.output[0])).filter((t) => chosen.has(t)) : quantizedOutputs(model, layers));
  const act = (t: string) => {
    const q = options.activations.get(t);
    if (!q) throw new QuantbookError('UNKNOWN_TENSOR', `no activation quantization parameters for tensor "${t}"`);
    return q;
  };
  const names = model.graph.nameSource();
  const touched = new Set<Graph>([model.graph]);
  const records: LayerRecord[] = layers.map((layer) => {
    const g = layerGraph(model, layer);
    touched.add(g);
    const key = (t: string) => layerTensorKey(layer, t);
    const rec: LayerRecord = { name: layer.name, opType: layer.opType };
    const a = layer.activations[0];
    if (a && withActivations) {
      const q = act(key(a));
      rec.input = { tensor: key(a), scale: q.scale[0], zeroPoint: q.zeroPoint[0], qmin: q.qmin, qmax: q.qmax };
    }
    const out = key(layer.node.output[0]);
    if (outputKeys.has(out)) {
      const q = act(out);
      rec.output = { tensor: out, scale: q.scale[0], zeroPoint: q.zeroPoint[0] };
    }
    if (layer.weight) {
      // the weight may be an outer-scope constant: its integer copy lives beside the layer
      const w = definingGraph(g, layer.weight)!.constantValue(layer.weight)!;
      const data = w.data as Float32Array;
      const axis = layer.weightAxis!;
      const spec = resolveSpec({ ...WEIGHT_SPEC, ...options.weightSpec }, WEIGHT_SPEC);
      const range = quantRange(spec);
      let { int8, scale, zeroPoint } = quantizeWeight(data, w.dims, axis, options.weightSpec);
      const customScale = options.weightScales?.get(layer.name);
      if (customScale) {
        int8 = gridIntegers(quantizeLinear(data, customScale, zeroPoint.subarray(0, customScale.length), range, w.dims, customScale.length > 1 ? axis : 1), spec.signed);
        scale = perChannel(Float32Array.from(customScale), w.dims[axis]);
      }
      const chosenValues = options.weightValues?.get(layer.name);
      if (chosenValues) {
        if (chosenValues.length !== int8.length) throw new QuantbookError('INVALID_ARGUMENT', `weightValues for layer "${layer.name}": ${chosenValues.length} values for a weight of ${int8.length}`);
        int8.set(chosenValues);
      }
      const bias = layer.bias && rec.input ? definingGraph(g, layer.bias)!.constantValue(layer.bias)!.data as Float32Array : undefined;
      // dead channels and large biases: raise those channels' scales so the int32 bias stays exact
      const raised = settleWeightScales({ data, dims: w.dims, axis }, { int8, scale, zeroPoint }, { ...range, symmetric: spec.symmetric }, { bias, inputScale: rec.input?.scale, perTensor });
      if (raised.length) rec.raisedScales = raised;
      rec.weight = { tensor: key(layer.weight), dims: w.dims, axis, int8, scale, ...(zeroPoint.some(Boolean) ? { zeroPoint } : {}) };
      const wType = spec.signed ? DataType.INT8 : DataType.UINT8;
      const wOut = dequantizedConstant(g, names, `${layer.name}.weight`, wType, w.dims, int8, scale, perTensor ? undefined : axis, zeroPoint, options.spill);
      if (isExternal(wOut.values)) readBackWhenAsked(rec.weight, wOut.values);
      layer.node.input[layer.node.input.indexOf(layer.weight)] = wOut.output;
      if (bias && rec.input) {
        const bScale = Float32Array.from(scale, (s) => Math.fround(s * rec.input!.scale));
        const int32 = quantizeBias(bias, bScale);
        rec.bias = { tensor: key(layer.bias!), int32, scale: bScale };
        layer.node.input[2] = dequantizedConstant(g, names, `${layer.name}.bias`, DataType.INT32, [bias.length], int32, bScale, perTensor ? undefined : 0).output;
      }
    }
    return rec;
  });
  for (const g of touched) g.invalidate(); // the layers' own body graphs are used below
  // one Q → DQ pair per activation tensor, however many layers read or write it
  if (withActivations) {
    const keys = options.tensors ?? activationTensors(model, layers);
    for (const [g, items] of byGraph(model, layers, keys)) insertQdqPairs(g, items.map((t) => [t.tensor, act(t.key)]));
  }
  for (const g of touched) removeUnusedConstants(g); // the main graph among them
  return records;
}

/**
 * Groups scoped tensor keys by the graph that defines them (a key no layer's scope explains is
 * a main-graph tensor), with each tensor's bare name in that graph.
 */
export function byGraph(model: Model, layers: QuantLayer[], keys: string[]): Map<Graph, Array<{ key: string; tensor: string }>> {
  const owners = new Map<string, { graph: Graph; tensor: string }>();
  for (const l of layers) {
    const g = layerGraph(model, l);
    for (const t of [...l.activations, l.node.output[0]]) owners.set(layerTensorKey(l, t), { graph: definingGraph(g, t) ?? g, tensor: t });
  }
  const out = new Map<Graph, Array<{ key: string; tensor: string }>>();
  for (const key of keys) {
    const o = owners.get(key) ?? { graph: model.graph, tensor: key };
    const list = out.get(o.graph) ?? [];
    list.push({ key, tensor: o.tensor });
    out.set(o.graph, list);
  }
  return out;
}

/** Ops whose output error grows without bound as their input nears 0. */
const SMALL_VALUE_AMPLIFIERS = ['Log', 'Reciprocal'];

/**
 * Layer outputs worth quantizing: those from which another quantized layer can be reached
 * (not through Log or Reciprocal).
 * ORT needs DQ → op → Q to run an integer kernel, so these get a Q; an output that only feeds
 * float ops to the end (a classifier head) stays float, keeping its precision where the
 * decision is made (ORT still runs MatMul heads as MatMulIntegerToFloat).
 */
export function quantizedOutputs(model: Model, layers: QuantLayer[]): string[] {
  const quantized = new Set(layers.map((l) => l.node));
  // walks stay inside the layer's own graph (a body output that feeds a layer outside is not followed)
  const reaches = new Map<Graph, Map<string, boolean>>();
  const leadsToQuantized = (g: Graph, tensor: string): boolean => {
    const memo = reaches.get(g) ?? new Map<string, boolean>();
    reaches.set(g, memo);
    const known = memo.get(tensor);
    if (known !== undefined) return known;
    memo.set(tensor, false); // guards against revisiting while the walk is in progress
    // a path through Log or Reciprocal does not count: requantizing before them would turn the
    // rounding of small values into unbounded error (a log-magnitude spectrogram after an STFT Conv)
    const result = g.consumers(tensor).some((n) => quantized.has(n) || (!SMALL_VALUE_AMPLIFIERS.includes(n.op_type ?? '') && n.output.some((o) => o && leadsToQuantized(g, o))));
    memo.set(tensor, result);
    return result;
  };
  return layers.filter((l) => leadsToQuantized(layerGraph(model, l), l.node.output[0])).map((l) => layerTensorKey(l, l.node.output[0]));
}

/** Activation tensors a set of layers needs parameters for: their inputs and quantized outputs. */
export function activationTensors(model: Model, layers: QuantLayer[]): string[] {
  const out = new Set<string>();
  for (const l of layers) l.activations.forEach((t) => out.add(layerTensorKey(l, t)));
  for (const t of quantizedOutputs(model, layers)) out.add(t);
  return [...out];
}
