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

function errorModel(x: Float32Array, rows: number, k: number, w: Float32Array, n: number, reference: Float32Array): Uint8Array {
  const c = (name: string, dims: number[], data: Float32Array | BigInt64Array) => makeTensor(name, data instanceof BigInt64Array ? DataType.INT64 : DataType.FLOAT, dims, data);
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
    // ‖Q(X/s)·Q(s·W) − X·W‖² per candidate
    newNode({ op_type: 'MatMul', input: ['xq', 'wq'], output: ['y'] }),
    newNode({ op_type: 'Sub', input: ['y', 'reference'], output: ['d'] }),
    newNode({ op_type: 'ReduceSumSquare', input: ['d'], output: ['error'], attribute: [makeAttribute('axes', [1, 2]), makeAttribute('keepdims', 0)] }),
  ];
  const graph = newGraph({
    name: 'smoothing_candidates',
    node: nodes,
    input: [newValueInfo({ name: 's', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'C' }, { dim_value: k }] } } } })],
    output: [newValueInfo({ name: 'error', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'C' }] } } } })],
    initializer: [
      c('x', [1, rows, k], x), c('w', [1, k, n], w), c('reference', [1, rows, n], reference),
      c('row_shape', [3], BigInt64Array.of(0n, 1n, -1n)), c('col_shape', [3], BigInt64Array.of(0n, -1n, 1n)),
      c('zero', [], Float32Array.of(0)), c('tiny', [], Float32Array.of(1e-30)), c('u8_levels', [], Float32Array.of(255)),
      c('i8_min', [], Float32Array.of(-128)), c('i8_max', [], Float32Array.of(127)),
    ],
  });
  return encodeModel(newModel({ ir_version: 7, opset_import: [{ domain: '', version: 13 }], producer_name: 'quantbook', graph }));
}

export class CandidateErrors {
  private constructor(private readonly session: ort.InferenceSession, private readonly k: number, private readonly perRun: number) {}

  /** `w`: [K, N] row-major (the group's sampled columns side by side); `reference`: X·W, [rows, N]. */
  static async create(x: Float32Array, rows: number, k: number, w: Float32Array, n: number, reference: Float32Array, executionProviders?: ort.InferenceSession.SessionOptions['executionProviders']): Promise<CandidateErrors> {
    const perCandidate = rows * (k + n) + k * n;
    return new CandidateErrors(await ort.InferenceSession.create(errorModel(x, rows, k, w, n, reference), { executionProviders: executionProviders ?? ['cpu'] }), k, Math.max(1, Math.floor(FLOATS_PER_RUN / perCandidate)));
  }

  /** The error of each candidate scaling (K scales each). */
  async errors(candidates: ArrayLike<number>[]): Promise<number[]> {
    const out: number[] = [];
    for (let at = 0; at < candidates.length; at += this.perRun) {
      const part = candidates.slice(at, at + this.perRun);
      const s = new Float32Array(part.length * this.k);
      part.forEach((v, i) => s.set(Array.from(v), i * this.k));
      const r = await this.session.run({ s: new ort.Tensor('float32', s, [part.length, this.k]) });
      out.push(...(r.error.data as Float32Array));
    }
    return out;
  }

  dispose(): Promise<void> {
    return this.session.release();
  }
}
