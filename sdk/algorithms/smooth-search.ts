/**
 * The int8 output error of many candidate scalings at once, computed by ONNX Runtime.
 *
 * For a group (activation X read by layers with weights W, columns of all layers side by side:
 * columns quantize independently and the error sums over them), candidate c is a per-channel
 * scale s_c, and its error is ‖X·W − Q(X/s_c)·Q(s_c·W)‖² with X on uint8 per tensor and W on int8
 * per output column, as W8A8 quantizes. One small ONNX model computes that for a batch of
 * candidates ([C, K] in, [C] out): the m6 grid search becomes one or a few ORT runs on the cached
 * sample instead of hundreds of JavaScript matrix products.
 */
import * as ort from 'onnxruntime-node';
import { DataType } from '../onnx/dtype';
import { makeAttribute } from '../onnx/graph';
import { encodeModel, newGraph, newModel, newNode, newValueInfo } from '../onnx/proto';
import { makeTensor } from '../onnx/tensor';

/** floats the intermediates of one run may hold (C · (rows · (K + N) + K · N)): ~32 MB each, a few alive at once */
const FLOATS_PER_RUN = 8_000_000;

/** The scoring model: the group's sample, columns and reference are inputs, so one session serves every group. */
function errorModel(): Uint8Array {
  const c = (name: string, dims: number[], data: Float32Array | BigInt64Array) => makeTensor(name, data instanceof BigInt64Array ? DataType.INT64 : DataType.FLOAT, dims, data);
  const input = (name: string, dims: Array<string | number>) => newValueInfo({ name, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } } });
  const nodes = [
    // X / s, then uint8 asymmetric per tensor (range includes 0), per candidate
    newNode({ op_type: 'Reshape', input: ['s', 'row_shape'], output: ['s_row'] }),
    newNode({ op_type: 'Div', input: ['x', 's_row'], output: ['xs'] }),
    newNode({ op_type: 'ReduceMin', input: ['xs'], output: ['xmin'], attribute: [makeAttribute('axes', [1, 2])] }),
    newNode({ op_type: 'ReduceMax', input: ['xs'], output: ['xmax'], attribute: [makeAttribute('axes', [1, 2])] }),
    newNode({ op_type: 'Min', input: ['xmin', 'zero'], output: ['lo'] }),
    newNode({ op_type: 'Max', input: ['xmax', 'zero'], output: ['hi'] }),
    newNode({ op_type: 'Sub', input: ['hi', 'lo'], output: ['span'] }),
    newNode({ op_type: 'Div', input: ['span', 'u8_levels'], output: ['sx_raw'] }),
    newNode({ op_type: 'Max', input: ['sx_raw', 'tiny'], output: ['sx'] }),
    newNode({ op_type: 'Neg', input: ['lo'], output: ['neg_lo'] }),
    newNode({ op_type: 'Div', input: ['neg_lo', 'sx'], output: ['zp_raw'] }),
    newNode({ op_type: 'Round', input: ['zp_raw'], output: ['zp'] }),
    newNode({ op_type: 'Div', input: ['xs', 'sx'], output: ['xd'] }),
    newNode({ op_type: 'Round', input: ['xd'], output: ['xr'] }),
    newNode({ op_type: 'Add', input: ['xr', 'zp'], output: ['xz'] }),
    newNode({ op_type: 'Clip', input: ['xz', 'zero', 'u8_levels'], output: ['xc'] }),
    newNode({ op_type: 'Sub', input: ['xc', 'zp'], output: ['xi'] }),
    newNode({ op_type: 'Mul', input: ['xi', 'sx'], output: ['xq'] }),
    // s · W, then int8 symmetric per output column, per candidate
    newNode({ op_type: 'Reshape', input: ['s', 'col_shape'], output: ['s_col'] }),
    newNode({ op_type: 'Mul', input: ['w', 's_col'], output: ['ws'] }),
    newNode({ op_type: 'Abs', input: ['ws'], output: ['wabs'] }),
    newNode({ op_type: 'ReduceMax', input: ['wabs'], output: ['wmax'], attribute: [makeAttribute('axes', [1])] }),
    newNode({ op_type: 'Div', input: ['wmax', 'i8_max'], output: ['sw_raw'] }),
    newNode({ op_type: 'Max', input: ['sw_raw', 'tiny'], output: ['sw'] }),
    newNode({ op_type: 'Div', input: ['ws', 'sw'], output: ['wd'] }),
    newNode({ op_type: 'Round', input: ['wd'], output: ['wr'] }),
    newNode({ op_type: 'Clip', input: ['wr', 'i8_min', 'i8_max'], output: ['wc'] }),
    newNode({ op_type: 'Mul', input: ['wc', 'sw'], output: ['wq'] }),
    // ‖Q(X/s)·Q(s·W) − X·W‖² per candidate (X·W once, in float32 as the model computes it)
    newNode({ op_type: 'MatMul', input: ['x', 'w'], output: ['reference'] }),
    newNode({ op_type: 'MatMul', input: ['xq', 'wq'], output: ['y'] }),
    newNode({ op_type: 'Sub', input: ['y', 'reference'], output: ['d'] }),
    newNode({ op_type: 'ReduceSumSquare', input: ['d'], output: ['error'], attribute: [makeAttribute('axes', [1, 2]), makeAttribute('keepdims', 0)] }),
  ];
  const graph = newGraph({
    name: 'smoothing_candidates',
    node: nodes,
    input: [input('s', ['C', 'K']), input('x', [1, 'R', 'K']), input('w', [1, 'K', 'N'])],
    output: [newValueInfo({ name: 'error', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'C' }] } } } })],
    initializer: [
      c('row_shape', [3], BigInt64Array.of(0n, 1n, -1n)), c('col_shape', [3], BigInt64Array.of(0n, -1n, 1n)),
      c('zero', [], Float32Array.of(0)), c('tiny', [], Float32Array.of(1e-30)), c('u8_levels', [], Float32Array.of(255)),
      c('i8_min', [], Float32Array.of(-128)), c('i8_max', [], Float32Array.of(127)),
    ],
  });
  return encodeModel(newModel({ ir_version: 7, opset_import: [{ domain: '', version: 13 }], producer_name: 'quantbook', graph }));
}

