/**
 * ONNX operators as tfjs computations: one kernel per op type, each taking the node's input
 * tensors (undefined for an omitted optional input) and returning its outputs. Gradients come
 * from tfjs's autodiff, so every op here can be trained through.
 *
 * Integer tensors (shapes, indices; int64 in ONNX) are int32 tfjs tensors: tfjs has no int64,
 * and shape arithmetic never leaves int32's range.
 */
// tfjs-core, not the tfjs bundle: the same objects (tfjs re-exports core), and published types that do not pull in tfjs-layers
import * as tf from '@tensorflow/tfjs-core';
import { QuantbookError } from '../errors';
import { DataType } from '../onnx/dtype';
import { attributeValue } from '../onnx/graph';
import { NodeProto } from '../onnx/proto';
import { conv2d, pool2d } from './conv';

export interface OpContext {
  node: NodeProto;
  /** the model's default-domain opset */
  opset: number;
  training: boolean;
  /** training-time state updates (BatchNormalization running statistics) */
  assign(tensor: string, value: tf.Tensor): void;
}

export type Inputs = Array<tf.Tensor | undefined>;
export type OpKernel = (inputs: Inputs, ctx: OpContext) => tf.Tensor[];

function attr<T = number>(ctx: OpContext, name: string, fallback: T): T {
  const v = attributeValue(ctx.node, name);
  return v === undefined ? fallback : (v as T);
}

/** The values of a small integer input (shape, axes, indices). */
function ints(t: tf.Tensor | undefined): number[] | undefined {
  return t ? Array.from(t.dataSync(), Number) : undefined;
}

const normAxis = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);

/** axes from the attribute (old opsets) or the second input (newer ones) */
function axesOf(inputs: Inputs, ctx: OpContext, index = 1): number[] | undefined {
  return ints(inputs[index]) ?? attr<number[] | undefined>(ctx, 'axes', undefined);
}

function requireInput(inputs: Inputs, i: number, ctx: OpContext): tf.Tensor {
  const t = inputs[i];
  if (!t) throw new QuantbookError('INVALID_MODEL', `${ctx.node.op_type} node "${ctx.node.name}": input ${i} is missing`);
  return t;
}

const unary = (f: (x: tf.Tensor) => tf.Tensor): OpKernel => (inputs, ctx) => [f(requireInput(inputs, 0, ctx))];
const binary = (f: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor): OpKernel => (inputs, ctx) => [f(requireInput(inputs, 0, ctx), requireInput(inputs, 1, ctx))];

