/**
 * Folds what follows a ConvTranspose into its weights and bias: a constant Add (scalar or per
 * output channel) and an inference BatchNormalization, as paddle2onnx writes the DB head of
 * PP-OCRv4 det (ConvTranspose → Add(bias) → BatchNormalization → Relu). Each folded node is an
 * elementwise pass fewer in the float model and in every quantized form of it.
 *
 * The weight is [C_in, C_out / group, k…]: output channel o of group g is column g·(C_out/group) + o.
 */
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto } from '../onnx/proto';
import { absorbIntoConv, ownedWeightAndBias, soleReader, writeConvParams } from './conv-params';
import { perOutputChannel } from './fold-affine';
import { removeUnusedConstants } from './fold-batchnorm';

export interface ConvTransposeFoldResult { folded: Array<{ convTranspose: string; nodes: string[] }> }

interface TransposeParams { weight: Float32Array; bias: Float32Array; dims: number[]; cout: number; group: number }

export function foldIntoConvTransposes(model: Model): ConvTransposeFoldResult {
  const g = model.graph;
  const folded: ConvTransposeFoldResult['folded'] = [];
  for (const ct of g.nodes.filter((n) => n.op_type === 'ConvTranspose')) {
    const names: string[] = [];
    for (let next = soleReader(g, ct.output[0]); next; next = soleReader(g, ct.output[0])) {
      const p = params(g, ct);
      if (!p || !(foldAdd(g, p, next) || foldBatchNorm(g, p, next))) break;
      writeConvParams(g, ct, p);
      absorbIntoConv(g, ct, next);
      names.push(next.name ?? next.output[0]);
    }
    if (names.length) folded.push({ convTranspose: ct.name ?? '', nodes: names });
  }
  removeUnusedConstants(g);
  return { folded };
}

/** Float copies of weight and bias, when both are constants only this node reads. */
function params(g: Graph, ct: NodeProto): TransposeParams | undefined {
  const owned = ownedWeightAndBias(g, ct);
  if (!owned) return undefined;
  const group = (attributeValue(ct, 'group') as number | undefined) ?? 1;
  const cout = owned.dims[1] * group;
  return { ...owned, bias: owned.bias ?? new Float32Array(cout), cout, group };
}

/** Multiplies output channel c's weights by k[c]. */
function scaleOutputChannels(p: TransposeParams, k: Float32Array): void {
  const [cin, perGroup] = p.dims;
  const spatial = p.weight.length / (cin * perGroup);
  const inPerGroup = cin / p.group;
  for (let i = 0; i < cin; i++) {
    const g = Math.floor(i / inPerGroup);
    for (let o = 0; o < perGroup; o++) {
      const factor = k[g * perGroup + o];
      const start = (i * perGroup + o) * spatial;
      for (let s = 0; s < spatial; s++) p.weight[start + s] *= factor;
    }
  }
}

function foldAdd(g: Graph, p: TransposeParams, n: NodeProto): boolean {
  if (n.op_type !== 'Add' || n.input.length !== 2) return false;
  const k = n.input.findIndex((t) => g.constantValue(t)?.type === DataType.FLOAT);
  if (k < 0 || g.constantValue(n.input[1 - k])) return false;
  const c = g.constantValue(n.input[k])!;
  const v = perOutputChannel(c.data as Float32Array, [...c.dims], p.cout, p.dims.length);
  if (!v) return false;
  for (let o = 0; o < p.cout; o++) p.bias[o] += v[o];
  return true;
}

function foldBatchNorm(g: Graph, p: TransposeParams, n: NodeProto): boolean {
  if (n.op_type !== 'BatchNormalization' || n.output.slice(1).some(Boolean)) return false;
  const values = n.input.slice(1, 5).map((t) => g.constantValue(t));
  if (values.some((v) => !v || v.type !== DataType.FLOAT || v.data.length !== p.cout)) return false;
  const [gamma, beta, mean, variance] = values.map((v) => v!.data as Float32Array);
  const eps = (attributeValue(n, 'epsilon') as number | undefined) ?? 1e-5;
  const k = Float32Array.from(gamma, (gm, c) => gm / Math.sqrt(variance[c] + eps));
  scaleOutputChannels(p, k);
  for (let c = 0; c < p.cout; c++) p.bias[c] = (p.bias[c] - mean[c]) * k[c] + beta[c];
  return true;
}
