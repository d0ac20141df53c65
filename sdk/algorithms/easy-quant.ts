/**
 * EasyQuant (msModelSlim keep_acc 'easy_quant'; arXiv 2006.16669): per layer, alternately search
 * the input's activation scale and each output channel's weight scale for the largest cosine
 * similarity between the layer's float output and its output with int8 input and weights.
 * Candidates are 0.5 … 1.2 × the min/max scale in steps of 0.05; each output channel is scored
 * on its own (channels do not interact given the input). Rounds alternate until nothing changes
 * or `rounds` is reached.
 */
import * as tf from '@tensorflow/tfjs';
import { QParams } from '../observers/qparams';
import { fakeQuantize } from '../qat/fake-quant';
import { LayerForward } from './layer-io';

const FACTORS = Array.from({ length: 15 }, (_, i) => 0.5 + 0.05 * i);

export interface EasyQuantResult {
  activationScale: number;
  weightScale: Float32Array;
  cosineBefore: number;
  cosineAfter: number;
}

export function easyQuant(
  forward: LayerForward,
  weight: { data: Float32Array; dims: number[]; axis: number },
  wq: QParams,
  aq: QParams,
  input: { data: Float32Array; dims: number[] },
  bias: Float32Array | undefined,
  rounds: number,
): EasyQuantResult {
  const channelsAxisOut = (t: tf.Tensor) => (t.rank >= 3 ? 1 : t.rank - 1);
  const shape = weight.dims.map((d, i) => (wq.scale.length > 1 && i === weight.axis ? d : 1));
  return tf.tidy(() => {
    const x = tf.tensor(input.data, input.dims);
    const w = tf.tensor(weight.data, weight.dims);
    const b = bias && tf.tensor1d(bias);
    const target = forward(x, w, b);
    const axis = channelsAxisOut(target);
    const perm = Array.from({ length: target.rank }, (_, i) => i).filter((i) => i !== axis);
    const channels = target.shape[axis];
    const flat = (t: tf.Tensor) => t.transpose([axis, ...perm]).reshape([channels, -1]);
    const targetFlat = flat(target);
    const targetNorm = targetFlat.norm(2, 1);
    // cosine per output channel of an output against the float output
    const cosines = (y: tf.Tensor): Float32Array => {
      const yf = flat(y);
      return yf.mul(targetFlat).sum(1).div(yf.norm(2, 1).mul(targetNorm).add(1e-12)).dataSync() as Float32Array;
    };
    const wZero = tf.tensor(Float32Array.from(wq.zeroPoint), shape);
    let sa = aq.scale[0];
    let sw = Float32Array.from(wq.scale);
    const aZero = tf.scalar(aq.zeroPoint[0]);
    const run = (a: number, ws: Float32Array) => forward(fakeQuantize(x, tf.scalar(a), aZero, aq.qmin, aq.qmax), fakeQuantize(w, tf.tensor(ws, shape), wZero, wq.qmin, wq.qmax), b);
    const mean = (v: Float32Array) => v.reduce((s, c) => s + c, 0) / v.length;
    const before = mean(cosines(run(sa, sw)));
    for (let r = 0; r < rounds; r++) {
      // activation: one scale for the whole input, judged on the mean channel cosine
      let bestA = sa;
      let bestScore = -Infinity;
      for (const f of FACTORS) {
        const score = tf.tidy(() => mean(cosines(run(aq.scale[0] * f, sw))));
        if (score > bestScore) { bestScore = score; bestA = aq.scale[0] * f; }
      }
      // weights: every output channel picks its own factor
      const best = new Float32Array(sw.length).fill(-Infinity);
      const chosen = Float32Array.from(sw);
      for (const f of FACTORS) {
        const trial = Float32Array.from(wq.scale, (s) => Math.fround(s * f));
        const c = tf.tidy(() => cosines(run(bestA, trial)));
        for (let k = 0; k < sw.length; k++) {
          // per-tensor weights: one factor for all channels, by the mean cosine
          const score = sw.length === 1 ? mean(c) : c[k];
          if (score > best[k]) { best[k] = score; chosen[k] = trial[k]; }
        }
      }
      const unchanged = bestA === sa && chosen.every((v, k) => v === sw[k]);
      sa = bestA;
      sw = chosen;
      if (unchanged) break;
    }
    const after = mean(cosines(run(sa, sw)));
    // never worse than where it started
    if (after < before) return { activationScale: aq.scale[0], weightScale: Float32Array.from(wq.scale), cosineBefore: before, cosineAfter: before };
    return { activationScale: Math.fround(sa), weightScale: sw, cosineBefore: before, cosineAfter: after };
  });
}
