/**
 * Folds BatchNormalization into the Conv before it (inference form):
 *   W' = W · γ/√(σ²+ε) per output channel,  b' = (b − μ) · γ/√(σ²+ε) + β.
 * Only where the Conv's output feeds the BN alone and every parameter is a constant.
 */
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto } from '../onnx/proto';
import { inferRanks } from '../onnx/rank';
import { absorbIntoConv, foldableConvParams, ownedWeightAndBias, writeConvParams } from './conv-params';

/** `output`: the tensor the folded layer now produces (the BatchNormalization's output). */
export interface FoldResult { folded: Array<{ conv: string; batchNorm: string; output: string }> }

/** `skip`: names of Conv layers whose BatchNormalization stays separate (AMCT's skip_fusion_layers). */
export function foldBatchNorms(model: Model, options: { skip?: readonly string[] } = {}): FoldResult {
  const g = model.graph;
  const folded: FoldResult['folded'] = [];
  for (const bn of [...g.nodes]) {
    if (bn.op_type !== 'BatchNormalization' || bn.output.length > 1 && bn.output.slice(1).some(Boolean)) continue;
    const conv = g.producer(bn.input[0]);
    if (!conv || conv.op_type !== 'Conv' || options.skip?.includes(conv.name ?? '')) continue;
    if (g.consumers(conv.output[0]).length !== 1 || g.outputNames.includes(conv.output[0])) continue;
    const params = bn.input.slice(1, 5).map((t) => g.constantValue(t));
    const convParams = params.some((p) => !p) ? undefined : foldableConvParams(g, conv);
    if (!convParams) continue;
    const [gamma, beta, mean, variance] = params.map((p) => p!.data as Float32Array);
    const eps = (attributeValue(bn, 'epsilon') as number | undefined) ?? 1e-5;
    const { weight, bias, cout, per } = convParams;
    for (let c = 0; c < cout; c++) {
      const k = gamma[c] / Math.sqrt(variance[c] + eps);
      for (let i = 0; i < per; i++) weight[c * per + i] *= k;
      bias[c] = (bias[c] - mean[c]) * k + beta[c];
    }
    writeConvParams(g, conv, convParams);
    absorbIntoConv(g, conv, bn);
    folded.push({ conv: conv.name ?? '', batchNorm: bn.name ?? '', output: bn.output[0] });
  }
  removeUnusedConstants(g);
  return { folded };
}

/**
 * The Dense layer (Gemm, or a 2-D MatMul with a constant weight) a BatchNormalization can fold
 * into: the layer's output feeds the BN alone, the input has rank 2 (so BN's channel axis 1 is
 * the layer's output feature), Gemm has transA 0 and alpha = beta = 1, and the weight (and Gemm's
 * bias, of length N) are float constants no other node reads. `axis`: the weight's output-feature
 * axis (0 for Gemm transB=1, else 1).
 */
export function denseBeforeBatchNorm(g: Graph, bn: NodeProto, ranks?: Map<string, number>): { dense: NodeProto; axis: 0 | 1 } | undefined {
  if (bn.op_type !== 'BatchNormalization' || bn.output.length > 1 && bn.output.slice(1).some(Boolean)) return undefined;
  const dense = g.producer(bn.input[0]);
  if (!dense || (dense.op_type !== 'Gemm' && dense.op_type !== 'MatMul')) return undefined;
  if (g.consumers(dense.output[0]).length !== 1 || g.outputNames.includes(dense.output[0])) return undefined;
  if (dense.op_type === 'Gemm' && (attributeValue(dense, 'transA') === 1 || (attributeValue(dense, 'alpha') ?? 1) !== 1 || (attributeValue(dense, 'beta') ?? 1) !== 1)) return undefined;
  if (dense.op_type === 'MatMul' && (ranks ?? inferRanks(g)).get(dense.input[0]) !== 2) return undefined;
  const owned = ownedWeightAndBias(g, dense);
  if (!owned || owned.dims.length !== 2) return undefined;
  const axis = dense.op_type === 'Gemm' && attributeValue(dense, 'transB') === 1 ? 0 : 1;
  if (owned.bias && owned.bias.length !== owned.dims[axis]) return undefined;
  if (bn.input.slice(1, 5).some((t) => g.constantValue(t)?.data.length !== owned.dims[axis])) return undefined;
  return { dense, axis };
}

/**
 * Folds BatchNormalization into the Dense layer before it (Golden Stick's Dense + BatchNorm
 * fusion), the inference form: W' = W·γ/√(σ²+ε) per output feature, b' = (b − μ)·γ/√(σ²+ε) + β.
 * A MatMul becomes a Gemm (same name, transB 0) to carry the bias.
 */
export function foldDenseBatchNorms(model: Model): FoldResult {
  const g = model.graph;
  const folded: FoldResult['folded'] = [];
  const ranks = inferRanks(g);
  for (const bn of [...g.nodes]) {
    const found = denseBeforeBatchNorm(g, bn, ranks);
    if (!found) continue;
    const { dense, axis } = found;
    const owned = ownedWeightAndBias(g, dense)!;
    const [gamma, beta, mean, variance] = bn.input.slice(1, 5).map((t) => g.constantValue(t)!.data as Float32Array);
    const eps = (attributeValue(bn, 'epsilon') as number | undefined) ?? 1e-5;
    const [rows, cols] = owned.dims;
    const n = owned.dims[axis];
    const weight = owned.weight;
    const bias = owned.bias ?? new Float32Array(n);
    for (let c = 0; c < n; c++) {
      const k = gamma[c] / Math.sqrt(variance[c] + eps);
      if (axis === 0) for (let i = 0; i < cols; i++) weight[c * cols + i] *= k;
      else for (let r = 0; r < rows; r++) weight[r * cols + c] *= k;
      bias[c] = (bias[c] - mean[c]) * k + beta[c];
    }
    g.replaceInitializer(dense.input[1], { type: DataType.FLOAT, dims: owned.dims, data: weight });
    if (dense.input[2]) g.replaceInitializer(dense.input[2], { type: DataType.FLOAT, dims: [n], data: bias });
    else dense.input[2] = g.addInitializer({ name: g.uniqueName(`${dense.name || dense.output[0]}_bias`), type: DataType.FLOAT, dims: [n], data: bias }).name!;
    if (dense.op_type === 'MatMul') {
      dense.op_type = 'Gemm';
      dense.attribute = [];
    }
    absorbIntoConv(g, dense, bn);
    folded.push({ conv: dense.name ?? '', batchNorm: bn.name ?? '', output: bn.output[0] });
  }
  removeUnusedConstants(g);
  return { folded };
}

/** Drops initializers and Constant nodes nothing reads any more (after folding or quantizing). */
export function removeUnusedConstants(g: Graph): void {
  let changed = true;
  while (changed) {
    changed = false;
    for (const n of [...g.proto.node]) {
      if (n.op_type === 'Constant' && !g.consumers(n.output[0]).length && !g.outputNames.includes(n.output[0])) {
        g.removeNode(n);
        changed = true;
      }
    }
  }
  const used = new Set<string>(g.outputNames);
  g.walk((n) => n.input.forEach((i) => used.add(i)));
  for (const s of g.subgraphs()) for (const r of s.graph.outerScopeReads()) used.add(r);
  g.proto.initializer = g.proto.initializer.filter((t) => used.has(t.name ?? ''));
  g.proto.input = g.proto.input.filter((v) => !g.initializer(v.name ?? '') || used.has(v.name ?? ''));
  g.invalidate();
}
