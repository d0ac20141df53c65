/**
 * The 'extended' operator set: besides the AMCT layers, quantize the elementwise glue between
 * them (Add, Mul, Sigmoid, Concat, Resize, MaxPool), so ORT can keep whole blocks in int8
 * (QLinearAdd, QLinearMul, QLinearSigmoid, QLinearConcat, ...) instead of leaving and
 * re-entering float around every op. Faster on CPU; every extra quantization point costs some
 * accuracy, which is why it is an option and measured in the bench.
 */
import { DataType } from '../onnx/dtype';
import { Model } from '../onnx/model';
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

/** Activation tensors of the glue ops (data inputs and outputs), and their constant inputs. */
export function glueTensors(model: Model): { activations: string[]; constants: string[] } {
  const g = model.graph;
  const activations = new Set<string>();
  const constants = new Set<string>();
  for (const n of g.nodes) {
    if (!(GLUE_OP_TYPES as readonly string[]).includes(n.op_type!)) continue;
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
