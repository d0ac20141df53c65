/**
 * AMCT's saved artefacts, from per-layer parameters (activation scale_d/offset_d, int8 weights
 * with per-channel scale_w, int32 bias):
 *  - fake-quant model (runs on ONNX Runtime): x → Mul(1/s_d) → Round → Add(o_d) → Clip(−128, 127)
 *    → Sub(o_d) → layer with integer-valued float weights and bias → Mul(deq_scale)
 *  - deploy model (for ATC): AscendQuant{scale = 1/s_d, offset = o_d, dst_type INT8} → layer with
 *    int8 weights and int32 bias → AscendDequant(x, deq_scale UINT64[C]), deq_scale holding the
 *    float32 bits of s_w[c]·s_d in its low 32 bits. The offset is the Conv's offset_x on Ascend,
 *    so the int32 bias is round(b / (s_w·s_d)) with no offset correction.
 *  - record file (protobuf text format): per layer scale_d, offset_d, scale_w[], offset_w[].
 */
import { DataType } from '../onnx/dtype';
import { Graph, makeAttribute } from '../onnx/graph';
import { Model } from '../onnx/model';
import { AttributeType, NodeProto, newAttribute, newNode } from '../onnx/proto';
import { removeUnusedConstants } from '../quantize/fold-batchnorm';
import { upgradeOpset } from '../onnx/opset-upgrade';
import { formatTextFormat, parseTextFormat, TextMessage } from '../util/prototxt';
import { QuantbookError } from '../errors';
import { packDeqScale } from './msmodelslim';

export interface AmctLayerParams {
  name: string;
  opType: string;
  /** the activation input quantized by AscendQuant */
  input: string;
  scaleD: number;
  offsetD: number;
  weight?: { tensor: string; dims: number[]; axis: number; int8: Int8Array; scale: Float32Array };
  bias?: { tensor: string; int32: Int32Array };
}

const QMIN = -128;
const QMAX = 127;

/** s_w[c]·s_d per output channel (pooling: s_d alone). */
export function deqScales(p: AmctLayerParams): Float32Array {
  return p.weight ? Float32Array.from(p.weight.scale, (s) => Math.fround(s * p.scaleD)) : Float32Array.of(p.scaleD);
}

/** Shape that broadcasts a per-channel vector over the layer's output. */
function channelShape(p: AmctLayerParams, channels: number): number[] {
  if (!p.weight) return [channels];
  if (p.opType === 'Conv' || p.opType === 'ConvTranspose') return [channels, ...new Array(p.weight.dims.length - 2).fill(1)];
  return [channels];
}

function layerNode(g: Graph, p: AmctLayerParams): NodeProto {
  const node = g.node(p.name) ?? g.proto.node.find((n) => !n.name && n.output[0] === p.name);
  if (!node) throw new QuantbookError('UNKNOWN_TENSOR', `AMCT export: layer "${p.name}" is not in the model`);
  return node;
}

/**
 * A copy of `float` with `rewrite` applied to each layer's node; `name(k)` gives fresh tensor
 * names prefixed by the layer; `opset` upgrades the copy first. Constants nothing reads any
 * more are dropped afterwards.
 */
function rewriteEachLayer(float: Model, layers: AmctLayerParams[], rewrite: (g: Graph, node: NodeProto, p: AmctLayerParams, name: (k: string) => string) => void, options: { opset?: number } = {}): Model {
  const model = float.clone();
  if (options.opset) upgradeOpset(model, options.opset);
  const g = model.graph;
  for (const p of layers) rewrite(g, layerNode(g, p), p, (k) => g.uniqueName(`${p.name}_${k}`));
  g.invalidate();
  removeUnusedConstants(g);
  return model;
}

/** Inserts `before` ahead of the layer node and `after` behind it, keeping topological order. */
function splice(g: Graph, node: NodeProto, before: NodeProto[], after: NodeProto[]): void {
  const i = g.proto.node.indexOf(node);
  g.proto.node.splice(i + 1, 0, ...after);
  g.proto.node.splice(i, 0, ...before);
}

