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
import { conv2d, convAttributes } from '../train/conv';

export type LayerForward = (x: tf.Tensor, w: tf.Tensor, bias?: tf.Tensor) => tf.Tensor;

/** y = f(x, W[, b]) for a Conv (2-D), MatMul or Gemm layer with a constant weight. */
export function layerForward(g: Graph, layer: QuantLayer): LayerForward {
  const n = layer.node;
  if (layer.opType === 'Conv') {
    const attrs = convAttributes(n);
    const w = g.constantValue(layer.weight!)!;
    if (w.dims.length !== 4) throw new QuantbookError('UNSUPPORTED', `layer "${layer.name}": only 2-D convolutions are supported (weight rank ${w.dims.length})`);
    return (x, wt, b) => conv2d(x as tf.Tensor4D, wt as tf.Tensor4D, b, attrs);
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
        const sample = cropSample(v, maxSamples - have.count, crop);
        have.chunks.push(sample.data);
        have.dims = sample.dims;
        have.rows += sample.dims[0];
        // Conv samples are images; MatMul/Gemm samples count 64 rows each
        have.count += sample.dims.length === 4 ? sample.dims[0] : Math.ceil(sample.dims[0] / 64);
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
function cropSample(t: ort.Tensor, n: number, crop: number): { data: Float32Array; dims: number[] } {
  const src = t.data as Float32Array;
  const dims = t.dims.map(Number);
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
