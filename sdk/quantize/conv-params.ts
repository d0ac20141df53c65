/**
 * A Conv's constant weight and bias as editable float copies, for the passes that fold other
 * nodes into a Conv or ConvTranspose (BatchNormalization, constant affine steps).
 */
import { DataType } from '../onnx/dtype';
import { Graph } from '../onnx/graph';
import { NodeProto } from '../onnx/proto';

export interface ConvParams {
  weight: Float32Array;
  /** zeros when the Conv has no bias */
  bias: Float32Array;
  dims: number[];
  cout: number;
  /** weight values per output channel */
  per: number;
}

/** Float copies of a node's constant weight (input 1) and bias (input 2, if any), when no other node reads them; else undefined. */
export function ownedWeightAndBias(g: Graph, node: NodeProto): { weight: Float32Array; bias?: Float32Array; dims: number[] } | undefined {
  const w = g.constantValue(node.input[1]);
  if (!w || w.type !== DataType.FLOAT || g.consumers(node.input[1]).length !== 1) return undefined;
  const b = node.input[2] ? g.constantValue(node.input[2]) : undefined;
  if (node.input[2] && (!b || b.type !== DataType.FLOAT || g.consumers(node.input[2]).length !== 1)) return undefined;
  return { weight: new Float32Array(w.data as Float32Array), bias: b ? new Float32Array(b.data as Float32Array) : undefined, dims: [...w.dims] };
}

/** Copies of the Conv's weight and bias, if both are float constants no other node reads; else undefined. */
export function foldableConvParams(g: Graph, conv: NodeProto): ConvParams | undefined {
  const owned = ownedWeightAndBias(g, conv);
  if (!owned) return undefined;
  const cout = owned.dims[0];
  return { ...owned, bias: owned.bias ?? new Float32Array(cout), cout, per: owned.weight.length / cout };
}

/** A tensor's only reader, when the tensor is internal (not a graph output): the node a fold may absorb. */
export function soleReader(g: Graph, tensor: string): NodeProto | undefined {
  const readers = g.consumers(tensor);
  return readers.length === 1 && !g.outputNames.includes(tensor) ? readers[0] : undefined;
}

/** Writes the parameters back (Conv or ConvTranspose), adding a bias input when the node had none. */
export function writeConvParams(g: Graph, conv: NodeProto, p: Pick<ConvParams, 'weight' | 'bias' | 'dims' | 'cout'>): void {
  g.replaceInitializer(conv.input[1], { type: DataType.FLOAT, dims: p.dims, data: p.weight });
  if (conv.input[2]) g.replaceInitializer(conv.input[2], { type: DataType.FLOAT, dims: [p.cout], data: p.bias });
  else conv.input[2] = g.addInitializer({ name: g.uniqueName(`${conv.name || conv.output[0]}_bias`), type: DataType.FLOAT, dims: [p.cout], data: p.bias }).name!;
}

/** Removes `next` (folded into the Conv) and lets the Conv produce its output directly. */
export function absorbIntoConv(g: Graph, conv: NodeProto, next: NodeProto): void {
  const convOut = conv.output[0];
  conv.output[0] = next.output[0];
  g.proto.node.splice(g.proto.node.indexOf(next), 1);
  g.proto.value_info = g.proto.value_info.filter((v) => v.name !== convOut);
  g.invalidate();
}
