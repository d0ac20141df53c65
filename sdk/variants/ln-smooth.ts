/**
 * Data-free outlier smoothing for dynamic (per-tensor) activation quantization: a
 * LayerNormalization whose few large γ channels make outliers in its output (x_j = γ_j·n_j + β_j)
 * hands part of them to the weights of the MatMuls that read it: γ_j, β_j ÷ s_j and row j of each
 * weight × s_j, the same function in exact arithmetic. The channel bound b_j = |γ_j|·3 + |β_j| stands
 * in for calibration statistics; s_j = max(1, b_j / b₇₅)^α with b₇₅ the 75th percentile of the
 * bounds, so only channels far above the rest move. Applies where every reader of the LayerNormalization output is a MatMul with
 * a 2-D constant float weight read by no other node.
 */
import { DataType } from '../onnx/dtype';
import { Model } from '../onnx/model';

/** max(1, b_j / 75th percentile)^α: 1 for the ordinary channels. */
export function outlierScales(bound: Float32Array, alpha: number): Float32Array {
  const sorted = Float32Array.from(bound).sort();
  const normal = Math.max(1e-12, sorted[Math.floor(0.75 * (sorted.length - 1))]);
  return Float32Array.from(bound, (b) => (b > 2 * normal ? Math.fround((b / normal) ** alpha) : 1));
}

export interface SmoothedNorm { node: string; channels: number; maxScale: number }

/** Rewrites `model` in place; returns the LayerNormalizations it smoothed. */
export function smoothLayerNormOutliers(model: Model, alpha = 0.5): SmoothedNorm[] {
  const g = model.graph;
  const readCount = new Map<string, number>();
  for (const n of g.proto.node) for (const i of n.input) readCount.set(i, (readCount.get(i) ?? 0) + 1);
  const out: SmoothedNorm[] = [];
  for (const n of g.nodes) {
    if (n.op_type !== 'LayerNormalization' || (n.domain ?? '') !== '' || n.output.filter(Boolean).length > 1) continue;
    const [, gammaName, betaName] = n.input;
    const y = n.output[0];
    const gamma = g.initializer(gammaName) && g.constantValue(gammaName);
    const beta = betaName ? g.initializer(betaName) && g.constantValue(betaName) : undefined;
    if (!gamma || gamma.type !== DataType.FLOAT || gamma.dims.length !== 1 || (betaName && (!beta || beta.type !== DataType.FLOAT))) continue;
    if ((readCount.get(gammaName) ?? 0) > 1 || (betaName && (readCount.get(betaName) ?? 0) > 1) || g.outputNames.includes(y)) continue;
    const readers = g.consumers(y);
    const k = gamma.dims[0];
    const weights = readers.map((r) => (r.op_type === 'MatMul' && r.input[0] === y && r.input[1] !== y && g.initializer(r.input[1]) && (readCount.get(r.input[1]) ?? 0) === 1 ? g.constantValue(r.input[1]) : undefined));
    if (!readers.length || weights.some((w) => !w || w.type !== DataType.FLOAT || w.dims.length !== 2 || w.dims[0] !== k)) continue;
    const gd = gamma.data as Float32Array;
    const bd = beta ? (beta.data as Float32Array) : new Float32Array(k);
    const bound = Float32Array.from(gd, (v, j) => Math.abs(v) * 3 + Math.abs(bd[j]));
    const s = outlierScales(bound, alpha);
    const channels = s.filter((v) => v !== 1).length;
    if (!channels) continue;
    g.replaceInitializer(gammaName, { type: DataType.FLOAT, dims: gamma.dims, data: Float32Array.from(gd, (v, j) => v / s[j]) });
    if (beta) g.replaceInitializer(betaName, { type: DataType.FLOAT, dims: beta.dims, data: Float32Array.from(bd, (v, j) => v / s[j]) });
    readers.forEach((r, i) => {
      const w = weights[i]!;
      const cols = w.dims[1];
      const wd = Float32Array.from(w.data as Float32Array, (v, idx) => v * s[Math.floor(idx / cols)]);
      g.replaceInitializer(r.input[1], { type: DataType.FLOAT, dims: w.dims, data: wd });
    });
    out.push({ node: n.name || y, channels, maxScale: Math.max(...s) });
  }
  return out;
}