// sessions outlive a search: creating one costs more than scoring a group's grid on the
// transformer, so every group and every smoothing run in the process shares it (per provider list)
const sessions = new Map<string, Promise<ort.InferenceSession>>();

function scoringSession(executionProviders: ort.InferenceSession.SessionOptions['executionProviders'] = ['cpu']): Promise<ort.InferenceSession> {
  const key = JSON.stringify(executionProviders);
  let session = sessions.get(key);
  if (!session) {
    session = ort.InferenceSession.create(errorModel(), { executionProviders });
    session.catch(() => sessions.delete(key));
    sessions.set(key, session);
  }
  return session;
}

export class CandidateErrors {
  private constructor(private readonly session: ort.InferenceSession, private readonly k: number, private readonly perRun: number, private readonly data: Record<string, ort.Tensor>) {}

  /** `x`: [rows, K] sample; `w`: [K, N] row-major (the group's sampled columns side by side). */
  static async create(x: Float32Array, rows: number, k: number, w: Float32Array, n: number, executionProviders?: ort.InferenceSession.SessionOptions['executionProviders']): Promise<CandidateErrors> {
    const perCandidate = rows * (k + n) + k * n;
    const data = { x: new ort.Tensor('float32', x, [1, rows, k]), w: new ort.Tensor('float32', w, [1, k, n]) };
    return new CandidateErrors(await scoringSession(executionProviders), k, Math.max(1, Math.floor(FLOATS_PER_RUN / perCandidate)), data);
  }

  /** The error of each candidate scaling (K scales each). */
  async errors(candidates: ArrayLike<number>[]): Promise<number[]> {
    const out: number[] = [];
    for (let at = 0; at < candidates.length; at += this.perRun) {
      const part = candidates.slice(at, at + this.perRun);
      const s = new Float32Array(part.length * this.k);
      part.forEach((v, i) => s.set(Array.from(v), i * this.k));
      const r = await this.session.run({ ...this.data, s: new ort.Tensor('float32', s, [part.length, this.k]) });
      out.push(...(r.error.data as Float32Array));
    }
    return out;
  }

  /** The session is shared (scoringSession); nothing of its own to release. */
  dispose(): Promise<void> {
    return Promise.resolve();
  }
}
