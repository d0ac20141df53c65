/**
 * Writes quantization into a float model as ONNX QDQ (opset 13): per-channel int8 weights and
 * int32 biases behind DequantizeLinear, and a QuantizeLinear → DequantizeLinear pair on every
 * activation a quantized layer reads or writes. ONNX Runtime recognises DQ → op → Q and runs
 * the integer kernel (QLinearConv, QLinearMatMul, ...).
 */
import { QuantbookError } from '../errors';
import { DataType } from '../onnx/dtype';
import { Graph, makeAttribute } from '../onnx/graph';
import { Model } from '../onnx/model';
import { newNode } from '../onnx/proto';
import { quantizeLinear } from '../kernels/quant';
import { QParams, QuantSpec, WEIGHT_SPEC, weightQParams } from '../observers';
import { removeUnusedConstants } from './fold-batchnorm';
import { QuantLayer } from './layers';

/** What each quantized layer became: the numbers the Ascend writers and reports need. */
export interface LayerRecord {
  name: string;
  opType: string;
  input?: { tensor: string; scale: number; zeroPoint: number; qmin: number; qmax: number };
  output?: { tensor: string; scale: number; zeroPoint: number };
  weight?: { tensor: string; dims: number[]; axis: number; int8: Int8Array; scale: Float32Array };
  bias?: { tensor: string; int32: Int32Array; scale: Float32Array };
}

/** Inserts Q → DQ after `tensor` (all readers move to the DQ output). Returns the DQ output. */
export function insertQdq(g: Graph, tensor: string, q: QParams): string {
  const scale = g.uniqueName(`${tensor}_scale`);
  const zp = g.uniqueName(`${tensor}_zero_point`);
  g.addInitializer({ name: scale, type: DataType.FLOAT, dims: [], data: Float32Array.of(q.scale[0]) });
  const zpType = q.signed ? DataType.INT8 : DataType.UINT8;
  g.addInitializer({ name: zp, type: zpType, dims: [], data: zpType === DataType.INT8 ? Int8Array.of(q.zeroPoint[0]) : Uint8Array.of(q.zeroPoint[0]) });
  const qn = g.insertNodeAfter(tensor, { opType: 'QuantizeLinear', extraInputs: [scale, zp], output: g.uniqueName(`${tensor}_quantized`) });
  const dq = g.insertNodeAfter(qn.output[0], { opType: 'DequantizeLinear', extraInputs: [scale, zp], output: g.uniqueName(`${tensor}_dequantized`) });
  return dq.output[0];
}

/** Adds an integer constant behind a per-channel DequantizeLinear; returns the float output name. */
function dequantizedConstant(g: Graph, base: string, type: DataType, dims: number[], data: Int8Array | Int32Array, scale: Float32Array, axis: number): string {
  const values = g.uniqueName(`${base}_quantized`);
  const s = g.uniqueName(`${base}_scale`);
  const z = g.uniqueName(`${base}_zero_point`);
  g.addInitializer({ name: values, type, dims, data });
  g.addInitializer({ name: s, type: DataType.FLOAT, dims: [scale.length], data: scale });
  g.addInitializer({ name: z, type, dims: [scale.length], data: type === DataType.INT8 ? new Int8Array(scale.length) : new Int32Array(scale.length) });
  const out = g.uniqueName(`${base}_dequantized`);
  g.proto.node.unshift(newNode({ op_type: 'DequantizeLinear', name: g.uniqueName(`${base}_DequantizeLinear`), input: [values, s, z], output: [out], attribute: [makeAttribute('axis', axis)] }));
  g.invalidate();
  return out;
}

export interface QdqOptions {
  /** per-tensor activation parameters, from calibration */
  activations: Map<string, QParams>;
  weightSpec?: Partial<QuantSpec>;
  /** false: weights only (dynamic quantization adds its own activation handling) */
  quantizeActivations?: boolean;
}

