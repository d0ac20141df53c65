/**
 * Folds BatchNormalization into the Conv before it (inference form):
 *   W' = W · γ/√(σ²+ε) per output channel,  b' = (b − μ) · γ/√(σ²+ε) + β.
 * Only where the Conv's output feeds the BN alone and every parameter is a constant.
 */
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { absorbIntoConv, foldableConvParams, writeConvParams } from './conv-params';

export interface FoldResult { folded: Array<{ conv: string; batchNorm: string }> }

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
    folded.push({ conv: conv.name ?? '', batchNorm: bn.name ?? '' });
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