function spatial(ctx: OpContext, x: tf.Tensor, kernel: number[]) {
  const two = (name: string, d: number) => (attr<number[]>(ctx, name, [d, d]) as [number, number]);
  const autoPad = attr<string>(ctx, 'auto_pad', 'NOTSET');
  const strides = two('strides', 1);
  const dilations = two('dilations', 1);
  let pads = attr<number[]>(ctx, 'pads', [0, 0, 0, 0]) as [number, number, number, number];
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    // output = ceil(input / stride); the odd cell goes at the end (UPPER) or start (LOWER)
    const total = [2, 3].map((d, i) => Math.max(0, (Math.ceil(x.shape[d]! / strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - x.shape[d]!));
    const small = total.map((p) => Math.floor(p / 2));
    const big = total.map((p, i) => p - small[i]);
    pads = autoPad === 'SAME_UPPER' ? [small[0], small[1], big[0], big[1]] : [big[0], big[1], small[0], small[1]];
  } else if (autoPad === 'VALID') {
    pads = [0, 0, 0, 0];
  }
  return { strides, dilations, pads };
}

function requireRank4(x: tf.Tensor, ctx: OpContext): tf.Tensor4D {
  if (x.rank !== 4) throw new QuantbookError('UNSUPPORTED', `${ctx.node.op_type} node "${ctx.node.name}": only 2-D (NCHW) inputs are supported, got rank ${x.rank}`);
  return x as tf.Tensor4D;
}

function pool(kind: 'max' | 'avg'): OpKernel {
  return (inputs, ctx) => {
    const x = requireRank4(requireInput(inputs, 0, ctx), ctx);
    const kernel = attr<number[]>(ctx, 'kernel_shape', []) as [number, number];
    const { strides, pads } = spatial(ctx, x, kernel);
    return [pool2d(kind, x, { kernel, strides, pads, ceilMode: attr<number>(ctx, 'ceil_mode', 0) === 1, countIncludePad: attr<number>(ctx, 'count_include_pad', 0) === 1 })];
  };
}

function batchNorm(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const [x, gamma, beta, mean, variance] = [0, 1, 2, 3, 4].map((i) => requireInput(inputs, i, ctx));
  const eps = attr<number>(ctx, 'epsilon', 1e-5);
  const shape = [1, -1, ...Array(x.rank - 2).fill(1)];
  const axes = [0, ...Array.from({ length: x.rank - 2 }, (_, i) => i + 2)];
  let m = mean;
  let v = variance;
  if (ctx.training) {
    const moments = tf.moments(x, axes);
    m = moments.mean;
    v = moments.variance;
    // running statistics follow ONNX's rule: running = running·momentum + batch·(1 − momentum)
    const momentum = attr<number>(ctx, 'momentum', 0.9);
    const count = x.size / x.shape[1]!;
    const unbiased = v.mul(count / Math.max(1, count - 1));
    ctx.assign(ctx.node.input[3], mean.mul(momentum).add(m.mul(1 - momentum)));
    ctx.assign(ctx.node.input[4], variance.mul(momentum).add(unbiased.mul(1 - momentum)));
  }
  const scale = gamma.div(v.add(eps).sqrt());
  return [x.sub(m.reshape(shape)).mul(scale.reshape(shape)).add(beta.reshape(shape))];
}

function softmax(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const x = requireInput(inputs, 0, ctx);
  const axis = normAxis(attr<number>(ctx, 'axis', ctx.opset >= 13 ? -1 : 1), x.rank);
  if (ctx.opset >= 13) return [axis === x.rank - 1 ? tf.softmax(x) : tf.softmax(x.transpose(moveLast(x.rank, axis))).transpose(moveLast(x.rank, axis))];
  // before opset 13: the input is read as 2-D [prod(dims < axis), prod(dims ≥ axis)]
  const rows = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  return [tf.softmax(x.reshape([rows, -1])).reshape(x.shape)];
}

/** A permutation that swaps `axis` with the last axis (its own inverse). */
function moveLast(rank: number, axis: number): number[] {
  const p = Array.from({ length: rank }, (_, i) => i);
  [p[axis], p[rank - 1]] = [p[rank - 1], p[axis]];
  return p;
}

function layerNorm(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const x = requireInput(inputs, 0, ctx);
  const axis = normAxis(attr<number>(ctx, 'axis', -1), x.rank);
  const axes = Array.from({ length: x.rank - axis }, (_, i) => axis + i);
  const { mean, variance } = tf.moments(x, axes, true);
  let y = x.sub(mean).div(variance.add(attr<number>(ctx, 'epsilon', 1e-5)).sqrt());
  if (inputs[1]) y = y.mul(inputs[1]);
  if (inputs[2]) y = y.add(inputs[2]);
  return [y];
}

function gemm(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const [a, b] = [0, 1].map((i) => requireInput(inputs, i, ctx));
  const alpha = attr<number>(ctx, 'alpha', 1);
  const beta = attr<number>(ctx, 'beta', 1);
  let y = tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D, attr<number>(ctx, 'transA', 0) === 1, attr<number>(ctx, 'transB', 0) === 1);
  if (alpha !== 1) y = y.mul(alpha);
  if (inputs[2]) y = y.add(beta === 1 ? inputs[2] : inputs[2]!.mul(beta));
  return [y];
}

function matMul(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  let [a, b] = [0, 1].map((i) => requireInput(inputs, i, ctx));
  // numpy semantics for 1-D operands: promote, multiply, drop the added axis
  const aVec = a.rank === 1;
  const bVec = b.rank === 1;
  if (aVec) a = a.expandDims(0);
  if (bVec) b = b.expandDims(1);
  let y = tf.matMul(a, b);
  if (aVec) y = y.squeeze([y.rank - 2]);
  if (bVec) y = y.squeeze([y.rank - 1]);
  return [y];
}

function reshape(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const x = requireInput(inputs, 0, ctx);
  const target = ints(inputs[1]) ?? attr<number[]>(ctx, 'shape', []);
  const allowZero = attr<number>(ctx, 'allowzero', 0) === 1;
  return [x.reshape(target.map((d, i) => (d === 0 && !allowZero ? x.shape[i] : d)))];
}

