/**
 * Fake quantization for training: y = (clip(round(x/s) + z, qmin, qmax) − z)·s in the forward
 * pass, the straight-through estimator in the backward pass (the gradient passes where x lies
 * inside the representable range [(qmin − z)·s, (qmax − z)·s], zero outside).
 *
 * Scale and zero point come from qparamsFromRange, the same function the QDQ exporter uses,
 * so what training simulates is bit-for-bit what the exported model computes.
 *
 *  - ActivationFakeQuant: one range per tensor, tracked from the batches (EMA or last batch),
 *    frozen at inference; optionally a learned scale (LSQ) once the range is initialised.
 *  - WeightFakeQuant: per-channel (or per-tensor) min/max of the current weights at every step.
 * Both are the identity until `quantDelay` training steps have passed (ranges still tracked).
 */
// tfjs-core, not the tfjs bundle: the same objects (tfjs re-exports core), and published types that do not pull in tfjs-layers
import * as tf from '@tensorflow/tfjs-core';
import { QParams, QuantSpec, qparamsFromRange } from '../observers/qparams';

/** STE fake quantization with fixed (per-tensor or broadcastable per-channel) parameters. */
export function fakeQuantize(x: tf.Tensor, scale: tf.Tensor, zeroPoint: tf.Tensor, qmin: number, qmax: number): tf.Tensor {
  const op = tf.customGrad((v, save) => {
    const input = v as tf.Tensor;
    const q = tf.round(input.div(scale)).add(zeroPoint);
    (save as tf.GradSaveFunc)([q]);
    return {
      value: q.clipByValue(qmin, qmax).sub(zeroPoint).mul(scale),
      gradFunc: (dy, [saved]) => (dy as tf.Tensor).mul(tf.logicalAnd(saved.greaterEqual(qmin), saved.lessEqual(qmax)).toFloat()),
    };
  });
  return op(x) as tf.Tensor;
}

/**
 * LSQ fake quantization: the scale is learned. ∂y/∂s = round(x/s) − x/s inside the range and
 * (qmin − z) or (qmax − z) where clipped, multiplied by `gradScale` (LSQ's 1/√(N·qmax) keeps the
 * scale's step size in proportion to the weights'; msModelSlim exposes it as grad_scale).
 */
export function learnedScaleFakeQuantize(x: tf.Tensor, scale: tf.Tensor, zeroPoint: number, qmin: number, qmax: number, gradScale: number): tf.Tensor {
  const op = tf.customGrad((v, s, save) => {
    const input = v as tf.Tensor;
    const sc = s as tf.Tensor;
    const ratio = input.div(sc);
    const q = tf.round(ratio).add(zeroPoint);
    (save as tf.GradSaveFunc)([ratio, q]);
    return {
      value: q.clipByValue(qmin, qmax).sub(zeroPoint).mul(sc),
      gradFunc: (dy, [r, qs]) => {
        const g = dy as tf.Tensor;
        const below = qs.less(qmin);
        const above = qs.greater(qmax);
        const inside = tf.logicalNot(tf.logicalOr(below, above));
        const ds = tf.where(below, tf.scalar(qmin - zeroPoint), tf.where(above, tf.scalar(qmax - zeroPoint), tf.round(r).sub(r)));
        return [g.mul(inside.toFloat()), g.mul(ds).sum().mul(gradScale).reshape(sc.shape)];
      },
    };
  });
  return op(x, scale) as tf.Tensor;
}

export interface ActivationQuantOptions {
  spec: QuantSpec;
  /** EMA decay of the tracked range in (0, 1); undefined: the last batch's range */
  ema?: number;
  quantDelay: number;
  /** learn the scale (LSQ) with this gradient scale; undefined: min/max only */
  learnScale?: number;
}

export class ActivationFakeQuant {
  min?: number;
  max?: number;
  /** training steps seen (the quant_delay clock) */
  steps = 0;
  /** false: pass-through (the layer fell back to float, or a float reference is measured) */
  enabled = true;
  /** the learned scale (LSQ), created from the range at the first quantized step */
  scale?: tf.Variable;

  /** `onVariable` receives the learned scale when it is created (to be trained) */
  constructor(readonly tensor: string, readonly options: ActivationQuantOptions, private readonly onVariable?: (v: tf.Variable) => void) {}

  get active(): boolean { return this.steps >= this.options.quantDelay && this.min !== undefined; }

  private observe(x: tf.Tensor): void {
    const [lo, hi] = tf.tidy(() => [x.min(), x.max()]).map((t) => { const v = t.dataSync()[0]; t.dispose(); return v; });
    const d = this.options.ema;
    if (this.min === undefined || this.max === undefined || d === undefined) {
      this.min = lo;
      this.max = hi;
    } else {
      this.min = d * this.min + (1 - d) * lo;
      this.max = d * this.max + (1 - d) * hi;
    }
  }

  /** The scale/zero point the exporter writes (the learned scale when there is one). */
  qparams(): QParams {
    const q = qparamsFromRange([this.min ?? 0], [this.max ?? 0], { ...this.options.spec, perChannel: false });
    if (this.scale) q.scale[0] = this.scale.dataSync()[0];
    return q;
  }

  setLearnedScale(value: number): void {
    if (this.scale) {
      this.scale.assign(tf.scalar(value));
      return;
    }
    this.scale = tf.variable(tf.scalar(value), true);
    this.onVariable?.(this.scale);
  }

  apply(x: tf.Tensor, training: boolean): tf.Tensor {
    // quant_delay counts the training steps before this one: the first quantDelay steps run in float
    const before = this.steps;
    if (training) {
      // a learned scale replaces range tracking once it exists
      if (!this.scale) this.observe(x);
      this.steps++;
    }
    if (before < this.options.quantDelay || this.min === undefined || !this.enabled) return x;
    const q = this.qparams();
    if (this.options.learnScale !== undefined) {
      if (!this.scale) this.setLearnedScale(q.scale[0]);
      return learnedScaleFakeQuantize(x, this.scale!, q.zeroPoint[0], q.qmin, q.qmax, this.options.learnScale);
    }
    return fakeQuantize(x, tf.scalar(q.scale[0]), tf.scalar(q.zeroPoint[0]), q.qmin, q.qmax);
  }

}

export class WeightFakeQuant {
  steps = 0;
  enabled = true;

  constructor(readonly layer: string, readonly spec: QuantSpec, readonly quantDelay: number) {}

  /** Per-channel parameters of the current weight values `w` (channels on spec.channelAxis). */
  qparams(w: tf.Tensor): QParams {
    const axis = this.spec.channelAxis;
    const others = w.shape.map((_, i) => i).filter((i) => i !== axis);
    const [lo, hi] = tf.tidy(() => (this.spec.perChannel ? [w.min(others), w.max(others)] : [w.min(), w.max()]));
    const q = qparamsFromRange(lo.dataSync(), hi.dataSync(), this.spec);
    tf.dispose([lo, hi]);
    return q;
  }

  apply(w: tf.Tensor, training: boolean): tf.Tensor {
    // as for activations: identity for the first quantDelay training steps
    const before = this.steps;
    if (training) this.steps++;
    if (before < this.quantDelay || !this.enabled) return w;
    const q = this.qparams(w);
    const shape = w.shape.map((d, i) => (this.spec.perChannel && i === this.spec.channelAxis ? d : 1));
    return fakeQuantize(w, tf.tensor(q.scale, shape), tf.tensor(q.zeroPoint, shape, 'float32'), q.qmin, q.qmax);
  }
}
