/**
 * The fake-quant (simulated) float model derived from a QDQ model: constant integer tensors
 * behind DequantizeLinear become their dequantized float values, and each activation
 * Q → DQ pair becomes Div → Round → Add → Clip → Sub → Mul on floats. It computes what the
 * quantized model means with float ops only, so any runtime can run it.
 */
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto, newNode } from '../onnx/proto';
import { dequantizeLinear } from '../kernels/quant';
import { removeUnusedConstants } from './fold-batchnorm';
import { scopes } from '../onnx/scopes';
import { TensorSpill } from '../onnx/spill';

/** `spill`: where the dequantized weights go as they are made (a model held by reference; see spill.ts). */
export function toFakeQuant(qdq: Model, spill?: TensorSpill): Model {
  const model = qdq.clone();
  // bodies first: a body's Q/DQ are its own nodes, and the main graph's pass then sees the finished bodies
  for (const s of scopes(model).reverse()) fakeQuantGraph(s.graph, spill);
  return model;
}

function fakeQuantGraph(g: Graph, spill: TensorSpill | undefined): void {
  g.invalidate(); // its bodies may have changed since its index was built
  for (const dq of [...g.nodes]) {
    if (dq.op_type !== 'DequantizeLinear') continue;
    const [x, s, z] = dq.input;
    // run-time scales (DynamicQuantizeLinear) are already float computations: leave them
    if (!g.isConstant(s)) continue;
    const value = g.constantValue(x);
    if (!value) continue;
    // a quantized constant: store its dequantized values
    const scale = g.constantValue(s)!.data as Float32Array;
    const zp = zeroPoints(g, z, scale.length);
    const axis = (attributeValue(dq, 'axis') as number | undefined) ?? 1;
    const f = dequantizeLinear(Int32Array.from(value.data as ArrayLike<number>), Float32Array.from(scale), zp, value.dims, scale.length > 1 ? axis : 1);
    g.replaceNodeWithConstant(dq, { type: DataType.FLOAT, dims: value.dims, data: f });
    if (spill) g.proto.initializer.push(spill.put(g.proto.initializer.pop()!));
  }
  for (const q of [...g.nodes]) {
    if (q.op_type !== 'QuantizeLinear' || !g.isConstant(q.input[1])) continue;
    const readers = g.consumers(q.output[0]);
    // only activation pairs whose every reader is a DequantizeLinear with constant parameters
    if (!readers.length || readers.some((r) => r.op_type !== 'DequantizeLinear' || !g.isConstant(r.input[1])) || g.outputNames.includes(q.output[0])) continue;
    replaceQuantize(g, q, readers);
  }
  removeUnusedConstants(g);
}

function zeroPoints(g: Graph, name: string | undefined, n: number): Int32Array {
  return name ? Int32Array.from(g.constantValue(name)!.data as ArrayLike<number>) : new Int32Array(n);
}

function signedRange(g: Graph, zpName: string): [number, number] {
  return g.constantValue(zpName)!.type === DataType.INT8 ? [-128, 127] : [0, 255];
}

/**
 * x → Q(s, z) → DQ(s', z') → y   becomes   y = (Clip(Round(x / s) + z, qmin, qmax) − z') · s'
 * (one rounding for all readers; each DequantizeLinear keeps its own s', z', which equal s, z
 * except where a constant multiplier was folded into the DQ).
 */
function replaceQuantize(g: Graph, q: NodeProto, readers: NodeProto[]): void {
  const [x, s, z] = q.input;
  const n = g.constantValue(s)!.data.length;
  // per-axis parameters (fa3's one scale per head) broadcast along `axis` of x
  const dims = n > 1 ? perAxisDims(g, q, n) : [];
  if (!dims) return; // x's rank is unknown: the pair stays as QDQ, which every runtime reads too
  const [qmin, qmax] = signedRange(g, z);
  const base = q.output[0];
  // a float constant: one value (scalar), or one per axis entry shaped to broadcast
  const c = (name: string, values: ArrayLike<number>) => g.addInitializer({ name: g.uniqueName(name), type: DataType.FLOAT, dims: values.length > 1 ? dims : [], data: Float32Array.from(values) }).name!;
  const scale = g.constantValue(s)!.data as Float32Array;
  const zp = zeroPoints(g, z, n);
  const t = (k: string) => g.uniqueName(`${base}_${k}`);
  const [div, round, add, clip] = ['div', 'round', 'add', 'clip'].map(t);
  const nodes = [
    newNode({ op_type: 'Div', name: `${div}_node`, input: [x, c(`${base}_scale`, scale)], output: [div] }),
    newNode({ op_type: 'Round', name: `${round}_node`, input: [div], output: [round] }),
    newNode({ op_type: 'Add', name: `${add}_node`, input: [round, c(`${base}_zero_point`, zp)], output: [add] }),
    newNode({ op_type: 'Clip', name: `${clip}_node`, input: [add, c(`${base}_qmin`, [qmin]), c(`${base}_qmax`, [qmax])], output: [clip] }),
  ];
  for (const dq of readers) {
    const y = dq.output[0];
    const dqScale = g.constantValue(dq.input[1])!.data as Float32Array;
    const dqZp = zeroPoints(g, dq.input[2], n);
    const sub = g.uniqueName(`${y}_sub`);
    nodes.push(
      newNode({ op_type: 'Sub', name: `${sub}_node`, input: [clip, c(`${y}_zero_point`, dqZp)], output: [sub] }),
      newNode({ op_type: 'Mul', name: `${y}_fakequant`, input: [sub, c(`${y}_scale`, dqScale)], output: [y] }),
    );
  }
  const at = g.proto.node.indexOf(q);
  g.proto.node = g.proto.node.filter((n) => n !== q && !readers.includes(n));
  g.proto.node.splice(Math.min(at, g.proto.node.length), 0, ...nodes);
  g.invalidate();
}

/** Shape [n, 1, …] that lines n per-axis values up with `axis` of the quantized tensor, if its rank is known. */
function perAxisDims(g: Graph, q: NodeProto, n: number): number[] | undefined {
  const rank = g.valueType(q.input[0])?.shape?.length;
  if (rank === undefined) return undefined;
  const raw = (attributeValue(q, 'axis') as number | undefined) ?? 1;
  const axis = raw < 0 ? raw + rank : raw;
  return [n, ...new Array(rank - 1 - axis).fill(1)];
}
