/**
 * Which layers get quantized: the AMCT set (Conv, ConvTranspose, Gemm, MatMul, AveragePool,
 * GlobalAveragePool), minus layers whose weight is shared with another layer, minus the
 * user's disable_names (exact names or globs; a pattern matching no layer is an error).
 */
import { QuantbookError } from '../errors';
import { attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto } from '../onnx/proto';

export const QUANTIZABLE_OP_TYPES = ['Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'AveragePool', 'GlobalAveragePool'] as const;

export interface QuantLayer {
  node: NodeProto;
  name: string;
  opType: string;
  /** activation inputs (quantized per tensor) */
  activations: string[];
  /** constant weight input, quantized per channel along weightAxis */
  weight?: string;
  weightAxis?: number;
  /** constant bias input (Conv, ConvTranspose, Gemm) */
  bias?: string;
}

export interface LayerSelection { layers: QuantLayer[]; skipped: Array<{ name: string; opType: string; reason: string }> }

export function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

export function selectLayers(model: Model, disableNames: string[] = []): LayerSelection {
  if (!Array.isArray(disableNames) || disableNames.some((n) => typeof n !== 'string')) {
    throw new QuantbookError('INVALID_ARGUMENT', `disable_names: expected a list of layer names or glob patterns, got ${JSON.stringify(disableNames)}`);
  }
  const g = model.graph;
  const candidates = g.nodes.filter((n) => (QUANTIZABLE_OP_TYPES as readonly string[]).includes(n.op_type!) && (n.domain ?? '') === '');
  const names = candidates.map((n) => n.name || n.output[0]);
  const patterns = disableNames.map((p) => ({ p, re: globToRegExp(p) }));
  const unmatched = patterns.filter(({ re }) => !names.some((n) => re.test(n))).map(({ p }) => p);
  if (unmatched.length) {
    throw new QuantbookError('INVALID_ARGUMENT', `disable_names: ${unmatched.map((p) => `"${p}"`).join(', ')} match${unmatched.length === 1 ? 'es' : ''} no quantizable layer; quantizable layers are ${names.slice(0, 12).map((n) => `"${n}"`).join(', ')}${names.length > 12 ? `, … (${names.length} in all)` : ''}`);
  }
  const layers: QuantLayer[] = [];
  const skipped: LayerSelection['skipped'] = [];
  candidates.forEach((n, i) => {
    const name = names[i];
    const op = n.op_type!;
    if (patterns.some(({ re }) => re.test(name))) return skipped.push({ name, opType: op, reason: 'disable_names' });
    const layer: QuantLayer = { node: n, name, opType: op, activations: [] };
    if (op === 'AveragePool' || op === 'GlobalAveragePool') {
      layer.activations = [n.input[0]];
    } else if (op === 'MatMul' || op === 'Gemm') {
      const transB = op === 'Gemm' && attributeValue(n, 'transB') === 1;
      for (const [k, t] of n.input.slice(0, 2).entries()) {
        if (g.isConstant(t)) {
          if (k === 0) return skipped.push({ name, opType: op, reason: 'constant first input' });
          layer.weight = t;
          // per output channel: MatMul/Gemm weight [K, N] → axis 1; Gemm with transB [N, K] → axis 0
          layer.weightAxis = transB ? 0 : (g.constantValue(t)!.dims.length - 1);
        } else {
          layer.activations.push(t);
        }
      }
      if (op === 'Gemm' && (attributeValue(n, 'transA') === 1)) return skipped.push({ name, opType: op, reason: 'Gemm with transA' });
      if (op === 'Gemm' && n.input[2]) {
        if (!g.isConstant(n.input[2])) return skipped.push({ name, opType: op, reason: 'non-constant bias' });
        layer.bias = n.input[2];
      }
    } else {
      // Conv, ConvTranspose
      if (!g.isConstant(n.input[1])) return skipped.push({ name, opType: op, reason: 'weight is not a constant' });
      const pad = attributeValue(n, 'auto_pad');
      if (pad !== undefined && pad !== 'NOTSET') return skipped.push({ name, opType: op, reason: `auto_pad ${pad}` });
      layer.activations = [n.input[0]];
      layer.weight = n.input[1];
      // Conv weights [Cout, Cin/g, ...] → axis 0; ConvTranspose [Cin, Cout/g, ...] → axis 1
      layer.weightAxis = op === 'ConvTranspose' ? 1 : 0;
      if (op === 'ConvTranspose' && ((attributeValue(n, 'group') as number | undefined) ?? 1) !== 1) {
        return skipped.push({ name, opType: op, reason: 'grouped ConvTranspose (per-channel axis spans groups)' });
      }
      if (n.input[2]) {
        if (!g.isConstant(n.input[2])) return skipped.push({ name, opType: op, reason: 'non-constant bias' });
        layer.bias = n.input[2];
      }
    }
    if (layer.weight && g.consumers(layer.weight).length > 1) return skipped.push({ name, opType: op, reason: 'weight shared with another layer' });
    if (layer.weight && g.constantValue(layer.weight)!.type !== 1) return skipped.push({ name, opType: op, reason: 'weight is not float32' });
    layers.push(layer);
  });
  return { layers, skipped };
}
