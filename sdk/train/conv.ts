/**
 * 2-D convolution and pooling in ONNX's NCHW form on tfjs (which works in NHWC), with a
 * filter gradient that every backend can compute.
 *
 * Why the custom gradient: the wasm backend (the one that installs everywhere) has no
 * Conv2DBackpropFilter kernel, so tf.conv2d cannot be trained there. The filter gradient is
 * a sum over output positions of input patch × output gradient; for each kernel tap it is one
 * matrix product of a (strided) input slice with the output gradient, which every backend runs.
 */
// tfjs-core, not the tfjs bundle: the same objects (tfjs re-exports core), and published types that do not pull in tfjs-layers
import * as tf from '@tensorflow/tfjs-core';
import { QuantbookError } from '../errors';
import { attributeValue } from '../onnx/graph';
import { NodeProto } from '../onnx/proto';

export interface Conv2dAttributes {
  strides: [number, number];
  dilations: [number, number];
  /** [top, left, bottom, right] */
  pads: [number, number, number, number];
  group: number;
}

/** A Conv node's explicit-padding attributes (auto_pad needs the input shape: refused here). */
export function convAttributes(node: NodeProto): Conv2dAttributes {
  if (((attributeValue(node, 'auto_pad') as string | undefined) ?? 'NOTSET') !== 'NOTSET') {
    throw new QuantbookError('UNSUPPORTED', `Conv "${node.name}": explicit pads are needed here, not auto_pad`);
  }
  return {
    strides: ((attributeValue(node, 'strides') as number[] | undefined) ?? [1, 1]) as [number, number],
    dilations: ((attributeValue(node, 'dilations') as number[] | undefined) ?? [1, 1]) as [number, number],
    pads: ((attributeValue(node, 'pads') as number[] | undefined) ?? [0, 0, 0, 0]) as [number, number, number, number],
    group: (attributeValue(node, 'group') as number | undefined) ?? 1,
  };
}

const toNhwc = (x: tf.Tensor4D) => x.transpose([0, 2, 3, 1]) as tf.Tensor4D;
const toNchw = (x: tf.Tensor4D) => x.transpose([0, 3, 1, 2]) as tf.Tensor4D;

function padSpatial(x: tf.Tensor4D, [t, l, b, r]: number[], value = 0): tf.Tensor4D {
  if (!t && !l && !b && !r) return x;
  return tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]], value);
}

/** Filter gradient of a VALID NHWC convolution: per kernel tap, slice(x)ᵀ · dy. */
function filterGradient(x: tf.Tensor4D, dy: tf.Tensor4D, [kh, kw]: number[], strides: number[], dilations: number[], depthwise: boolean, multiplier: number): tf.Tensor {
  const [n, oh, ow, cout] = dy.shape;
  const cin = x.shape[3];
  const taps: tf.Tensor[] = [];
  for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
    const y0 = i * dilations[0];
    const x0 = j * dilations[1];
    const patch = tf.stridedSlice(x, [0, y0, x0, 0], [n, y0 + (oh - 1) * strides[0] + 1, x0 + (ow - 1) * strides[1] + 1, cin], [1, strides[0], strides[1], 1]) as tf.Tensor4D;
    if (depthwise) {
      // [N, OH, OW, C, 1] × [N, OH, OW, C, mult] summed over positions → [C, mult]
      taps.push(patch.expandDims(4).mul(dy.reshape([n, oh, ow, cin, multiplier])).sum([0, 1, 2]));
    } else {
      taps.push(tf.matMul(patch.reshape([-1, cin]), dy.reshape([-1, cout]), true, false));
    }
  }
  return tf.stack(taps).reshape(depthwise ? [kh, kw, cin, multiplier] : [kh, kw, cin, cout]);
}

/** dy with (stride − 1) zeros between neighbours: the stride-1 form of a strided output. */
function dilateRows(dy: tf.Tensor4D, [sh, sw]: number[]): tf.Tensor4D {
  if (sh === 1 && sw === 1) return dy;
  const [n, oh, ow, c] = dy.shape;
  const spread = dy.reshape([n, oh, 1, ow, 1, c]).pad([[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]]);
  return spread.reshape([n, oh * sh, ow * sw, c]).slice([0, 0, 0, 0], [n, (oh - 1) * sh + 1, (ow - 1) * sw + 1, c]) as tf.Tensor4D;
}

/**
 * Input gradient of a VALID NHWC convolution: the full correlation of the (stride-dilated)
 * output gradient with the flipped filter, run as a stride-1 forward convolution. Written out
 * rather than taken from tf.grad because a nested tf.grad clears the outer gradient tape.
 */