/** Quantizes `layers` of `model` (opset ≥ 13, in place). */
export function applyQdq(model: Model, layers: QuantLayer[], options: QdqOptions): LayerRecord[] {
  if ((model.opsetVersion('') ?? 0) < 13) throw new QuantbookError('UNSUPPORTED', 'QDQ with per-channel weights needs opset 13; call upgradeOpset(model, 13) first');
  const g = model.graph;
  const withActivations = options.quantizeActivations !== false;
  const outputs = new Set(withActivations ? quantizedOutputs(model, layers) : []);
  const act = (t: string) => {
    const q = options.activations.get(t);
    if (!q) throw new QuantbookError('UNKNOWN_TENSOR', `no activation quantization parameters for tensor "${t}"`);
    return q;
  };
  const records: LayerRecord[] = layers.map((layer) => {
    const rec: LayerRecord = { name: layer.name, opType: layer.opType };
    const a = layer.activations[0];
    if (a && withActivations) {
      const q = act(a);
      rec.input = { tensor: a, scale: q.scale[0], zeroPoint: q.zeroPoint[0], qmin: q.qmin, qmax: q.qmax };
    }
    if (outputs.has(layer.node.output[0])) {
      const q = act(layer.node.output[0]);
      rec.output = { tensor: layer.node.output[0], scale: q.scale[0], zeroPoint: q.zeroPoint[0] };
    }
    if (layer.weight) {
      const w = g.constantValue(layer.weight)!;
      const data = w.data as Float32Array;
      const axis = layer.weightAxis!;
      const wq = weightQParams(data, w.dims, { ...WEIGHT_SPEC, ...options.weightSpec, channelAxis: axis });
      const perChannel = wq.scale.length > 1;
      const ints = quantizeLinear(data, wq.scale, wq.zeroPoint, wq, w.dims, axis);
      const int8 = Int8Array.from(ints);
      const scale = perChannel ? wq.scale : new Float32Array(w.dims[axis]).fill(wq.scale[0]);
      rec.weight = { tensor: layer.weight, dims: w.dims, axis, int8, scale };
      const out = dequantizedConstant(g, `${layer.name}.weight`, DataType.INT8, w.dims, int8, scale, axis);
      layer.node.input[layer.node.input.indexOf(layer.weight)] = out;
      if (layer.bias && rec.input) {
        const b = g.constantValue(layer.bias)!.data as Float32Array;
        const bScale = Float32Array.from(scale, (s) => Math.fround(s * rec.input!.scale));
        const int32 = Int32Array.from(b, (v, c) => Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.round(v / bScale[c]))));
        rec.bias = { tensor: layer.bias, int32, scale: bScale };
        layer.node.input[2] = dequantizedConstant(g, `${layer.name}.bias`, DataType.INT32, [b.length], int32, bScale, 0);
      }
    }
    return rec;
  });
  // one Q → DQ pair per activation tensor, however many layers read or write it
  if (withActivations) for (const t of activationTensors(model, layers)) insertQdq(g, t, act(t));
  removeUnusedConstants(g);
  return records;
}

/**
 * Layer outputs worth quantizing: those from which another quantized layer can be reached.
 * ORT needs DQ → op → Q to run an integer kernel, so these get a Q; an output that only feeds
 * float ops to the end (a classifier head) stays float, keeping its precision where the
 * decision is made (ORT still runs MatMul heads as MatMulIntegerToFloat).
 */
export function quantizedOutputs(model: Model, layers: QuantLayer[]): string[] {
  const g = model.graph;
  const quantized = new Set(layers.map((l) => l.node));
  const reaches = new Map<string, boolean>();
  const leadsToQuantized = (tensor: string): boolean => {
    const known = reaches.get(tensor);
    if (known !== undefined) return known;
    reaches.set(tensor, false); // guards against revisiting while the walk is in progress
    const result = g.consumers(tensor).some((n) => quantized.has(n) || n.output.some((o) => o && leadsToQuantized(o)));
    reaches.set(tensor, result);
    return result;
  };
  return layers.map((l) => l.node.output[0]).filter(leadsToQuantized);
}

/** Activation tensors a set of layers needs parameters for: their inputs and quantized outputs. */
export function activationTensors(model: Model, layers: QuantLayer[]): string[] {
  const out = new Set<string>();
  for (const l of layers) l.activations.forEach((t) => out.add(t));
  for (const t of quantizedOutputs(model, layers)) out.add(t);
  return [...out];
}