function slice(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const x = requireInput(inputs, 0, ctx);
  const starts = ints(inputs[1]) ?? attr<number[]>(ctx, 'starts', []);
  const ends = ints(inputs[2]) ?? attr<number[]>(ctx, 'ends', []);
  const axes = (ints(inputs[3]) ?? attr<number[] | undefined>(ctx, 'axes', undefined) ?? starts.map((_, i) => i)).map((a) => normAxis(a, x.rank));
  const steps = ints(inputs[4]) ?? starts.map(() => 1);
  const begin = x.shape.map(() => 0);
  const end = [...x.shape];
  const stride = x.shape.map(() => 1);
  axes.forEach((axis, i) => {
    const dim = x.shape[axis];
    const clampIndex = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v < 0 ? v + dim : v));
    const step = steps[i];
    begin[axis] = step > 0 ? clampIndex(starts[i], 0, dim) : clampIndex(starts[i], -1, dim - 1);
    end[axis] = step > 0 ? clampIndex(ends[i], 0, dim) : clampIndex(ends[i], -1, dim - 1);
    stride[axis] = step;
  });
  if (stride.every((s) => s === 1)) return [tf.slice(x, begin, end.map((e, i) => Math.max(0, e - begin[i])))];
  return [tf.stridedSlice(x, begin, end, stride)];
}

function gather(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const [x, idx] = [0, 1].map((i) => requireInput(inputs, i, ctx));
  const axis = normAxis(attr<number>(ctx, 'axis', 0), x.rank);
  const n = x.shape[axis];
  const positive = tf.where(tf.less(idx, 0), idx.add(n), idx).toInt();
  if (idx.rank === 0) return [tf.gather(x, positive.reshape([1]), axis).squeeze([axis])];
  return [tf.gather(x, positive, axis)];
}

function cast(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const x = requireInput(inputs, 0, ctx);
  const to = attr(ctx, 'to', DataType.FLOAT);
  if (to === DataType.FLOAT || to === DataType.DOUBLE || to === DataType.FLOAT16) return [x.toFloat()];
  if (to === DataType.BOOL) return [x.cast('bool')];
  if ([DataType.INT64, DataType.INT32, DataType.INT16, DataType.INT8, DataType.UINT8].includes(to)) return [x.dtype === 'float32' ? x.sign().mul(x.abs().floor()).toInt() : x.toInt()];
  throw new QuantbookError('UNSUPPORTED', `Cast node "${ctx.node.name}": target type ${to} is not supported`);
}

function clip(inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  const x = requireInput(inputs, 0, ctx);
  // opset < 11: min/max attributes; later: optional inputs
  const bound = (i: number, name: string, fallback: number) => (inputs[i] ? inputs[i]!.dataSync()[0] : ctx.opset < 11 ? attr(ctx, name, fallback) : fallback);
  const lo = bound(1, 'min', -Infinity);
  const hi = bound(2, 'max', Infinity);
  // maximum/minimum rather than clipByValue: their gradient passes inside the range
  let y = x;
  if (lo !== -Infinity) y = tf.maximum(y, lo);
  if (hi !== Infinity) y = tf.minimum(y, hi);
  return [y];
}

function reduce(f: (x: tf.Tensor, axes: number[] | undefined, keep: boolean) => tf.Tensor): OpKernel {
  return (inputs, ctx) => {
    const x = requireInput(inputs, 0, ctx);
    const axes = axesOf(inputs, ctx);
    const keep = attr<number>(ctx, 'keepdims', 1) === 1;
    if (axes && axes.length === 0 && attr<number>(ctx, 'noop_with_empty_axes', 0) === 1) return [x];
    return [f(x, axes?.length ? axes.map((a) => normAxis(a, x.rank)) : undefined, keep)];
  };
}

function constant(_inputs: Inputs, ctx: OpContext): tf.Tensor[] {
  throw new QuantbookError('INVALID_MODEL', `Constant node "${ctx.node.name}" should have been read as a constant`);
}