function inputGradient(dy: tf.Tensor4D, f: tf.Tensor4D, xShape: number[], strides: number[], dilations: number[], depthwise: boolean): tf.Tensor4D {
  const [kh, kw, cin, last] = f.shape;
  const up = dilateRows(dy, strides);
  const reachH = (kh - 1) * dilations[0];
  const reachW = (kw - 1) * dilations[1];
  // rows/columns of x no window reached get zero gradient: pad them on at the end
  const padded: tf.Tensor4D = up.pad([[0, 0], [reachH, reachH + xShape[1] - (up.shape[1] + reachH)], [reachW, reachW + xShape[2] - (up.shape[2] + reachW)], [0, 0]]);
  const flipped = tf.reverse(f, [0, 1]) as tf.Tensor4D;
  if (!depthwise) return tf.conv2d(padded, flipped.transpose([0, 1, 3, 2]) as tf.Tensor4D, 1, 'valid', 'NHWC', dilations as [number, number]);
  // depthwise: every (channel, multiplier) pair is its own filter; sum the multipliers back
  const per = tf.depthwiseConv2d(padded, flipped.reshape([kh, kw, cin * last, 1]) as tf.Tensor4D, 1, 'valid', 'NHWC', dilations as [number, number]);
  return (last === 1 ? per : per.reshape([...per.shape.slice(0, 3), cin, last]).sum(4)) as tf.Tensor4D;
}

/** VALID NHWC convolution (plain or depthwise) whose gradients exist on every backend. */
function trainableConv(x: tf.Tensor4D, filter: tf.Tensor4D, strides: [number, number], dilations: [number, number], depthwise: boolean): tf.Tensor4D {
  const op = tf.customGrad((a, f, save) => {
    (save as tf.GradSaveFunc)([a as tf.Tensor, f as tf.Tensor]);
    const value = depthwise
      ? tf.depthwiseConv2d(a as tf.Tensor4D, f as tf.Tensor4D, strides, 'valid', 'NHWC', dilations)
      : tf.conv2d(a as tf.Tensor4D, f as tf.Tensor4D, strides, 'valid', 'NHWC', dilations);
    return {
      value,
      gradFunc: (dy, saved) => {
        const [sa, sf] = saved as [tf.Tensor4D, tf.Tensor4D];
        const g = dy as tf.Tensor4D;
        return [
          inputGradient(g, sf, sa.shape, strides, dilations, depthwise),
          filterGradient(sa, g, [sf.shape[0], sf.shape[1]], strides, dilations, depthwise, sf.shape[3]),
        ];
      },
    };
  });
  return op(x, filter) as tf.Tensor4D;
}

/** ONNX Conv on NCHW input with weight [Cout, Cin/group, kH, kW]. */
export function conv2d(x: tf.Tensor4D, w: tf.Tensor4D, bias: tf.Tensor | undefined, a: Conv2dAttributes): tf.Tensor4D {
  const strides = a.strides;
  const cin = x.shape[1];
  const [cout, cinPerGroup] = w.shape;
  if (cinPerGroup * a.group !== cin) throw new QuantbookError('INVALID_MODEL', `Conv: input has ${cin} channels but the weight expects ${cinPerGroup} × group ${a.group}`);
  const xs = padSpatial(toNhwc(x), a.pads);
  // tfjs takes strides > 1 or dilations > 1, not both: then stride 1, subsampled after
  const both = a.strides.some((v) => v > 1) && a.dilations.some((v) => v > 1);
  if (both) a = { ...a, strides: [1, 1] };
  let y: tf.Tensor4D;
  if (a.group === 1) {
    y = trainableConv(xs, w.transpose([2, 3, 1, 0]) as tf.Tensor4D, a.strides, a.dilations, false);
  } else if (cinPerGroup === 1) {
    // depthwise: weight [C·mult, 1, kH, kW] → [kH, kW, C, mult]
    const mult = cout / cin;
    const f = w.reshape([cin, mult, w.shape[2], w.shape[3]]).transpose([2, 3, 0, 1]) as tf.Tensor4D;
    y = trainableConv(xs, f, a.strides, a.dilations, true);
  } else {
    const xg = tf.split(xs, a.group, 3);
    const wg = tf.split(w, a.group, 0);
    y = tf.concat(xg.map((xi, i) => trainableConv(xi as tf.Tensor4D, wg[i].transpose([2, 3, 1, 0]) as tf.Tensor4D, a.strides, a.dilations, false)), 3) as tf.Tensor4D;
  }
  if (both) y = tf.stridedSlice(y, [0, 0, 0, 0], y.shape, [1, strides[0], strides[1], 1]) as tf.Tensor4D;
  if (bias) y = y.add(bias);
  return toNchw(y);
}

