/**
 * float16 models computed in float32: every float16 constant, Cast target and declared value
 * type inside the graph (bodies included) becomes float32, and float16 graph inputs/outputs
 * keep their type behind a Cast, so callers feed and read what they did before. Quantization
 * then works on one float type; float32 holds every float16 value exactly, so the float model
 * only gains precision in the ops between the quantized layers.
 */
import { DataType } from './dtype';
import { Model } from './model';
import { makeAttribute, renameReads } from './graph';
import { AttributeProto, NodeProto, TensorProto, TypeProto, ValueInfoProto, newNode } from './proto';
import { makeTensor, readTensorAsFloat32 } from './tensor';
import { scopes } from './scopes';

function promoteTensor(t: TensorProto, baseDir?: string): TensorProto {
  if (t.data_type !== DataType.FLOAT16) return t;
  return makeTensor(t.name ?? '', DataType.FLOAT, t.dims.map(Number), readTensorAsFloat32(t, baseDir));
}

function promoteType(type: TypeProto | undefined): void {
  if (!type) return;
  if (type.tensor_type?.elem_type === DataType.FLOAT16) type.tensor_type.elem_type = DataType.FLOAT;
  promoteType(type.sequence_type?.elem_type);
  promoteType(type.optional_type?.elem_type);
}

function promoteAttribute(a: AttributeProto, baseDir?: string): void {
  if (a.t) a.t = promoteTensor(a.t, baseDir);
  if (a.tensors?.length) a.tensors = a.tensors.map((t) => promoteTensor(t, baseDir));
}

/** True when the model holds float16 tensors or values anywhere. */
export function hasFloat16(model: Model): boolean {
  const isF16 = (v: ValueInfoProto) => v.type?.tensor_type?.elem_type === DataType.FLOAT16;
  return scopes(model).some(({ graph: g }) => g.proto.initializer.some((t) => t.data_type === DataType.FLOAT16)
    || [...g.proto.input, ...g.proto.output, ...g.proto.value_info].some(isF16)
    || g.proto.node.some((n) => (n.op_type === 'Cast' && n.attribute.some((a) => a.name === 'to' && Number(a.i) === DataType.FLOAT16))
      || n.attribute.some((a) => a.t?.data_type === DataType.FLOAT16)));
}

/** Rewrites `model` in place to compute in float32 (see the module comment). Returns it. */
export function promoteFloat16(model: Model): Model {
  if (!hasFloat16(model)) return model;
  const main = model.graph.proto;
  const names = model.graph.nameSource();
  // the public inputs and outputs keep float16: Casts at the border
  const inCasts: NodeProto[] = [];
  const outCasts: NodeProto[] = [];
  const renames = new Map<string, string>();
  for (const v of main.input) {
    if (v.type?.tensor_type?.elem_type !== DataType.FLOAT16 || main.initializer.some((t) => t.name === v.name)) continue;
    const inner = names.fresh(`${v.name}_float32`);
    renames.set(v.name!, inner);
    inCasts.push(newNode({ op_type: 'Cast', name: names.fresh(`${v.name}_to_float32`), input: [v.name!], output: [inner], attribute: [makeAttribute('to', DataType.FLOAT)] }));
  }
  for (const v of main.output) {
    if (v.type?.tensor_type?.elem_type !== DataType.FLOAT16) continue;
    const inner = names.fresh(`${v.name}_float32`);
    for (const n of main.node) {
      n.output = n.output.map((o) => (o === v.name ? inner : o));
      renameReads(n, v.name!, inner);
    }
    outCasts.push(newNode({ op_type: 'Cast', name: names.fresh(`${v.name}_to_float16`), input: [inner], output: [v.name!], attribute: [makeAttribute('to', DataType.FLOAT16)] }));
  }
  for (const n of main.node) for (const [from, to] of renames) renameReads(n, from, to);
  const io = new Set([...main.input, ...main.output]);
  for (const { graph } of scopes(model)) {
    const g = graph.proto;
    g.initializer = g.initializer.map((t) => promoteTensor(t, model.baseDir));
    for (const v of [...g.input, ...g.output, ...g.value_info]) if (!(g === main && io.has(v))) promoteType(v.type);
    for (const n of g.node) {
      for (const a of n.attribute) {
        promoteAttribute(a, model.baseDir);
        if (n.op_type === 'Cast' && a.name === 'to' && Number(a.i) === DataType.FLOAT16) a.i = DataType.FLOAT;
      }
    }
  }
  main.node = [...inCasts, ...main.node, ...outCasts];
  main.value_info = main.value_info.filter((v) => !io.has(v));
  model.graph.invalidate(); // and with it the bodies' indexes
  return model;
}