export const OPS: Record<string, OpKernel> = {
  Conv: (inputs, ctx) => {
    const x = requireRank4(requireInput(inputs, 0, ctx), ctx);
    const w = requireInput(inputs, 1, ctx) as tf.Tensor4D;
    const { strides, dilations, pads } = spatial(ctx, x, [w.shape[2], w.shape[3]]);
    return [conv2d(x, w, inputs[2], { strides, dilations, pads, group: attr<number>(ctx, 'group', 1) })];
  },
  Gemm: gemm,
  MatMul: matMul,
  BatchNormalization: batchNorm,
  LayerNormalization: layerNorm,
  MaxPool: pool('max'),
  AveragePool: pool('avg'),
  GlobalAveragePool: unary((x) => x.mean(Array.from({ length: x.rank - 2 }, (_, i) => i + 2), true)),
  GlobalMaxPool: unary((x) => x.max(Array.from({ length: x.rank - 2 }, (_, i) => i + 2), true)),
  Softmax: softmax,
  Add: binary(tf.add),
  Sub: binary(tf.sub),
  Mul: binary(tf.mul),
  Div: binary((a, b) => (a.dtype === 'int32' ? tf.floorDiv(a, b) : tf.div(a, b))),
  Pow: binary(tf.pow),
  Sqrt: unary(tf.sqrt),
  Exp: unary(tf.exp),
  Log: unary(tf.log),
  Neg: unary(tf.neg),
  Abs: unary(tf.abs),
  Reciprocal: unary(tf.reciprocal),
  Erf: unary(tf.erf),
  Tanh: unary(tf.tanh),
  Sigmoid: unary(tf.sigmoid),
  Relu: unary(tf.relu),
  LeakyRelu: (inputs, ctx) => [tf.leakyRelu(requireInput(inputs, 0, ctx), attr<number>(ctx, 'alpha', 0.01))],
  HardSigmoid: (inputs, ctx) => {
    const x = requireInput(inputs, 0, ctx);
    return [tf.minimum(tf.maximum(x.mul(attr<number>(ctx, 'alpha', 0.2)).add(attr<number>(ctx, 'beta', 0.5)), 0), 1)];
  },
  HardSwish: unary((x) => x.mul(tf.minimum(tf.maximum(x.div(6).add(0.5), 0), 1))),
  Clip: clip,
  Identity: unary((x) => x),
  // inference form; a training-time dropout mask would make runs irreproducible
  Dropout: unary((x) => x),
  Flatten: (inputs, ctx) => {
    const x = requireInput(inputs, 0, ctx);
    const axis = normAxis(attr<number>(ctx, 'axis', 1), x.rank);
    const rows = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
    return [x.reshape([rows, -1])];
  },
  Reshape: reshape,
  Transpose: (inputs, ctx) => {
    const x = requireInput(inputs, 0, ctx);
    return [x.transpose(attr<number[] | undefined>(ctx, 'perm', undefined))];
  },
  Concat: (inputs, ctx) => {
    const list = inputs.filter((t): t is tf.Tensor => !!t);
    return [tf.concat(list, normAxis(attr<number>(ctx, 'axis', 0), list[0].rank))];
  },
  Squeeze: (inputs, ctx) => {
    const x = requireInput(inputs, 0, ctx);
    const axes = axesOf(inputs, ctx)?.map((a) => normAxis(a, x.rank));
    return [x.squeeze(axes)];
  },
  Unsqueeze: (inputs, ctx) => {
    const x = requireInput(inputs, 0, ctx);
    const axes = axesOf(inputs, ctx) ?? [];
    const rank = x.rank + axes.length;
    const shape = [...x.shape];
    for (const a of axes.map((v) => normAxis(v, rank)).sort((p, q) => p - q)) shape.splice(a, 0, 1);
    return [x.reshape(shape)];
  },
  Shape: unary((x) => tf.tensor1d(x.shape, 'int32')),
  Cast: cast,
  Slice: slice,
  Gather: gather,
  ReduceMean: reduce((x, axes, keep) => x.mean(axes, keep)),
  ReduceSum: reduce((x, axes, keep) => x.sum(axes, keep)),
  ReduceMax: reduce((x, axes, keep) => x.max(axes, keep)),
  ReduceMin: reduce((x, axes, keep) => x.min(axes, keep)),
  Constant: constant,
};

export const SUPPORTED_OPS = Object.keys(OPS).sort();
