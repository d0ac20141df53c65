/**
 * The fake-quant (simulated) float model derived from a QDQ model: constant integer tensors
 * behind DequantizeLinear become their dequantized float values, and each activation
 * Q → DQ pair becomes Div → Round → Add → Clip → Sub → Mul on floats. It computes what the
 * quantized model means with float ops only, so any runtime can run it.
 */
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { newNode } from '../onnx/proto';
import { dequantizeLinear } from '../kernels/quant';
import { removeUnusedConstants } from './fold-batchnorm';

export function toFakeQuant(qdq: Model): Model {
  const model = qdq.clone();
  const g = model.graph;
  for (const dq of [...g.nodes]) {
    if (dq.op_type !== 'DequantizeLinear') continue;
    const [x, s, z] = dq.input;
    // run-time scales (DynamicQuantizeLinear) are already float computations: leave them
    if (!g.isConstant(s)) continue;
    const scale = g.constantValue(s)!.data as Float32Array;
    const zp = z ? Int32Array.from(g.constantValue(z)!.data as ArrayLike<number>) : new Int32Array(scale.length);
    const value = g.constantValue(x);
    if (value) {
      // a quantized constant: store its dequantized values
      const axis = (attributeValue(dq, 'axis') as number | undefined) ?? 1;
      const f = dequantizeLinear(Int32Array.from(value.data as ArrayLike<number>), Float32Array.from(scale), zp, value.dims, scale.length > 1 ? axis : 1);
      g.replaceNodeWithConstant(dq, { type: DataType.FLOAT, dims: value.dims, data: f });
      continue;
    }
    const q = g.producer(x);
    if (q?.op_type !== 'QuantizeLinear') continue;
    replacePair(g, q.input[0], q.output[0], dq.output[0], scale[0], zp[0], signedRange(g, z));
  }
  removeUnusedConstants(g);
  return model;
}

function signedRange(g: Graph, zpName: string): [number, number] {
  return g.constantValue(zpName)!.type === DataType.INT8 ? [-128, 127] : [0, 255];
}

/** x → (Q → DQ) → y   becomes   y = (Clip(Round(x / s) + z, qmin, qmax) − z) · s */
function replacePair(g: Graph, x: string, qOut: string, y: string, scale: number, zp: number, [qmin, qmax]: [number, number]): void {
  const c = (base: string, v: number) => g.addInitializer({ name: g.uniqueName(`${y}_${base}`), type: DataType.FLOAT, dims: [], data: Float32Array.of(v) }).name!;
  const s = c('scale', scale);
  const z = c('zero_point', zp);
  const lo = c('qmin', qmin);
  const hi = c('qmax', qmax);
  const t = (k: string) => g.uniqueName(`${y}_${k}`);
  const [div, round, add, clip, sub] = ['div', 'round', 'add', 'clip', 'sub'].map(t);
  const nodes = [
    newNode({ op_type: 'Div', name: `${div}_node`, input: [x, s], output: [div] }),
    newNode({ op_type: 'Round', name: `${round}_node`, input: [div], output: [round] }),
    newNode({ op_type: 'Add', name: `${add}_node`, input: [round, z], output: [add] }),
    newNode({ op_type: 'Clip', name: `${clip}_node`, input: [add, lo, hi], output: [clip] }),
    newNode({ op_type: 'Sub', name: `${sub}_node`, input: [clip, z], output: [sub] }),
    newNode({ op_type: 'Mul', name: `${y}_fakequant`, input: [sub, s], output: [y] }),
  ];
  const qNode = g.producer(qOut)!;
  const dqNode = g.producer(y)!;
  const at = g.proto.node.indexOf(qNode);
  g.proto.node.splice(g.proto.node.indexOf(dqNode), 1);
  g.proto.node.splice(g.proto.node.indexOf(qNode), 1);
  g.proto.node.splice(at, 0, ...nodes);
  g.invalidate();
}
