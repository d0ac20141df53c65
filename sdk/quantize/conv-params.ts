/**
 * A Conv's constant weight and bias as editable float copies, for the passes that fold other
 * nodes into a Conv (BatchNormalization, constant affine steps).
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

/** Copies of the Conv's weight and bias, if both are float constants no other node reads; else undefined. */
export function foldableConvParams(g: Graph, conv: NodeProto): ConvParams | undefined {
  const w = g.constantValue(conv.input[1]);
  if (!w || w.type !== DataType.FLOAT || g.consumers(conv.input[1]).length !== 1) return undefined;
  const b = conv.input[2] ? g.constantValue(conv.input[2]) : undefined;
  if (conv.input[2] && (!b || b.type !== DataType.FLOAT || g.consumers(conv.input[2]).length !== 1)) return undefined;
  const weight = new Float32Array(w.data as Float32Array);
  const cout = w.dims[0];
  return { weight, bias: b ? new Float32Array(b.data as Float32Array) : new Float32Array(cout), dims: [...w.dims], cout, per: weight.length / cout };
}

/** Writes the parameters back, adding a bias input when the Conv had none. */
export function writeConvParams(g: Graph, conv: NodeProto, p: ConvParams): void {
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