export interface PoolAttributes {
  kernel: [number, number];
  strides: [number, number];
  pads: [number, number, number, number];
  ceilMode: boolean;
  countIncludePad: boolean;
}

/** Extra bottom/right padding ceil_mode needs so the last partial window is produced. */
function ceilPads(h: number, w: number, a: PoolAttributes): [number, number, number, number] {
  const [t, l, b, r] = a.pads;
  if (!a.ceilMode) return a.pads;
  const extra = (size: number, k: number, s: number, begin: number, end: number) => {
    let out = Math.ceil((size + begin + end - k) / s) + 1;
    // the last window must start inside the input or its leading padding (ORT/PyTorch rule)
    if ((out - 1) * s >= size + begin) out--;
    return Math.max(0, (out - 1) * s + k - (size + begin + end));
  };
  return [t, l, b + extra(h, a.kernel[0], a.strides[0], t, b), r + extra(w, a.kernel[1], a.strides[1], l, r)];
}

export function pool2d(kind: 'max' | 'avg', x: tf.Tensor4D, a: PoolAttributes): tf.Tensor4D {
  const [, , h, w] = x.shape;
  const pads = ceilPads(h, w, a);
  const xs = toNhwc(x);
  if (kind === 'max') return toNchw(tf.maxPool(padSpatial(xs, pads, -Infinity), a.kernel, a.strides, 'valid'));
  const sum = tf.avgPool(padSpatial(xs, pads), a.kernel, a.strides, 'valid');
  if (a.countIncludePad && pads.every((p, i) => p === a.pads[i])) return toNchw(sum);
  // divide by the number of counted cells: real ones (and the declared pads when included)
  const ones = tf.ones([1, h, w, 1]) as tf.Tensor4D;
  const counted = a.countIncludePad ? padSpatial(padSpatial(ones, a.pads, 1), pads.map((p, i) => p - a.pads[i])) : padSpatial(ones, pads);
  const share = tf.avgPool(counted, a.kernel, a.strides, 'valid');
  return toNchw(sum.div(share) as tf.Tensor4D);
}

/** A Conv/ConvTranspose node's explicit attributes for any number of spatial dims (auto_pad refused). */
export function convNdAttributes(node: NodeProto, spatial: number): { strides: number[]; dilations: number[]; pads: number[]; group: number; outputPadding: number[] } {
  if (((attributeValue(node, 'auto_pad') as string | undefined) ?? 'NOTSET') !== 'NOTSET') {
    throw new QuantbookError('UNSUPPORTED', `${node.op_type} "${node.name}": explicit pads are needed here, not auto_pad`);
  }
  const ones = Array<number>(spatial).fill(1);
  return {
    strides: (attributeValue(node, 'strides') as number[] | undefined) ?? ones,
    dilations: (attributeValue(node, 'dilations') as number[] | undefined) ?? ones,
    pads: (attributeValue(node, 'pads') as number[] | undefined) ?? Array<number>(2 * spatial).fill(0),
    group: (attributeValue(node, 'group') as number | undefined) ?? 1,
    outputPadding: (attributeValue(node, 'output_padding') as number[] | undefined) ?? Array<number>(spatial).fill(0),
  };
}

/** ONNX Conv1d ([N, C, L], weight [Cout, Cin/g, k]) as a Conv2d of height 1 (trainable). */
export function conv1d(x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor | undefined, a: ReturnType<typeof convNdAttributes>): tf.Tensor {
  const y = conv2d(x.expandDims(2) as tf.Tensor4D, w.expandDims(2) as tf.Tensor4D, undefined, {
    strides: [1, a.strides[0]], dilations: [1, a.dilations[0]], pads: [0, a.pads[0], 0, a.pads[1]], group: a.group,
  });
  const out = y.squeeze([2]);
  return bias ? out.add(bias.reshape([1, -1, 1])) : out;
}

/**
 * ONNX Conv3d ([N, C, D, H, W], weight [Cout, Cin/g, kd, kh, kw]) as a sum over kd of Conv2d on
 * depth slabs folded into the batch (trainable through conv2d's gradients).
 */
