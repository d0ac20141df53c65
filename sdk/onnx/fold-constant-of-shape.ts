/**
 * ConstantOfShape nodes that produce a layer's parameters (some exporters write a zero bias as
 * `ConstantOfShape([C])`) become initializers, so the layer reads a constant: its BatchNorm can
 * fold into it and it can be quantized (a bias the quantizer cannot read is a layer kept float).
 * Only where every reader takes the tensor as a parameter (not as data), and the shape is small:
 * a ConstantOfShape that builds an activation-sized buffer (a KV cache, a mask) stays a node.
 */
import { DataType } from './dtype';
import { Graph } from './graph';
import { Model } from './model';
import { elementCount, readTensor } from './tensor';

/** op type → the input positions that are parameters */
const PARAMETER_INPUTS: Record<string, number[]> = {
  Conv: [1, 2], ConvTranspose: [1, 2], Gemm: [1, 2], BatchNormalization: [1, 2, 3, 4], LayerNormalization: [1, 2], InstanceNormalization: [1, 2],
};

const MAX_ELEMENTS = 1 << 16;

function foldIn(g: Graph): number {
  let folded = 0;
  for (const node of [...g.nodes]) {
    if (node.op_type !== 'ConstantOfShape' || !node.input[0] || !g.isConstant(node.input[0])) continue;
    const out = node.output[0];
    const readers = g.consumers(out);
    if (!readers.length || g.outputNames.includes(out)) continue;
    if (!readers.every((r) => r.input.every((name, i) => name !== out || (PARAMETER_INPUTS[r.op_type ?? ''] ?? []).includes(i)))) continue;
    const dims = Array.from(g.constantValue(node.input[0])!.data as ArrayLike<number | bigint>, Number);
    if (dims.some((d) => !(d >= 0)) || elementCount(dims) > MAX_ELEMENTS) continue;
    // the fill value: a one-element tensor attribute, float 0 when absent (the ONNX default)
    const t = node.attribute.find((a) => a.name === 'value')?.t;
    const value = t ? readTensor(t) : { type: DataType.FLOAT, data: Float32Array.of(0) };
    if (value.type !== DataType.FLOAT) continue; // non-float parameters: nothing here quantizes them
    const data = new Float32Array(elementCount(dims)).fill(Number((value.data as Float32Array)[0] ?? 0));
    g.replaceNodeWithConstant(node, { type: DataType.FLOAT, dims, data });
    folded++;
  }
  return folded;
}

/** Folds parameter-producing ConstantOfShape nodes of the main graph; returns how many. */
export function foldConstantOfShape(model: Model): number {
  return foldIn(model.graph);
}
