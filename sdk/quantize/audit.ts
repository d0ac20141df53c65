/**
 * Checks a quantized model's integer constants for the two failures that are silent at run time:
 * int32 biases at the int32 limits (saturated: the layer computes another bias than the float
 * model's) and weight scales below WEIGHT_SCALE_FLOOR (denormal or near it: slow on CPUs, and the
 * bias grid s_x·s_w collapses). Reads what was written, so it applies to any QDQ model (ours or
 * another tool's) and to AMCT's deploy models (int32 bias straight on the layer).
 */
import { DataType } from '../onnx/dtype';
import { Graph } from '../onnx/graph';
import { Model } from '../onnx/model';
import { scopes } from '../onnx/scopes';
import { WEIGHT_SCALE_FLOOR } from './int32-bias';

export interface AuditFinding {
  kind: 'saturated bias' | 'weight scale below floor' | 'denormal bias scale';
  /** the node reading the constant, with its body path when inside a subgraph */
  node: string;
  tensor: string;
  /** how many entries (channels) are affected */
  count: number;
  /** the worst value found */
  worst: number;
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const FLOAT32_MIN_NORMAL = 2 ** -126;
const LAYERS_WITH_BIAS = new Set(['Conv', 'ConvTranspose', 'Gemm']);

function floats(g: Graph, name: string | undefined): Float32Array | undefined {
  const v = name ? g.constantValue(name) : undefined;
  return v && v.type === DataType.FLOAT ? (v.data as Float32Array) : undefined;
}

function auditGraph(g: Graph, path: string, out: AuditFinding[]): void {
  const where = (n: { name?: string | null; output: string[] }) => (path ? `${path}/` : '') + (n.name || n.output[0]);
  const saturated = (tensor: string, node: string) => {
    const v = g.constantValue(tensor);
    if (!v || v.type !== DataType.INT32) return;
    const data = v.data as Int32Array;
    const hits = data.filter((x) => x === INT32_MIN || x === INT32_MAX);
    if (hits.length) out.push({ kind: 'saturated bias', node, tensor, count: hits.length, worst: hits[0] });
  };
  for (const n of g.nodes) {
    if (n.op_type === 'DequantizeLinear' && g.isConstant(n.input[0])) {
      const type = g.constantValue(n.input[0])!.type;
      const scale = floats(g, n.input[1]);
      if (!scale) continue;
      if (type === DataType.INT32) {
        saturated(n.input[0], where(n));
        const tiny = scale.filter((s) => s !== 0 && Math.abs(s) < FLOAT32_MIN_NORMAL);
        if (tiny.length) out.push({ kind: 'denormal bias scale', node: where(n), tensor: n.input[1], count: tiny.length, worst: Math.min(...tiny) });
      } else if (type === DataType.INT8 || type === DataType.UINT8) {
        const low = scale.filter((s) => s < WEIGHT_SCALE_FLOOR);
        if (low.length) out.push({ kind: 'weight scale below floor', node: where(n), tensor: n.input[1], count: low.length, worst: Math.min(...low) });
      }
    } else if (LAYERS_WITH_BIAS.has(n.op_type ?? '') && n.input[2] && g.isConstant(n.input[2])) {
      saturated(n.input[2], where(n)); // AMCT deploy: int32 bias on the layer itself
    }
  }
}

/** Every finding in the main graph and all bodies; empty when the model is sound. */
export function auditQuantizedModel(model: Model): AuditFinding[] {
  const out: AuditFinding[] = [];
  for (const s of scopes(model)) auditGraph(s.graph, s.path, out);
  return out;
}