/** Points the layer at new weight/bias initializers of the given type; renames its output to `<y>_int`. */
function rewireLayer(g: Graph, node: NodeProto, p: AmctLayerParams, weightType: DataType.FLOAT | DataType.INT8, biasType: DataType.FLOAT | DataType.INT32): { yInt: string; y: string } {
  if (p.weight) {
    const data = weightType === DataType.INT8 ? p.weight.int8 : Float32Array.from(p.weight.int8);
    const w = g.addInitializer({ name: g.uniqueName(`${p.weight.tensor}_int8`), type: weightType, dims: p.weight.dims, data });
    node.input[node.input.indexOf(p.weight.tensor)] = w.name!;
  }
  if (p.bias) {
    const data = biasType === DataType.INT32 ? p.bias.int32 : Float32Array.from(p.bias.int32);
    const b = g.addInitializer({ name: g.uniqueName(`${p.bias.tensor}_int32`), type: biasType, dims: [p.bias.int32.length], data });
    node.input[node.input.indexOf(p.bias.tensor)] = b.name!;
  }
  const y = node.output[0];
  const yInt = g.uniqueName(`${y}_int`);
  node.output[0] = yInt;
  return { yInt, y };
}

/** The fake-quant model (float ops only; ONNX Runtime runs it). */
export function amctFakeQuantModel(float: Model, layers: AmctLayerParams[]): Model {
  return rewriteEachLayer(float, layers, (g, node, p, name) => {
    const scalar = (k: string, v: number) => g.addInitializer({ name: name(k), type: DataType.FLOAT, dims: [], data: Float32Array.of(v) }).name!;
    const [inv, off, lo, hi] = [scalar('inv_scale_d', Math.fround(1 / p.scaleD)), scalar('offset_d', p.offsetD), scalar('qmin', QMIN), scalar('qmax', QMAX)];
    const [scaled, rounded, shifted, clipped, xInt] = ['scaled', 'rounded', 'shifted', 'clipped', 'x_int'].map(name);
    const before = [
      newNode({ op_type: 'Mul', name: `${scaled}_Mul`, input: [p.input, inv], output: [scaled] }),
      newNode({ op_type: 'Round', name: `${rounded}_Round`, input: [scaled], output: [rounded] }),
      newNode({ op_type: 'Add', name: `${shifted}_Add`, input: [rounded, off], output: [shifted] }),
      newNode({ op_type: 'Clip', name: `${clipped}_Clip`, input: [shifted, lo, hi], output: [clipped] }),
      newNode({ op_type: 'Sub', name: `${xInt}_Sub`, input: [clipped, off], output: [xInt] }),
    ];
    node.input[node.input.indexOf(p.input)] = xInt;
    const { yInt, y } = rewireLayer(g, node, p, DataType.FLOAT, DataType.FLOAT);
    const deq = deqScales(p);
    const d = g.addInitializer({ name: name('deq_scale'), type: DataType.FLOAT, dims: channelShape(p, deq.length), data: deq });
    splice(g, node, before, [newNode({ op_type: 'Mul', name: name('dequant_Mul'), input: [yInt, d.name!], output: [y] })]);
  });
}

/**
 * The same quantization in ONNX's standard QDQ form (opset 13): a private QuantizeLinear →
 * DequantizeLinear pair per layer input (int8, zero point o_d) and per-channel dequantized int8
 * weights and int32 bias. Equal to the fake-quant model up to float rounding; ORT fuses it.
 */
