/**
 * Folds constant affine steps (x·a + b with constant a, b) into the Conv next to them, so that
 * neither the float model nor its quantized form spends a pass over the activation on them.
 *
 *   after a Conv   Conv → Mul(a) → Add(b)      W' = a·W, bias' = a·bias + b        (a, b scalar or per output channel)
 *   before a Conv  Mul(a) → Add(b) → Conv      W' = a·W, and the Add becomes Add(b/a); with no padding
 *                                              it goes too: bias' = bias + Σ W'·(b/a)   (a, b scalar)
 *
 * PP-LCNetV3 (the PP-OCRv4 backbones) has a learnable affine block after every Conv and every
 * hard-swish: 93 elementwise passes in rec that ONNX Runtime's own Conv fusions leave in place (its
 * profile shows them; paddle2onnx writes the constant as the first input). The input side keeps
 * an Add where the Conv pads, because padding zeros would otherwise become b/a.
 */
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { NodeProto } from '../onnx/proto';
import { Model } from '../onnx/model';
import { absorbIntoConv, foldableConvParams, soleReader, writeConvParams } from './conv-params';
import { removeUnusedConstants } from './fold-batchnorm';

export interface AffineFoldResult { folded: Array<{ conv: string; nodes: string[] }> }

export function foldAffineIntoConvs(model: Model): AffineFoldResult {
  const g = model.graph;
  const folded = new Map<NodeProto, string[]>();
  const note = (conv: NodeProto, n: NodeProto) => folded.set(conv, [...(folded.get(conv) ?? []), n.name ?? n.output[0]]);
  for (const conv of g.nodes.filter((n) => n.op_type === 'Conv')) {
    if (!foldableConvParams(g, conv)) continue;
    for (let next = soleAffineConsumer(g, conv.output[0]); next; next = soleAffineConsumer(g, conv.output[0])) {
      if (!foldAfter(g, conv, next)) break;
      note(conv, next.node);
    }
    for (let prev = affineProducer(g, conv.input[0]); prev; prev = affineProducer(g, conv.input[0])) {
      if (!foldBefore(g, conv, prev)) break;
      note(conv, prev.node);
    }
  }
  removeUnusedConstants(g);
  return { folded: [...folded].map(([conv, nodes]) => ({ conv: conv.name ?? '', nodes })) };
}

/** Mul or Add by a float constant: the constant's values and the other (data) input. */
function affineStep(g: Graph, n: NodeProto | undefined): { node: NodeProto; data: string; constant: Float32Array; dims: number[] } | undefined {
  if (!n || (n.op_type !== 'Mul' && n.op_type !== 'Add') || n.input.length !== 2) return undefined;
  for (const k of [0, 1]) {
    const c = g.constantValue(n.input[k]);
    if (c && c.type === DataType.FLOAT && !g.constantValue(n.input[1 - k])) return { node: n, data: n.input[1 - k], constant: c.data as Float32Array, dims: [...c.dims] };
  }
  return undefined;
}

function soleAffineConsumer(g: Graph, tensor: string) {
  const step = affineStep(g, soleReader(g, tensor));
  return step && step.data === tensor ? step : undefined;
}

function affineProducer(g: Graph, tensor: string) {
  const step = affineStep(g, g.producer(tensor));
  return step && soleReader(g, tensor) ? step : undefined;
}

/** Per-output-channel values of a constant that broadcasts over an N×C×… Conv output without changing its shape. */
export function perOutputChannel(values: Float32Array, dims: number[], cout: number, rank: number): Float32Array | undefined {
  if (values.length === 1) return new Float32Array(cout).fill(values[0]);
  if (dims.length > rank || values.length !== cout) return undefined;
  const aligned = [...new Array(rank - dims.length).fill(1), ...dims];
  return aligned.every((d, i) => d === (i === 1 ? cout : 1)) ? values : undefined;
}

function removeStep(g: Graph, n: NodeProto): void {
  g.proto.node.splice(g.proto.node.indexOf(n), 1);
  g.proto.value_info = g.proto.value_info.filter((v) => !n.output.includes(v.name ?? ''));
  g.invalidate();
}

function foldAfter(g: Graph, conv: NodeProto, step: NonNullable<ReturnType<typeof affineStep>>): boolean {
  const t = foldableConvParams(g, conv)!;
  const v = perOutputChannel(step.constant, step.dims, t.cout, t.dims.length);
  if (!v) return false;
  for (let c = 0; c < t.cout; c++) {
    if (step.node.op_type === 'Mul') {
      for (let i = 0; i < t.per; i++) t.weight[c * t.per + i] *= v[c];
      t.bias[c] *= v[c];
    } else {
      t.bias[c] += v[c];
    }
  }
  writeConvParams(g, conv, t);
  absorbIntoConv(g, conv, step.node);
  return true;
}

function hasNoPadding(conv: NodeProto): boolean {
  const autoPad = attributeValue(conv, 'auto_pad') as string | undefined;
  if (autoPad && autoPad !== 'NOTSET' && autoPad !== 'VALID') return false;
  const pads = attributeValue(conv, 'pads') as number[] | undefined;
  return !pads || pads.every((p) => p === 0);
}

function foldBefore(g: Graph, conv: NodeProto, step: NonNullable<ReturnType<typeof affineStep>>): boolean {
  if (step.constant.length !== 1) return false;
  const t = foldableConvParams(g, conv)!;
  if (step.node.op_type === 'Mul') {
    // x·a → Conv  ≡  x → Conv(a·W)
    scale(t.weight, step.constant[0]);
    writeConvParams(g, conv, t);
    conv.input[0] = step.data;
    removeStep(g, step.node);
    return true;
  }
  const b = step.constant[0];
  if (hasNoPadding(conv)) {
    // x + b → Conv  ≡  x → Conv with bias + b·ΣW per output channel (grouped or not)
    for (let c = 0; c < t.cout; c++) {
      let s = 0;
      for (let i = 0; i < t.per; i++) s += t.weight[c * t.per + i];
      t.bias[c] += b * s;
    }
    writeConvParams(g, conv, t);
    conv.input[0] = step.data;
    removeStep(g, step.node);
    return true;
  }
  // padded: x·a + b → Conv  ≡  (x + b/a) → Conv(a·W); the Add stays, the Mul goes
  const mul = affineProducer(g, step.data);
  if (!mul || mul.node.op_type !== 'Mul' || mul.constant.length !== 1 || mul.constant[0] === 0) return false;
  const a = mul.constant[0];
  scale(t.weight, a);
  writeConvParams(g, conv, t);
  const c = step.node.input.indexOf(step.data) === 0 ? 1 : 0;
  step.node.input[c] = g.addInitializer({ name: g.uniqueName(`${step.node.name || 'add'}_over_scale`), type: DataType.FLOAT, dims: step.dims, data: Float32Array.of(b / a) }).name!;
  step.node.input[1 - c] = mul.data;
  removeStep(g, mul.node);
  return true;
}

function scale(values: Float32Array, k: number): void {
  for (let i = 0; i < values.length; i++) values[i] *= k;
}
