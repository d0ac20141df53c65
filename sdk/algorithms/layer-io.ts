/**
 * What the weight-recovery algorithms (AdaRound, bias correction) need from a layer: its
 * computation y = f(x, W) as a tfjs function, and samples of its float input gathered from
 * calibration batches on ONNX Runtime (bounded in size, so a large model's activations are never
 * all kept).
 */
// tfjs-core, not the tfjs bundle: the same objects (tfjs re-exports core), and published types that do not pull in tfjs-layers
import * as tf from '@tensorflow/tfjs-core';
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { Runner } from '../runtime/runner';
import { CalibrationSource, batchesFrom } from '../calibration/data';
import { QuantLayer } from '../quantize/layers';
import { conv1d, conv2d, conv3d, convAttributes, convNdAttributes, convTranspose2d } from '../train/conv';

export type LayerForward = (x: tf.Tensor, w: tf.Tensor, bias?: tf.Tensor) => tf.Tensor;

/** The layers layerForward (so AdaRound, ADMM, EasyQuant and bias correction) computes, in AMCT's words. */
export const LAYER_FORWARD_SUPPORTED = 'Conv1d, Conv2d, Conv3d (any group), ConvTranspose2d (without output_shape), Linear (Gemm, or MatMul with a 2-D weight)';

/**
 * Why layerForward cannot compute `layer`, naming what it is (ConvTranspose1d, ConvTranspose3d,
 * MatMul with a 3-D weight, …), or undefined when it can.
 */
export function layerForwardUnsupported(g: Graph, layer: QuantLayer): string | undefined {
  const rank = layer.weight ? g.constantValue(layer.weight)?.dims.length : undefined;
  const autoPad = ((attributeValue(layer.node, 'auto_pad') as string | undefined) ?? 'NOTSET') !== 'NOTSET';
  if (layer.opType === 'Conv') {
    const name = `Conv${rank === 3 ? '1d' : rank === 4 ? '2d' : rank === 5 ? '3d' : ''}`;
    if (rank === undefined || rank < 3 || rank > 5) return `${name} (${rank}-D weight)`;
    return autoPad ? `${name} with auto_pad (explicit pads needed)` : undefined;
  }
  if (layer.opType === 'Gemm') return undefined;
  if (layer.opType === 'MatMul') return rank === 2 ? undefined : `MatMul with a ${rank}-D weight`;
  if (layer.opType === 'ConvTranspose') {
    if (rank !== 4) return `ConvTranspose${rank === 5 ? '3d' : rank === 3 ? '1d' : ''} (${rank}-D weight)`;
    if (autoPad) return 'ConvTranspose2d with auto_pad (explicit pads needed)';
    if (attributeValue(layer.node, 'output_shape') !== undefined) return 'ConvTranspose2d with output_shape';
    return undefined;
  }
  return layer.opType;
}

/** y = f(x, W[, b]) for a Conv (1-D, 2-D, 3-D), ConvTranspose2d, MatMul or Gemm layer with a constant weight. */
export function layerForward(g: Graph, layer: QuantLayer): LayerForward {
  const n = layer.node;
  const why = layerForwardUnsupported(g, layer);
  if (why) throw new QuantbookError('UNSUPPORTED', `layer "${layer.name}": ${why} is not supported; supported: ${LAYER_FORWARD_SUPPORTED}`);
  if (layer.opType === 'Conv') {
    const rank = g.constantValue(layer.weight!)!.dims.length;
    if (rank === 3) { const a = convNdAttributes(n, 1); return (x, wt, b) => conv1d(x, wt, b, a); }
    if (rank === 5) { const a = convNdAttributes(n, 3); return (x, wt, b) => conv3d(x, wt, b, a); }
    const attrs = convAttributes(n);
    return (x, wt, b) => conv2d(x as tf.Tensor4D, wt as tf.Tensor4D, b, attrs);
  }
  if (layer.opType === 'ConvTranspose') {
    const a = convNdAttributes(n, 2);
    return (x, wt, b) => convTranspose2d(x as tf.Tensor4D, wt as tf.Tensor4D, b, a);
  }
  if (layer.opType === 'MatMul') return (x, wt) => tf.matMul(x, wt);
  if (layer.opType === 'Gemm') {
    const transB = attributeValue(n, 'transB') === 1;
    const alpha = (attributeValue(n, 'alpha') as number | undefined) ?? 1;
    return (x, wt, b) => {
      const y = tf.matMul(x, wt, false, transB);
      const scaled = alpha === 1 ? y : y.mul(alpha);
      return b ? scaled.add(b) : scaled;
    };
  }
  throw new QuantbookError('UNSUPPORTED', `layer "${layer.name}": ${layer.opType} has no weight to optimise`);
}

export interface SampleLimits {
  /** at most this many samples (images for Conv, rows for MatMul/Gemm) per layer */
  samples?: number;
  /** Conv inputs: a centred crop of at most this height and width */
  crop?: number;
}

