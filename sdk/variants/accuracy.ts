/**
 * How close a variant's outputs stay to the fp32 model's: output SQNR (dB) and cosine over every
 * float output and batch, per output and for all outputs together, on given inputs or on virtual
 * ones made from the model's input types and shapes. The variant must keep the fp32 model's
 * input and output names and types (a caller swaps files without changing code).
 */
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';
import { DataType, float16BitsToNumber } from '../onnx/dtype';
import { Model } from '../onnx/model';
import { OutputErrorAccumulator } from '../eval/metrics';
import type { Feeds } from '../runtime/runner';
import { seededNormal, seededRandom } from '../util/seeded-random';

export interface OutputAccuracy { name: string; sqnrDb: number; cosine: number; maxAbsError: number }
export interface VariantAccuracy { sqnrDb: number; cosine: number; maxAbsError: number; outputs: OutputAccuracy[]; batches: number }

/** the batch size virtual inputs use for a symbolic first dimension */
export const VIRTUAL_BATCH = 2;
/** the size virtual inputs use for any other symbolic dimension (sequence, past length…) */
export const VIRTUAL_DIM = 8;

/**
 * Seeded virtual inputs: a symbolic first dimension is VIRTUAL_BATCH, other symbolic dimensions
 * VIRTUAL_DIM (one value per dimension name). Float inputs: standard normal values. Integer inputs:
 * indices into the table a Gather reads them with (token ids), ones for masks, 0…n−1 for
 * positions, zeros otherwise. Bool: true.
 */
export function variantInputs(model: Model, batches = 2, seed = 0): { feeds: Feeds[]; description: string } {
  const g = model.graph;
  const random = seededRandom(seed);
  const normal = seededNormal(random);
  const named = new Map<string, number>();
  const shapes = g.inputNames.map((name) => {
    const type = g.valueType(name);
    if (!type) throw new QuantbookError('INVALID_ARGUMENT', `virtual inputs: input "${name}" declares no type; pass data`);
    const shape = type.shape;
    if (!shape) throw new QuantbookError('INVALID_ARGUMENT', `virtual inputs: input "${name}" declares no shape; pass data`);
    return shape.map((d, i) => {
      if (typeof d === 'number' && d > 0) return d;
      const base = i === 0 ? VIRTUAL_BATCH : VIRTUAL_DIM;
      if (typeof d === 'string' && d) {
        if (!named.has(d)) named.set(d, base);
        return named.get(d)!;
      }
      return base;
    });
  });
  const tableRows = (input: string): number | undefined => {
    for (const n of g.consumers(input)) {
      if (n.op_type === 'Gather' && n.input[1] === input && g.isConstant(n.input[0])) return g.valueType(n.input[0])?.shape?.[0] as number | undefined;
    }
    return undefined;
  };
  const feeds = Array.from({ length: batches }, () => Object.fromEntries(g.inputNames.map((name, k) => {
    const dims = shapes[k];
    const n = dims.reduce((a, b) => a * b, 1);
    const elem = g.valueType(name)!.elemType;
    if (elem === DataType.FLOAT) return [name, new ort.Tensor('float32', Float32Array.from({ length: n }, normal), dims)];
    if (elem === DataType.FLOAT16) throw new QuantbookError('INVALID_ARGUMENT', `virtual inputs: input "${name}" is float16; pass data`);
    if (elem === DataType.BOOL) return [name, new ort.Tensor('bool', new Uint8Array(n).fill(1), dims)];
    const rows = tableRows(name);
    const last = dims[dims.length - 1] ?? 1;
    const value = (i: number) => (rows ? Math.floor(random() * rows) : /mask/i.test(name) ? 1 : /position/i.test(name) ? i % last : 0);
    if (elem === DataType.INT64) return [name, new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(value(i))), dims)];
    if (elem === DataType.INT32) return [name, new ort.Tensor('int32', Int32Array.from({ length: n }, (_, i) => value(i)), dims)];
    throw new QuantbookError('INVALID_ARGUMENT', `virtual inputs: input "${name}" is ${DataType[elem]}; pass data`);
  })) as Feeds);
  return { feeds, description: `${batches} batches of seeded virtual inputs (${g.inputNames.map((n, k) => `${n} [${shapes[k].join(', ')}]`).join(', ')})` };
}

function floats(t: ort.Tensor): Float32Array | undefined {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, float16BitsToNumber);
  return undefined;
}

async function open(model: Uint8Array, what: string): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(model, { logSeverityLevel: 3 });
  } catch (e) {
    throw new QuantbookError('RUNTIME_ERROR', `${what}: ONNX Runtime (CPU) cannot load it: ${(e as Error).message}`, { cause: e });
  }
}

/** Runs the fp32 model and the variant on each batch and compares every float output. */
export async function measureAccuracy(reference: Uint8Array, variant: Uint8Array, batches: Feeds[], what = 'variant'): Promise<VariantAccuracy> {
  if (!batches.length) throw new QuantbookError('INVALID_ARGUMENT', `${what}: no input batches to compare on`);
  const [ref, test] = [await open(reference, 'fp32 model'), await open(variant, what)];
  try {
    const sig = (s: ort.InferenceSession) => [...s.inputMetadata, ...s.outputMetadata].map((m) => `${m.name}:${m.isTensor ? m.type : '-'}`).join(', ');
    if (sig(ref) !== sig(test)) throw new QuantbookError('RUNTIME_ERROR', `${what}: inputs/outputs differ from the fp32 model's: ${sig(test)} instead of ${sig(ref)}`);
    const all = new OutputErrorAccumulator();
    const per = new Map<string, OutputErrorAccumulator>();
    for (const feeds of batches) {
      const r = await ref.run(feeds);
      const t = await test.run(feeds);
      for (const name of ref.outputNames) {
        const [a, b] = [floats(r[name]), floats(t[name])];
        if (!a || !b) continue;
        if (a.length !== b.length) throw new QuantbookError('RUNTIME_ERROR', `${what}: output "${name}" has ${b.length} values, the fp32 model's ${a.length}`);
        all.add(a, b);
        if (!per.has(name)) per.set(name, new OutputErrorAccumulator());
        per.get(name)!.add(a, b);
      }
    }
    if (!per.size) throw new QuantbookError('UNSUPPORTED', `${what}: the model has no float outputs to compare`);
    return { ...all.result(), outputs: [...per].map(([name, acc]) => ({ name, ...acc.result() })), batches: batches.length };
  } finally {
    await ref.release();
    await test.release();
  }
}
