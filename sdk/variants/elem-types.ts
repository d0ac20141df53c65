/**
 * Element types of every tensor of a model's main graph, as ONNX Runtime infers them: a copy of
 * the model lists each node output as an untyped graph output, and ORT's full ONNX type
 * inference fills in the types when a session is created (nothing is run, no inputs needed).
 * Also the types ORT's CPU kernels force: `cpuFloat16Fallbacks` finds the nodes around which ORT
 * inserts float32 Casts because it has no float16 kernel for them.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';
import { DataType, dataTypeFromOrt } from '../onnx/dtype';
import { Model, loadModel } from '../onnx/model';
import { newValueInfo } from '../onnx/proto';

async function createSession(bytes: Uint8Array, options: ort.InferenceSession.SessionOptions, what: string): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(bytes, { logSeverityLevel: 3, ...options });
  } catch (e) {
    throw new QuantbookError('RUNTIME_ERROR', `${what}: ONNX Runtime refused the model: ${(e as Error).message}`, { cause: e });
  }
}

/** Element type of every tensor of the main graph: inputs, initializers and node outputs. */
export async function inferElemTypes(model: Model): Promise<Map<string, DataType>> {
  const copy = model.clone();
  const g = copy.proto.graph!;
  const types = new Map<string, DataType>();
  for (const t of g.initializer) types.set(t.name ?? '', t.data_type ?? DataType.UNDEFINED);
  for (const v of g.input) if (v.type?.tensor_type?.elem_type) types.set(v.name ?? '', v.type.tensor_type.elem_type);
  const listed = new Set(g.output.map((v) => v.name));
  for (const n of g.node) for (const o of n.output) if (o && !listed.has(o)) { g.output.push(newValueInfo({ name: o })); listed.add(o); }
  const session = await createSession(copy.toBytes(), { graphOptimizationLevel: 'disabled' }, 'element type inference');
  try {
    for (const m of session.outputMetadata) {
      if (m.isTensor && !types.has(m.name)) types.set(m.name, dataTypeFromOrt(m.type));
    }
  } finally {
    await session.release();
  }
  return types;
}

/**
 * Names of the nodes of `model`'s main graph (every node must be named) that ORT's CPU execution
 * provider runs in float32 behind Casts it inserts itself (InsertCastTransformer): the float16
 * inputs of the optimized graph reach them through a Cast that the model does not have.
 */
export async function cpuFloat16Fallbacks(model: Model): Promise<Set<string>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quantbook-fp16-probe-'));
  const file = path.join(dir, 'optimized.onnx');
  try {
    const session = await createSession(model.toBytes(), { graphOptimizationLevel: 'disabled', optimizedModelFilePath: file }, 'float16 kernel probe');
    await session.release();
    const optimized = loadModel(file).proto.graph!;
    const own = new Set(model.proto.graph!.node.map((n) => n.name));
    const inserted = new Set<string>();
    // the Casts ORT inserts to float32 in front of a node it has no float16 kernel for (and back to float16 after it)
    const toFloat = (n: typeof optimized.node[number]) => n.attribute.some((a) => a.name === 'to' && Number(a.i) === DataType.FLOAT);
    for (const n of optimized.node) if (n.op_type === 'Cast' && !own.has(n.name) && toFloat(n)) for (const o of n.output) inserted.add(o);
    const out = new Set<string>();
    for (const n of optimized.node) {
      if (n.op_type === 'Cast' && !own.has(n.name)) continue;
      if (n.input.some((i) => inserted.has(i))) out.add(n.name ?? '');
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
