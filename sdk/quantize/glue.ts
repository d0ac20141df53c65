/**
 * The 'extended' operator set: besides the AMCT layers, quantize the elementwise glue between
 * them (Add, Mul, Sigmoid, Concat, Resize, MaxPool), so ORT can keep whole blocks in int8
 * (QLinearAdd, QLinearMul, QLinearSigmoid, QLinearConcat, ...) instead of leaving and
 * re-entering float around every op. Faster on CPU; every extra quantization point costs some
 * accuracy, which is why it is an option and measured in the bench. Two rewrites then remove
 * what QDQ makes redundant (shareClipParams, foldConstantMultipliers): on PP-OCRv4's hard-swish
 * blocks they leave one QLinearAdd and one QLinearMul where five integer and float ops ran.
 */
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { quantizeValue } from '../kernels/quant';
import { Model } from '../onnx/model';
import { NodeProto, newNode } from '../onnx/proto';
import { QParams, QuantSpec, qparamsFromRange } from '../observers';

export const GLUE_OP_TYPES = ['Add', 'Mul', 'Sigmoid', 'Concat', 'Resize', 'MaxPool'] as const;

/**
 * Div by a constant becomes Mul by its reciprocal (ORT has QLinearMul, no QLinearDiv).
 * Applied to the copy being quantized; the float result differs by at most an ulp.
 */
export function divisionsToMultiplications(model: Model): number {
  const g = model.graph;
  let count = 0;
  for (const n of [...g.nodes]) {
    if (n.op_type !== 'Div' || !g.isConstant(n.input[1])) continue;
    const c = g.constantValue(n.input[1])!;
    if (c.type !== DataType.FLOAT) continue;
    const name = g.uniqueName(`${n.input[1]}_reciprocal`);
    g.addInitializer({ name, type: DataType.FLOAT, dims: c.dims, data: Float32Array.from(c.data as Float32Array, (v) => 1 / v) });
    n.op_type = 'Mul';
    n.input[1] = name;
    g.invalidate();
    count++;
  }
  return count;
}

/**
 * Activation tensors of the glue ops (data inputs and outputs), and their constant inputs.
 * With `quantizedLayers`, only glue that reaches one of those layers counts: glue ops joined by
 * the tensors between them form an island, and an island none of whose inputs comes from a
 * quantized layer and none of whose outputs feeds one stays float (in int8 it would only add
 * Q/DQ and layout changes between float layers, e.g. around layers disable_names or
 * speedFallback keep float).
 */
export function glueTensors(model: Model, quantizedLayers?: ReadonlySet<NodeProto>): { activations: string[]; constants: string[] } {
  const g = model.graph;
  const isGlue = (n: NodeProto | undefined) => n !== undefined && (GLUE_OP_TYPES as readonly string[]).includes(n.op_type!);
  let glue = g.nodes.filter(isGlue);
  if (quantizedLayers) {
    const island = new Map<NodeProto, NodeProto>(glue.map((n) => [n, n]));
    const root = (n: NodeProto): NodeProto => (island.get(n) === n ? n : root(island.get(n)!));
    for (const n of glue) for (const t of n.input) {
      const p = g.producer(t);
      if (p && isGlue(p)) island.set(root(p), root(n));
    }
    const isQuantized = (n: NodeProto | undefined) => n !== undefined && quantizedLayers.has(n);
    const reaching = new Set<NodeProto>();
    for (const n of glue) {
      if (n.input.some((t) => isQuantized(g.producer(t))) || g.consumers(n.output[0]).some(isQuantized)) reaching.add(root(n));
    }
    glue = glue.filter((n) => reaching.has(root(n)));
  }
  const activations = new Set<string>();
  const constants = new Set<string>();
  for (const n of glue) {
    const inputs = n.op_type === 'Resize' ? [n.input[0]] : n.input.filter(Boolean);
    for (const t of inputs) (g.isConstant(t) ? constants : activations).add(t);
    activations.add(n.output[0]);
  }
  // only float constants are data; integer ones are shape arithmetic
  const floatConstants = [...constants].filter((t) => g.constantValue(t)?.type === DataType.FLOAT);
  return { activations: [...activations], constants: floatConstants };
}

/** Per-tensor parameters for a constant operand, from its own values. */
export function constantQParams(model: Model, tensor: string, spec: QuantSpec): QParams {
  const data = model.graph.constantValue(tensor)!.data as Float32Array;
  let lo = 0;
  let hi = 0;
  for (const v of data) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return qparamsFromRange([lo], [hi], spec);
}

/**
 * A Clip's input gets the Clip output's parameters, so the producer's QuantizeLinear saturates
 * where the Clip would (its range lies inside [min, max] of the Clip, zero included): ORT then
 * drops the Clip and the DQ → Q requantization between them. Only where the Clip is the input's
 * sole reader. Returns the tensors whose parameters were replaced.
 */
export function shareClipParams(model: Model, activations: Map<string, QParams>): string[] {
  const g = model.graph;
  const shared: string[] = [];
  for (const clip of g.nodes) {
    if (clip.op_type !== 'Clip') continue;
    const [x] = clip.input;
    const q = activations.get(clip.output[0]);
    if (!q || !activations.has(x) || g.consumers(x).length !== 1 || g.outputNames.includes(x)) continue;
    activations.set(x, q);
    shared.push(x);
  }
  return shared;
}

/**
 * For y = x · k (a Mul by a positive float scalar, e.g. the hard-swish "/ 6" after
 * divisionsToMultiplications) with both sides quantized, y takes x's parameters with the scale
 * multiplied by k: y's integers are then x's integers, and foldConstantMultipliers can drop the
 * Mul. Set before the layers' QDQ is written, so a layer reading y records (and scales its int32
 * bias with) the scale the model uses. Returns the tensors whose parameters were derived.
 */