/**
 * The float inputs of `layers` on the first batches of `data`: per layer one tensor
 * (Conv: [N, C, h, w] crops; MatMul/Gemm: [rows, K]).
 */
export async function sampleLayerInputs(model: Model, layers: QuantLayer[], data: CalibrationSource, limits: SampleLimits = {}): Promise<Map<string, { data: Float32Array; dims: number[] }>> {
  const maxSamples = limits.samples ?? 4;
  const crop = limits.crop ?? 32;
  const tensors = [...new Set(layers.map((l) => l.activations[0]))];
  // inputs of convolutions keep their [N, C, spatial…] layout (any rank); the rest become rows
  const spatial = new Set(layers.filter((l) => l.opType === 'Conv' || l.opType === 'ConvTranspose').map((l) => l.activations[0]));
  const collected = new Map<string, { chunks: Float32Array[]; dims: number[]; count: number; rows: number }>();
  const runner = await Runner.create(model, { expose: tensors });
  try {
    for await (const feeds of batchesFrom(data, model.graph.inputNames)) {
      if (tensors.every((t) => (collected.get(t)?.count ?? 0) >= maxSamples)) break;
      const { exposed } = await runner.run(feeds);
      for (const t of tensors) {
        const have = collected.get(t) ?? { chunks: [], dims: [], count: 0, rows: 0 };
        if (have.count >= maxSamples) continue;
        const v = exposed[t];
        const sample = cropSample(v, maxSamples - have.count, crop, spatial.has(t));
        have.chunks.push(sample.data);
        have.dims = sample.dims;
        have.rows += sample.dims[0];
        // Conv samples are images; MatMul/Gemm samples count 64 rows each
        have.count += spatial.has(t) || sample.dims.length === 4 ? sample.dims[0] : Math.ceil(sample.dims[0] / 64);
        collected.set(t, have);
      }
    }
  } finally {
    await runner.dispose();
  }
  const out = new Map<string, { data: Float32Array; dims: number[] }>();
  for (const l of layers) {
    const c = collected.get(l.activations[0]);
    if (!c) throw new QuantbookError('INVALID_ARGUMENT', 'no calibration batch to sample layer inputs from');
    const data = new Float32Array(c.chunks.reduce((a, b) => a + b.length, 0));
    let at = 0;
    for (const ch of c.chunks) { data.set(ch, at); at += ch.length; }
    out.set(l.name, { data, dims: [c.rows, ...c.dims.slice(1)] });
  }
  return out;
}

/** Up to `n` leading samples of a tensor; 4-D tensors cropped to the centre crop × crop. */
function cropSample(t: ort.Tensor, n: number, crop: number, spatial = false): { data: Float32Array; dims: number[] } {
  const src = t.data as Float32Array;
  const dims = t.dims.map(Number);
  if (spatial && dims.length !== 4) return cropSpatial(src, dims, n, dims.length === 3 ? crop * crop : crop);
  if (dims.length === 4) {
    const [b, c, h, w] = dims;
    const k = Math.min(b, n);
    const ch = Math.min(h, crop);
    const cw = Math.min(w, crop);
    const y0 = Math.floor((h - ch) / 2);
    const x0 = Math.floor((w - cw) / 2);
    const out = new Float32Array(k * c * ch * cw);
    let at = 0;
    for (let i = 0; i < k; i++) for (let j = 0; j < c; j++) for (let y = 0; y < ch; y++) {
      const row = ((i * c + j) * h + y0 + y) * w + x0;
      out.set(src.subarray(row, row + cw), at);
      at += cw;
    }
    return { data: out, dims: [k, c, ch, cw] };
  }
  // rows of the last dimension; n is counted in rows here (×64 so a few batches give enough)
  const k = dims[dims.length - 1];
  const rows = Math.min(src.length / k, n * 64);
  return { data: src.slice(0, rows * k), dims: [rows, k] };
}

/** Conv1d/Conv3d inputs [N, C, s1…]: the first `n` samples, each spatial dim centre-cropped to ≤ `crop`. */
function cropSpatial(src: Float32Array, dims: number[], n: number, crop: number): { data: Float32Array; dims: number[] } {
  const out = [Math.min(dims[0], n), dims[1], ...dims.slice(2).map((d) => Math.min(d, crop))];
  const start = [0, 0, ...dims.slice(2).map((d, i) => Math.floor((d - out[i + 2]) / 2))];
  const data = new Float32Array(out.reduce((a, b) => a * b, 1));
  const idx = new Array<number>(out.length).fill(0);
  for (let i = 0; i < data.length; i++) {
    let flat = 0;
    for (let a = 0; a < dims.length; a++) flat = flat * dims[a] + start[a] + idx[a];
    data[i] = src[flat];
    for (let a = out.length - 1; a >= 0; a--) { if (++idx[a] < out[a]) break; idx[a] = 0; }
  }
  return { data, dims: out };
}
