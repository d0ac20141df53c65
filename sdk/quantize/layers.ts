/**
 * Which layers get quantized: the AMCT set (Conv, ConvTranspose, Gemm, MatMul, AveragePool,
 * GlobalAveragePool), minus layers whose weight is shared with another layer, minus the
 * user's disable_names (exact names or globs; a pattern matching no layer is an error).
 * With `subgraphs`, layers inside If/Loop/Scan bodies are selected too: they carry their
 * scope, and their weights may live in an enclosing graph (outer-scope reads).
 */
import { QuantbookError } from '../errors';
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto } from '../onnx/proto';
import { Scope, definingGraph, scopedKey, scopes } from '../onnx/scopes';

export const QUANTIZABLE_OP_TYPES = ['Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'AveragePool', 'GlobalAveragePool'] as const;

/** Recurrent layers: listed as kept float (ONNX Runtime runs no QDQ form of them). */
export const RECURRENT_OP_TYPES = ['LSTM', 'GRU', 'RNN'] as const;
/** Recurrent layers get no QDQ: LSTMs go int8 by another route (lstm.ts), GRU/RNN stay float. */
const recurrentReason = (op: string) => (op === 'LSTM'
  ? 'LSTM: no QDQ kernel in ONNX Runtime; quantized instead as com.microsoft.DynamicQuantizeLSTM (int8 weights, activations quantized at run time) unless disabled'
  : `${op}: ONNX Runtime has no int8 kernel for it (com.microsoft.DynamicQuantizeLSTM covers LSTM only); kept float`);

export interface QuantLayer {
  node: NodeProto;
  /** the node's name; inside a body, prefixed with the body's scope path when the bare name is taken */
  name: string;
  /** the graph the node is in (absent: the main graph) */
  scope?: Scope;
  opType: string;
  /** activation inputs (quantized per tensor) */
  activations: string[];
  /** constant weight input, quantized per channel along weightAxis */
  weight?: string;
  weightAxis?: number;
  /** constant bias input (Conv, ConvTranspose, Gemm) */
  bias?: string;
}

export interface LayerSelection {
  layers: QuantLayer[];
  /** `scope`: the If/Loop/Scan body path of a layer kept float inside one (absent: the main graph) */
  skipped: Array<{ name: string; opType: string; reason: string; scope?: string }>;
}

export interface SelectOptions {
  /** also select layers inside If/Loop/Scan bodies (default false: they are listed as skipped, with the reason) */
  subgraphs?: boolean;
}

/** The graph a layer's node is in. */
export function layerGraph(model: Model, layer: QuantLayer): Graph {
  return layer.scope?.graph ?? model.graph;
}

/** How a layer's tensor is named outside its body (see onnx/scopes). */
export function layerTensorKey(layer: QuantLayer, tensor: string): string {
  return layer.scope ? scopedKey(layer.scope, tensor) : tensor;
}

/** A constant read by a node of `g`: defined in `g` or in an enclosing graph. */
function constantFrom(g: Graph, tensor: string) {
  const owner = definingGraph(g, tensor);
  return owner && owner.isConstant(tensor) ? owner.constantValue(tensor) : undefined;
}

export function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

export function selectLayers(model: Model, disableNames: string[] = [], options: SelectOptions = {}): LayerSelection {
  if (!Array.isArray(disableNames) || disableNames.some((n) => typeof n !== 'string')) {
    throw new QuantbookError('INVALID_ARGUMENT', `disable_names: expected a list of layer names or glob patterns, got ${JSON.stringify(disableNames)}`);
  }
  const isCandidate = (n: NodeProto) => (QUANTIZABLE_OP_TYPES as readonly string[]).includes(n.op_type!) && (n.domain ?? '') === '';
  const isRecurrent = (n: NodeProto) => (RECURRENT_OP_TYPES as readonly string[]).includes(n.op_type!);
  const found: Array<{ node: NodeProto; scope: Scope }> = [];
  const skipped: LayerSelection['skipped'] = [];
  for (const scope of scopes(model)) {
    const where = scope.path ? { scope: scope.path } : {};
    for (const node of scope.graph.nodes) {
      if (isCandidate(node)) found.push({ node, scope });
      else if (isRecurrent(node)) skipped.push({ name: node.name || node.output[0], opType: node.op_type!, reason: recurrentReason(node.op_type!), ...where });
    }
  }
  // LSTMs can be named in disable_names too (lstm.ts quantizes them unless disabled)
  const recurrentNames = skipped.filter((s) => s.opType === 'LSTM').map((s) => s.name);
  // a body layer keeps its bare name unless another layer has it (sibling branches often do)
  const bare = found.map(({ node }) => node.name || node.output[0]);
  const taken = new Map<string, number>();
  for (const b of bare) taken.set(b, (taken.get(b) ?? 0) + 1);
  const names = found.map(({ scope }, i) => (scope.path && taken.get(bare[i])! > 1 ? `${scope.path}/${bare[i]}` : bare[i]));
  const candidates = found.map((f) => f.node);
  const patterns = disableNames.map((p) => ({ p, re: globToRegExp(p) }));
  const unmatched = patterns.filter(({ re }) => !names.some((n) => re.test(n)) && !recurrentNames.some((n) => re.test(n))).map(({ p }) => p);
  for (const s of skipped) if (s.opType === 'LSTM' && patterns.some(({ re }) => re.test(s.name))) s.reason = 'disable_names';
  if (unmatched.length) {
    throw new QuantbookError('INVALID_ARGUMENT', `disable_names: ${unmatched.map((p) => `"${p}"`).join(', ')} match${unmatched.length === 1 ? 'es' : ''} no quantizable layer; quantizable layers are ${names.slice(0, 12).map((n) => `"${n}"`).join(', ')}${names.length > 12 ? `, … (${names.length} in all)` : ''}`);
  }
  const layers: QuantLayer[] = [];
  candidates.forEach((n, i) => {
    const name = names[i];
    const op = n.op_type!;
    const scope = found[i].scope;
    const g = scope.graph;
    const skip = (reason: string) => skipped.push({ name, opType: op, reason, ...(scope.path ? { scope: scope.path } : {}) });
    if (patterns.some(({ re }) => re.test(name))) return skip('disable_names');
    if (scope.path && !options.subgraphs) return skip(`inside the ${scope.chain[scope.chain.length - 1].node.op_type} body ${scope.path} (this processor quantizes the main graph only)`);
    const layer: QuantLayer = { node: n, name, opType: op, activations: [], ...(scope.path ? { scope } : {}) };
    const isConstant = (t: string) => constantFrom(g, t) !== undefined;
    if (op === 'AveragePool' || op === 'GlobalAveragePool') {
      layer.activations = [n.input[0]];
    } else if (op === 'MatMul' || op === 'Gemm') {
      const transB = op === 'Gemm' && attributeValue(n, 'transB') === 1;
      for (const [k, t] of n.input.slice(0, 2).entries()) {
        if (isConstant(t)) {
          if (k === 0) return skip('constant first input');
          layer.weight = t;
          // per output channel: MatMul/Gemm weight [K, N] → axis 1; Gemm with transB [N, K] → axis 0
          layer.weightAxis = transB ? 0 : (constantFrom(g, t)!.dims.length - 1);
        } else {
          layer.activations.push(t);
        }
      }
      if (op === 'Gemm' && (attributeValue(n, 'transA') === 1)) return skip('Gemm with transA');
      if (op === 'Gemm' && n.input[2]) {
        if (!isConstant(n.input[2])) return skip('non-constant bias');
        layer.bias = n.input[2];
      }
    } else {
      // Conv, ConvTranspose
      if (!isConstant(n.input[1])) return skip('weight is not a constant');
      const pad = attributeValue(n, 'auto_pad');
      if (pad !== undefined && pad !== 'NOTSET') return skip(`auto_pad ${pad}`);
      layer.activations = [n.input[0]];
      layer.weight = n.input[1];
      // Conv weights [Cout, Cin/g, ...] → axis 0; ConvTranspose [Cin, Cout/g, ...] → axis 1
      layer.weightAxis = op === 'ConvTranspose' ? 1 : 0;
      if (op === 'ConvTranspose' && ((attributeValue(n, 'group') as number | undefined) ?? 1) !== 1) {
        return skip('grouped ConvTranspose (per-channel axis spans groups)');
      }
      if (n.input[2]) {
        if (!isConstant(n.input[2])) return skip('non-constant bias');
        layer.bias = n.input[2];
      }
    }
    if (layer.weight && readersOf(definingGraph(g, layer.weight)!, layer.weight) > 1) return skip('weight shared with another layer');
    const weightType = layer.weight && constantFrom(g, layer.weight)!.type;
    if (weightType && weightType !== DataType.FLOAT) return skip(`weight is ${DataType[weightType]}, not float32`);
    layers.push(layer);
  });
  return { layers, skipped };
}

/** Nodes reading `tensor` anywhere below its defining graph (a body that reads it counts each reading node). */
function readersOf(g: Graph, tensor: string): number {
  let count = 0;
  g.walk((n, owner) => {
    // a body reading a name it defines itself is reading its own tensor, not this one
    if (owner !== g && definingGraph(owner, tensor) !== g) return;
    if (n.input.includes(tensor)) count++;
  });
  return count;
}

/**
 * Refuses a selection with nothing to quantize, naming why each candidate stays float (or that
 * the model has no candidate at all): writing the float model back as "quantized" would hide it.
 */
export function requireLayers(selection: LayerSelection, model: Model): void {
  if (selection.layers.length) return;
  const reasons = new Map<string, string[]>();
  for (const s of selection.skipped) reasons.set(s.reason, [...(reasons.get(s.reason) ?? []), s.name]);
  const why = [...reasons].map(([reason, names]) => `${names.length} ${names.length === 1 ? 'layer' : 'layers'} (${names.slice(0, 3).map((n) => `"${n}"`).join(', ')}${names.length > 3 ? ', …' : ''}): ${reason}`);
  const ops = new Set<string>();
  for (const s of scopes(model)) for (const n of s.graph.nodes) ops.add(n.op_type ?? '');
  throw new QuantbookError('UNSUPPORTED', why.length
    ? `no layer can be quantized: ${why.join('; ')}`
    : `no layer can be quantized: the model has none of ${QUANTIZABLE_OP_TYPES.join(', ')} (its operators: ${[...ops].sort().join(', ')})`);
}
