/**
 * msModelSlim QatConfig has_init_quant ("the model has already been through quantization
 * initialisation") for ONNX models: the model arrives with its quantization already initialised,
 * as a QDQ model (a post-training quantization, or an earlier QAT export). QAT then starts from
 * that initialisation instead of re-initialising: the QuantizeLinear → DequantizeLinear pairs on
 * activations are taken out and their scale / zero point become the initial range of the fake
 * quantizer on the same tensor, (qmin − z)·s … (qmax − z)·s; quantized constants (weights, biases)
 * become their dequantized float values, which lie on the grid they were quantized to.
 */
import { QuantbookError } from '../errors';
import { attributeValue } from '../onnx/graph';
import { DataType } from '../onnx/dtype';
import { Model } from '../onnx/model';
import { dequantizeLinear } from '../kernels/quant';
import { removeUnusedConstants } from '../quantize/fold-batchnorm';

export interface InitialRange { min: number; max: number; scale: number; zeroPoint: number }

const GRID: Partial<Record<DataType, [number, number]>> = { [DataType.UINT8]: [0, 255], [DataType.INT8]: [-128, 127] };

/**
 * A float copy of a QDQ model (Q/DQ pairs removed, quantized constants dequantized) and, per
 * activation tensor that carried a Q/DQ pair, the range its scale and zero point represent.
 * Throws when the model holds no Q/DQ pair on an activation (nothing was initialised).
 */
export function takeInitialQuantization(qdq: Model): { model: Model; ranges: Map<string, InitialRange> } {
  const model = qdq.clone();
  const g = model.graph;
  const ranges = new Map<string, InitialRange>();
  const scalar = (name: string | undefined) => (name ? g.constantValue(name) : undefined);
  // quantized constants: DequantizeLinear of an initializer → a float initializer of the same name
  for (const dq of g.nodes.filter((n) => n.op_type === 'DequantizeLinear')) {
    const q = g.constantValue(dq.input[0]);
    if (!q) continue;
    const s = scalar(dq.input[1]);
    if (!s) throw new QuantbookError('INVALID_ARGUMENT', `has_init_quant: DequantizeLinear "${dq.name}" has a non-constant scale`);
    const z = scalar(dq.input[2]);
    const scale = Float32Array.from(s.data as ArrayLike<number>);
    const zeroPoint = z ? Int32Array.from(z.data as ArrayLike<number | bigint>, Number) : new Int32Array(scale.length);
    const rank = q.dims.length;
    const axis = scale.length > 1 ? (((attributeValue(dq, 'axis') as number | undefined) ?? 1) + rank) % rank : 1;
    const data = dequantizeLinear(Array.from(q.data as ArrayLike<number | bigint>, Number), scale, zeroPoint, q.dims, axis);
    g.proto.node.splice(g.proto.node.indexOf(dq), 1);
    g.invalidate();
    g.addInitializer({ name: dq.output[0], type: DataType.FLOAT, dims: [...q.dims], data });
  }
  // activations: x → QuantizeLinear → DequantizeLinear → readers becomes x → readers
  for (const ql of g.nodes.filter((n) => n.op_type === 'QuantizeLinear')) {
    const x = ql.input[0];
    const readers = g.consumers(ql.output[0]);
    if (!readers.length || readers.some((n) => n.op_type !== 'DequantizeLinear') || g.outputNames.includes(ql.output[0])) {
      throw new QuantbookError('INVALID_ARGUMENT', `has_init_quant: QuantizeLinear "${ql.name}" on "${x}" is not followed by DequantizeLinear only; quantbook takes the initial quantization from QDQ pairs`);
    }
    const s = scalar(ql.input[1]);
    const z = scalar(ql.input[2]);
    const grid = GRID[(z?.type ?? DataType.UINT8) as DataType];
    if (!s || s.data.length !== 1 || !grid) throw new QuantbookError('INVALID_ARGUMENT', `has_init_quant: QuantizeLinear "${ql.name}" on "${x}" needs a constant per-tensor scale and a uint8/int8 zero point`);
    const scale = Number(s.data[0]);
    const zeroPoint = z ? Number(z.data[0]) : 0;
    ranges.set(x, { min: (grid[0] - zeroPoint) * scale, max: (grid[1] - zeroPoint) * scale, scale, zeroPoint });
    for (const dq of readers) {
      const out = dq.output[0];
      if (g.outputNames.includes(out)) {
        // a graph output keeps its name: the pair becomes an Identity
        dq.op_type = 'Identity';
        dq.input.splice(0, dq.input.length, x);
        dq.attribute = [];
        continue;
      }
      for (const n of g.consumers(out)) n.input.forEach((t, i) => { if (t === out) n.input[i] = x; });
      g.proto.node.splice(g.proto.node.indexOf(dq), 1);
      g.invalidate();
    }
    g.proto.node.splice(g.proto.node.indexOf(ql), 1);
    g.invalidate();
  }
  if (!ranges.size) throw new QuantbookError('INVALID_ARGUMENT', 'has_init_quant: true, but the model has no QuantizeLinear → DequantizeLinear pair on an activation; pass a QDQ model (e.g. quantizeW8A8(...).qdq or a QAT export), or set has_init_quant: false for a float model');
  removeUnusedConstants(g);
  return { model, ranges };
}

/** True when the model has QuantizeLinear or DequantizeLinear nodes in its main graph. */
export function hasQdq(model: Model): boolean {
  return model.graph.nodes.some((n) => n.op_type === 'QuantizeLinear' || n.op_type === 'DequantizeLinear');
}
