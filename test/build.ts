/** Builds small ONNX models in tests, for cases the real models do not cover. */
import { DataType, TensorData, makeTensor, proto } from '../sdk';

export interface TinyNode { op: string; inputs: string[]; outputs: string[]; name?: string; attrs?: proto.AttributeProto[] }

export function tinyModel(opts: {
  inputs: Array<{ name: string; type?: DataType; shape: Array<number | string> }>;
  outputs: string[];
  nodes: TinyNode[];
  initializers?: TensorData[];
  opset?: number;
}): Uint8Array {
  const vi = (name: string, type: DataType, shape: Array<number | string>) =>
    proto.newValueInfo({ name, type: { tensor_type: { elem_type: type, shape: { dim: shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } } });
  const graph = proto.newGraph({
    name: 'tiny',
    input: opts.inputs.map((i) => vi(i.name, i.type ?? DataType.FLOAT, i.shape)),
    output: opts.outputs.map((name) => proto.newValueInfo({ name })),
    node: opts.nodes.map((n, i) => proto.newNode({ op_type: n.op, input: n.inputs, output: n.outputs, name: n.name ?? `n${i}`, attribute: n.attrs ?? [] })),
    initializer: (opts.initializers ?? []).map((t) => makeTensor(t.name, t.type, t.dims, t.data)),
  });
  const model = proto.newModel({ ir_version: 8, producer_name: 'quantbook-test', opset_import: [{ domain: '', version: opts.opset ?? 13 }], graph });
  return proto.encodeModel(model);
}
