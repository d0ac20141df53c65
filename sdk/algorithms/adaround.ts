/**
 * AdaRound (AMCT's ada_quantize; arXiv 2004.10568): per weight, learn whether to round down or
 * up so the layer's OUTPUT matches the float layer, instead of rounding each weight to nearest.
 *
 *   W̃ = s·clamp(⌊W/s⌋ + h(α) + z, qmin, qmax) − z·s,   h(α) = clamp(σ(α)(ζ − γ) + γ, 0, 1), ζ = 1.1, γ = −0.1
 *   loss = Σ_c (f(x, W̃) − f(x, W))² (mean over positions) + λ·Σ (1 − |2h − 1|^β)
 *
 * The regulariser is off for the first warm_start share of iterations, then β anneals linearly
 * from beta_range[0] to beta_range[1], pushing every h to 0 or 1. Adam on α (tfjs), layer by
 * layer on samples of the layer's float input. The result is hard: ⌊W/s⌋ + [h ≥ 0.5].
 */
import * as tf from '@tensorflow/tfjs';
import { invalidArgument } from '../errors';
import { QParams } from '../observers/qparams';
import { quantizeLinear } from '../kernels/quant';
import { LayerForward } from './layer-io';

export interface AdaRoundOptions {
  /** AMCT num_iteration (default 10000) */
  numIteration?: number;
  /** AMCT reg_param λ (default 0.01) */
  regParam?: number;
  /** AMCT beta_range (default [20, 2]) */
  betaRange?: [number, number];
  /** AMCT warm_start: share of iterations without the regulariser (default 0.2) */
  warmStart?: number;
  /** Adam learning rate on α (default 1e-2: the schedules used here are hundreds, not tens of thousands, of iterations) */
  learningRate?: number;
}

export interface AdaRoundResult {
  /** the chosen integer weights (signed int8 grid of `q`) */
  values: Int32Array;
  /** output MSE on the samples with round-to-nearest and with AdaRound */
  nearestMse: number;
  adaMse: number;
  /** weights rounded differently from nearest */
  flipped: number;
  /** 'nearest' when the learned rounding came out worse on the samples (then `values` are nearest's) */
  kept: 'ada' | 'nearest';
}

const ZETA = 1.1;
const GAMMA = -0.1;

export function checkAdaRoundOptions(o: AdaRoundOptions): Required<AdaRoundOptions> {
  const r = { numIteration: 10000, regParam: 0.01, betaRange: [20, 2] as [number, number], warmStart: 0.2, learningRate: 1e-2, ...o };
  if (!Number.isInteger(r.numIteration) || r.numIteration < 1) throw invalidArgument('num_iteration', r.numIteration, 'an integer ≥ 1');
  if (!(r.regParam > 0)) throw invalidArgument('reg_param', r.regParam, 'a number > 0');
  if (!Array.isArray(r.betaRange) || r.betaRange.length !== 2 || !(r.betaRange[0] > 0) || !(r.betaRange[1] > 0)) throw invalidArgument('beta_range', r.betaRange, 'two numbers > 0 (start, end)');
  if (!(r.warmStart >= 0 && r.warmStart < 1)) throw invalidArgument('warm_start', r.warmStart, 'a number in [0, 1)');
  if (!(r.learningRate > 0)) throw invalidArgument('learningRate', r.learningRate, 'a number > 0');
  return r;
}

/** Broadcast shape of per-channel parameters along `axis` of a weight of shape `dims`. */
function channelShape(dims: number[], axis: number, perChannel: boolean): number[] {
  return dims.map((d, i) => (perChannel && i === axis ? d : 1));
}

export async function adaRound(
  forward: LayerForward,
  weight: { data: Float32Array; dims: number[]; axis: number },
  q: QParams,
  input: { data: Float32Array; dims: number[] },
  bias: Float32Array | undefined,
  options: AdaRoundOptions = {},
): Promise<AdaRoundResult> {
  const o = checkAdaRoundOptions(options);
  const perChannel = q.scale.length > 1;
  const shape = channelShape(weight.dims, weight.axis, perChannel);
  const nearest = Int32Array.from(quantizeLinear(weight.data, q.scale, q.zeroPoint, q, weight.dims, weight.axis));
  const [x, w, s, z, b] = [
    tf.tensor(input.data, input.dims),
    tf.tensor(weight.data, weight.dims),
    tf.tensor(q.scale, shape),
    tf.tensor(Float32Array.from(q.zeroPoint), shape),
    bias && tf.tensor1d(bias),
  ];
  const target = tf.tidy(() => forward(x, w, b));
  const floorW = tf.tidy(() => tf.floor(w.div(s)));
  // start from h = the fractional part: the soft weights equal the float ones
  const alpha = tf.variable(tf.tidy(() => {
    const p = w.div(s).sub(floorW).sub(GAMMA).div(ZETA - GAMMA).clipByValue(1e-4, 1 - 1e-4);
    return tf.log(p.div(tf.sub(1, p)));
  }), true);
  const h = () => tf.sigmoid(alpha).mul(ZETA - GAMMA).add(GAMMA).clipByValue(0, 1);
  const dequant = (r: tf.Tensor) => floorW.add(r).add(z).clipByValue(q.qmin, q.qmax).sub(z).mul(s);
  // per output position: squared error summed over channels (axis 1 for Conv, last for matmul)
  const channelAxis = target.rank >= 3 ? 1 : target.rank - 1;
  const outputError = (wq: tf.Tensor) => forward(x, wq, b).sub(target).square().sum(channelAxis).mean();
  const optimizer = tf.train.adam(o.learningRate);
  const warm = Math.floor(o.warmStart * o.numIteration);
  for (let it = 0; it < o.numIteration; it++) {
    const progress = it < warm ? -1 : (it - warm) / Math.max(1, o.numIteration - warm);
    const beta = o.betaRange[1] + (o.betaRange[0] - o.betaRange[1]) * (1 - Math.max(0, progress));
    const cost = optimizer.minimize(() => {
      const hv = h();
      const rec = outputError(dequant(hv));
      if (progress < 0) return rec as tf.Scalar;
      const reg = tf.sub(1, hv.mul(2).sub(1).abs().pow(beta)).sum().mul(o.regParam);
      return rec.add(reg) as tf.Scalar;
    }, false, [alpha]);
    cost?.dispose();
    // let the event loop breathe on long runs (progress displays, cancellation)
    if (it % 200 === 199) await tf.nextFrame();
  }
  const ada = tf.tidy(() => floorW.add(h().greaterEqual(0.5).toFloat()).add(z).clipByValue(q.qmin, q.qmax));
  const values = Int32Array.from(await ada.data() as Float32Array);
  const mseOf = (v: Int32Array) => tf.tidy(() => outputError(tf.tensor(Float32Array.from(v), weight.dims).sub(z).mul(s)).dataSync()[0]);
  const [nearestMse, adaMse] = [mseOf(nearest), mseOf(values)];
  // never worse than nearest on the data it learned from
  const kept = adaMse < nearestMse ? 'ada' : 'nearest';
  const result: AdaRoundResult = { values: kept === 'ada' ? values : nearest, nearestMse, adaMse, flipped: values.reduce((k, v, i) => k + (v !== nearest[i] ? 1 : 0), 0), kept };
  tf.dispose([x, w, s, z, target, floorW, alpha, ada, ...(b ? [b] : [])]);
  optimizer.dispose();
  return result;
}