export function scaleThroughMultipliers(model: Model, activations: Map<string, QParams>): string[] {
  const g = model.graph;
  const derived: string[] = [];
  for (const mul of g.nodes) {
    const m = positiveScalarMul(g, mul);
    const x = m && activations.get(m.data);
    const y = mul.output[0];
    if (!m || !x || x.scale.length !== 1 || !activations.has(y) || g.outputNames.includes(y)) continue;
    activations.set(y, { ...x, scale: Float32Array.of(x.scale[0] * m.factor), zeroPoint: Int32Array.from(x.zeroPoint) });
    derived.push(y);
  }
  return derived;
}

/**
 * In a QDQ graph, DQ(x_q; s, z) → Mul(k) → Q(s·k, z) → DQ with a positive scalar constant k
 * becomes one DQ(x_q; s·k, z): multiplying by k only rescales the integers' meaning. Exact with
 * respect to the QDQ model (the integers are the same: |x_q − z| ≤ 255 keeps the float rounding
 * far from a tie), and with y's parameters derived from x's there is no second rounding.
 * Returns how many Muls were removed.
 */
export function foldConstantMultipliers(model: Model): number {
  const g = model.graph;
  let count = 0;
  for (const mul of [...g.nodes]) {
    const m = positiveScalarMul(g, mul);
    if (!m) continue;
    const { factor } = m;
    const dq = g.producer(m.data);
    const readers = g.consumers(mul.output[0]);
    if (dq?.op_type !== 'DequantizeLinear' || g.isConstant(dq.input[0]) || readers.length !== 1 || readers[0].op_type !== 'QuantizeLinear' || g.outputNames.includes(mul.output[0])) continue;
    if (attributeValue(dq, 'axis') !== undefined || !g.isConstant(dq.input[1])) continue;
    const q = readers[0];
    const dqAfter = g.consumers(q.output[0]);
    if (dqAfter.length !== 1 || dqAfter[0].op_type !== 'DequantizeLinear' || g.outputNames.includes(q.output[0])) continue;
    // only where y's parameters are x's rescaled (scaleThroughMultipliers): then y_q = x_q
    const [sx, sy] = [dq.input[1], q.input[1]].map((t) => (g.constantValue(t)!.data as Float32Array)[0]);
    const [zx, zy] = [dq.input[2], q.input[2]].map((t) => (t ? g.constantValue(t) : undefined));
    if (Math.abs(sx * factor - sy) > 1e-5 * sy || zx?.type !== zy?.type || Number(zx?.data[0] ?? 0) !== Number(zy?.data[0] ?? 0)) continue;
    const folded = newNode({ op_type: 'DequantizeLinear', name: g.uniqueName(`${mul.name || mul.output[0]}_folded`), input: [dq.input[0], q.input[1], q.input[2]].filter(Boolean), output: [dqAfter[0].output[0]] });
    const operand = g.producer(m.operand);
    const nodes = g.proto.node;
    nodes.splice(nodes.indexOf(mul), 1, folded);
    nodes.splice(nodes.indexOf(q), 1);
    nodes.splice(nodes.indexOf(dqAfter[0]), 1);
    g.invalidate();
    if (!g.consumers(dq.output[0]).length && !g.outputNames.includes(dq.output[0])) g.removeNode(dq);
    // the constant's own Q → DQ (extended quantizes glue constants) when nothing else reads it
    if (operand?.op_type === 'DequantizeLinear' && !g.consumers(operand.output[0]).length) {
      const constQ = g.producer(operand.input[0]);
      g.removeNode(operand);
      if (constQ?.op_type === 'QuantizeLinear' && !g.consumers(constQ.output[0]).length) g.removeNode(constQ);
    }
    count++;
  }
  return count;
}

/** A Mul by a positive float scalar: its data input, the scalar's tensor and value. */
function positiveScalarMul(g: Graph, mul: NodeProto): { data: string; operand: string; factor: number } | undefined {
  if (mul.op_type !== 'Mul' || mul.input.length !== 2) return undefined;
  for (const k of [0, 1]) {
    const factor = scalarOperand(g, mul.input[k]);
    if (factor !== undefined) return factor > 0 ? { data: mul.input[1 - k], operand: mul.input[k], factor } : undefined;
  }
  return undefined;
}

/** A float scalar operand's value: a constant, or a constant behind QuantizeLinear → DequantizeLinear (as quantized). */
function scalarOperand(g: Graph, tensor: string): number | undefined {
  const c = g.constantValue(tensor);
  if (c) return c.type === DataType.FLOAT && c.data.length === 1 ? (c.data[0] as number) : undefined;
  const dq = g.producer(tensor);
  const q = dq?.op_type === 'DequantizeLinear' ? g.producer(dq.input[0]) : undefined;
  if (!dq || q?.op_type !== 'QuantizeLinear' || q.input[1] !== dq.input[1] || q.input[2] !== dq.input[2]) return undefined;
  const value = g.constantValue(q.input[0]);
  const scale = g.constantValue(q.input[1]);
  const zp = q.input[2] ? g.constantValue(q.input[2]) : undefined;
  if (!value || value.type !== DataType.FLOAT || value.data.length !== 1 || !scale || scale.data.length !== 1 || (q.input[2] && !zp)) return undefined;
  const [qmin, qmax] = zp?.type === DataType.INT8 ? [-128, 127] : [0, 255];
  const z = Number(zp?.data[0] ?? 0);
  const integer = quantizeValue(value.data[0] as number, scale.data[0] as number, z, { qmin, qmax });
  return Math.fround((integer - z) * (scale.data[0] as number));
}
