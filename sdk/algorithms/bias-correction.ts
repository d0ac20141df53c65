/**
 * Empirical bias correction (the white paper's "bias correction", arXiv 2106.08295 §4.2):
 * quantizing the weights shifts each output channel's mean by E[f(x, W̃) − f(x, W)]; subtracting
 * that shift from the bias removes the systematic part of the weight-rounding error. The shift is
 * measured on samples of the layer's float input.
 */
import * as tf from '@tensorflow/tfjs';
import { LayerForward } from './layer-io';

/** The corrected bias (a new array; zeros when the layer had none). */
export function correctedBias(
  forward: LayerForward,
  weight: { data: Float32Array; dims: number[] },
  dequantized: Float32Array,
  input: { data: Float32Array; dims: number[] },
  bias: Float32Array | undefined,
  channels: number,
): { bias: Float32Array; shift: Float32Array } {
  const shift = tf.tidy(() => {
    const x = tf.tensor(input.data, input.dims);
    const diff = forward(x, tf.tensor(dequantized, weight.dims)).sub(forward(x, tf.tensor(weight.data, weight.dims)));
    // Conv output [N, C, H, W]: mean over N, H, W; matmul output [..., C]: mean over the rest
    const axes = diff.rank >= 3 ? diff.shape.map((_, i) => i).filter((i) => i !== 1) : diff.shape.slice(0, -1).map((_, i) => i);
    return diff.mean(axes).dataSync() as Float32Array;
  });
  const out = new Float32Array(channels);
  for (let c = 0; c < channels; c++) out[c] = (bias ? bias[c] : 0) - shift[c];
  return { bias: out, shift: Float32Array.from(shift) };
}