export function amctQdqModel(float: Model, layers: AmctLayerParams[]): Model {
  return rewriteEachLayer(float, layers, (g, node, p, name) => {
    const init = (k: string, type: DataType, dims: number[], data: Float32Array | Int8Array | Int32Array) => g.addInitializer({ name: name(k), type, dims, data }).name!;
    const [s, z] = [init('scale_d', DataType.FLOAT, [], Float32Array.of(p.scaleD)), init('offset_d', DataType.INT8, [], Int8Array.of(p.offsetD))];
    const [xq, xdq] = [name('quantized'), name('dequantized')];
    const before = [
      newNode({ op_type: 'QuantizeLinear', name: `${xq}_QuantizeLinear`, input: [p.input, s, z], output: [xq] }),
      newNode({ op_type: 'DequantizeLinear', name: `${xdq}_DequantizeLinear`, input: [xq, s, z], output: [xdq] }),
    ];
    node.input[node.input.indexOf(p.input)] = xdq;
    if (p.weight) {
      const { tensor, dims, axis, int8, scale } = p.weight;
      const c = scale.length;
      const w = name('weight_dequantized');
      before.push(newNode({ op_type: 'DequantizeLinear', name: `${w}_DequantizeLinear`, input: [init('weight_int8', DataType.INT8, dims, int8), init('weight_scale', DataType.FLOAT, [c], scale), init('weight_zero_point', DataType.INT8, [c], new Int8Array(c))], output: [w], attribute: [makeAttribute('axis', axis)] }));
      node.input[node.input.indexOf(tensor)] = w;
      if (p.bias) {
        const b = name('bias_dequantized');
        before.push(newNode({ op_type: 'DequantizeLinear', name: `${b}_DequantizeLinear`, input: [init('bias_int32', DataType.INT32, [c], p.bias.int32), init('bias_scale', DataType.FLOAT, [c], deqScales(p)), init('bias_zero_point', DataType.INT32, [c], new Int32Array(c))], output: [b], attribute: [makeAttribute('axis', 0)] }));
        node.input[node.input.indexOf(p.bias.tensor)] = b;
      }
    }
    splice(g, node, before, []);
  }, { opset: 13 });
}

/** AscendQuant reads scale and offset as FLOAT attributes, whole numbers included. */
function floatAttribute(name: string, f: number) {
  return newAttribute({ name, type: AttributeType.FLOAT, f });
}

/** The deploy model: AscendQuant / AscendDequant around int8 layers (for ATC, not ONNX Runtime). */
export function amctDeployModel(float: Model, layers: AmctLayerParams[]): Model {
  return rewriteEachLayer(float, layers, (g, node, p, name) => {
    const xq = name('quant');
    const quant = newNode({
      op_type: 'AscendQuant', name: name('AscendQuant'), input: [p.input], output: [xq],
      attribute: [floatAttribute('scale', Math.fround(1 / p.scaleD)), floatAttribute('offset', p.offsetD), makeAttribute('sqrt_mode', 0), makeAttribute('round_mode', 'Round'), makeAttribute('dst_type', 'INT8')],
    });
    node.input[node.input.indexOf(p.input)] = xq;
    const { yInt, y } = rewireLayer(g, node, p, DataType.INT8, DataType.INT32);
    const deq = deqScales(p);
    const d = g.addInitializer({ name: name('deq_scale'), type: DataType.UINT64, dims: [deq.length], data: new BigUint64Array(packDeqScale(deq).buffer) });
    const dequant = newNode({ op_type: 'AscendDequant', name: name('AscendDequant'), input: [yInt, d.name!], output: [y], attribute: [makeAttribute('dtype', 0), makeAttribute('sqrt_mode', 0), makeAttribute('relu_flag', 0)] });
    splice(g, node, [quant], [dequant]);
  });
}

/** AMCT's record file: one `record { key value { scale_d offset_d scale_w… offset_w… } }` per layer. */
export function formatRecord(layers: AmctLayerParams[]): string {
  return formatTextFormat({
    record: layers.map((p) => ({
      key: p.name,
      value: {
        scale_d: p.scaleD,
        offset_d: p.offsetD,
        ...(p.weight ? { scale_w: Array.from(p.weight.scale), offset_w: new Array(p.weight.scale.length).fill(0) } : {}),
      },
    })),
  });
}

export interface RecordEntry { scaleD: number; offsetD: number; scaleW: number[]; offsetW: number[] }

export function parseRecord(text: string, where = 'record file'): Map<string, RecordEntry> {
  const msg = parseTextFormat(text, where);
  const records = msg.record === undefined ? [] : Array.isArray(msg.record) ? msg.record : [msg.record];
  const out = new Map<string, RecordEntry>();
  for (const r of records as TextMessage[]) {
    const v = r.value as TextMessage;
    const arr = (x: unknown) => (x === undefined ? [] : Array.isArray(x) ? x.map(Number) : [Number(x)]);
    out.set(String(r.key), { scaleD: Number(v.scale_d), offsetD: Number(v.offset_d), scaleW: arr(v.scale_w), offsetW: arr(v.offset_w) });
  }
  return out;
}