export function conv3d(x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor | undefined, a: ReturnType<typeof convNdAttributes>): tf.Tensor {
  const [n, c, d0] = x.shape;
  const [cout, , kd] = w.shape;
  const [sd, sh, sw] = a.strides;
  const [dd, dh, dw] = a.dilations;
  const [pd0, ph0, pw0, pd1, ph1, pw1] = a.pads;
  const xp = pd0 || pd1 ? tf.pad(x, [[0, 0], [0, 0], [pd0, pd1], [0, 0], [0, 0]]) : x;
  const depth = d0 + pd0 + pd1;
  const outD = Math.floor((depth - (dd * (kd - 1) + 1)) / sd) + 1;
  let y: tf.Tensor | undefined;
  for (let k = 0; k < kd; k++) {
    // depth indices k·dd + o·sd, o < outD
    const slab = tf.stridedSlice(xp, [0, 0, k * dd, 0, 0], [n, c, k * dd + (outD - 1) * sd + 1, xp.shape[3]!, xp.shape[4]!], [1, 1, sd, 1, 1]);
    const flat = slab.transpose([0, 2, 1, 3, 4]).reshape([n * outD, c, xp.shape[3]!, xp.shape[4]!]) as tf.Tensor4D;
    const wk = w.slice([0, 0, k, 0, 0], [-1, -1, 1, -1, -1]).squeeze([2]) as tf.Tensor4D;
    const part = conv2d(flat, wk, undefined, { strides: [sh, sw], dilations: [dh, dw], pads: [ph0, pw0, ph1, pw1], group: a.group });
    y = y ? y.add(part) : part;
  }
  const [, , ho, wo] = y!.shape;
  const out = y!.reshape([n, outD, cout, ho, wo]).transpose([0, 2, 1, 3, 4]);
  return bias ? out.add(bias.reshape([1, -1, 1, 1, 1])) : out;
}

/**
 * ONNX ConvTranspose2d ([N, Cin, H, W], weight [Cin, Cout/g, kh, kw]) as a Conv2d on the input with
 * stride−1 zeros inserted, padded by dil·(k−1) − pad, with the kernel flipped and its channel axes
 * swapped per group (trainable through conv2d's gradients). output_shape is not supported.
 */
export function convTranspose2d(x: tf.Tensor4D, w: tf.Tensor4D, bias: tf.Tensor | undefined, a: ReturnType<typeof convNdAttributes>): tf.Tensor4D {
  const [n, cin, h, wd] = x.shape;
  const [, coutPerGroup, kh, kw] = w.shape;
  const [sh, sw] = a.strides;
  const [dh, dw] = a.dilations;
  const g = a.group;
  // zero insertion: [N, C, H, 1, W, 1] padded to [N, C, H, sh, W, sw], then trimmed to (H−1)·sh + 1
  const up = tf.pad(x.reshape([n, cin, h, 1, wd, 1]), [[0, 0], [0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1]])
    .reshape([n, cin, h * sh, wd * sw]).slice([0, 0, 0, 0], [n, cin, (h - 1) * sh + 1, (wd - 1) * sw + 1]);
  const [pt, pl, pb, pr] = a.pads;
  const [oph, opw] = a.outputPadding;
  const before = [dh * (kh - 1) - pt, dw * (kw - 1) - pl];
  const after = [dh * (kh - 1) - pb + oph, dw * (kw - 1) - pr + opw];
  const padded = tf.pad(up, [[0, 0], [0, 0], [Math.max(0, before[0]), Math.max(0, after[0])], [Math.max(0, before[1]), Math.max(0, after[1])]]);
  // negative padding (pads larger than the kernel reach) crops instead
  const cropped = padded.slice([0, 0, Math.max(0, -before[0]), Math.max(0, -before[1])], [n, cin, padded.shape[2]! - Math.max(0, -before[0]) - Math.max(0, -after[0]), padded.shape[3]! - Math.max(0, -before[1]) - Math.max(0, -after[1])]) as tf.Tensor4D;
  // weight per group [Cin/g, Cout/g, kh, kw] → [Cout/g, Cin/g, kh, kw], flipped; groups stacked on the output axis
  const flipped = tf.reverse(w, [2, 3]);
  const perGroup = cin / g;
  const parts = Array.from({ length: g }, (_, i) => flipped.slice([i * perGroup, 0, 0, 0], [perGroup, -1, -1, -1]).transpose([1, 0, 2, 3]));
  const wc = (g === 1 ? parts[0] : tf.concat(parts, 0)) as tf.Tensor4D;
  const y = conv2d(cropped, wc, undefined, { strides: [1, 1], dilations: [dh, dw], pads: [0, 0, 0, 0], group: g });
  void coutPerGroup;
  return (bias ? y.add(bias.reshape([1, -1, 1, 1])) : y) as tf.Tensor4D;
}
