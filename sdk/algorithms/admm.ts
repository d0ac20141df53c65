/**
 * ADMM weight quantization (msModelSlim QuantConfig keep_acc 'admm': [on, iterations]; the seed:
 * "admm … 改善权重量化，减少权重量化误差，推荐在Label-Free模式下使用" — improves weight
 * quantization, used with calibration data). The alternating direction method of multipliers on
 *
 *   min_Q  f(Q) = Σ_c (q_c − w_c)ᵀ H_c (q_c − w_c)   s.t.  q_c on the grid s_c·(k − z_c), k ∈ [qmin, qmax]
 *
 * where w_c is output channel c's weights and H_c = XᵀX / n the Gram matrix of the layer's
 * input patches (shared by the output channels of one conv group): f is the layer's output error
 * ‖XW − XQ‖² (summed over channels, mean over positions), which round-to-nearest ignores.
 * With V the continuous copy that carries f and G the grid copy that carries the constraint
 * (V = G), U the scaled dual variable and ρ the penalty, each iteration is
 *
 *   V ← argmin_V f(V) + ρ/2‖V − G + U‖²  = (2H + ρI)⁻¹ (2H·W + ρ(G − U))   (K ≤ 384 weights per
 *                                            channel: explicit inverse; larger: 8 preconditioned CG
 *                                            steps from the previous V, an inexact ADMM step)
 *   G ← Π_grid(V + U)                    = s·(clamp(round((V + U)/s) + z) − z)      (exact projection)
 *   U ← U + V − G
 *
 * starting from G = round-to-nearest, U = 0. ρ starts at 1% of the mean diagonal of 2H and grows
 * ×1.6 over 20 equal stages (a discrete constraint needs the growing penalty to settle), so G
 * freezes and the dual residual ρ‖G − G_prev‖ falls to 0. The result is the best G seen (never
 * worse than round-to-nearest on the samples). Scales stay those of `q` (min/max or EasyQuant's).
 */
import * as tf from '@tensorflow/tfjs';
import { invalidArgument } from '../errors';
import { QParams } from '../observers/qparams';
import { quantizeLinear } from '../kernels/quant';
import { LayerForward } from './layer-io';

export interface AdmmResult {
  /** the chosen integers (on q's grid, zero point included), same layout as the weight */
  values: Int32Array;
  /** f (layer output error on the samples) with round-to-nearest and with the ADMM result */
  nearestError: number;
  error: number;
  /** per iteration: f(G), primal residual ‖V − G‖ and dual residual ρ‖G − G_prev‖ (Frobenius, all channels) */
  history: { objective: number[]; primal: number[]; dual: number[]; rho: number[] };
  /** weights whose integer differs from round-to-nearest */
  flipped: number;
}

export interface AdmmLayer {
  forward: LayerForward;
  weight: { data: Float32Array; dims: number[]; axis: number };
  /** conv group count (1 for MatMul/Gemm) */
  group: number;
  /** samples of the layer's float input */
  input: { data: Float32Array; dims: number[] };
}

const STAGES = 20;
/** up to this many weights per output channel the V-update uses (2H + ρI)⁻¹, above it CG */
const DIRECT_MAX = 384;
const CG_STEPS = 8;

/** Column-wise Jacobi-preconditioned conjugate gradient on (2H + ρI)X = B from X0. */
function conjugateGradient(h: tf.Tensor2D, diagH: tf.Tensor2D, rho: number, b: tf.Tensor2D, x0: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const apply = (x: tf.Tensor2D) => tf.matMul(h, x).mul(2).add(x.mul(rho)) as tf.Tensor2D;
    const d = diagH.mul(2).add(rho);
    let x = x0;
    let r = b.sub(apply(x0)) as tf.Tensor2D;
    let z = r.div(d) as tf.Tensor2D;
    let p = z;
    let rz = r.mul(z).sum(0, true);
    for (let i = 0; i < CG_STEPS; i++) {
      const ap = apply(p);
      const alpha = tf.divNoNan(rz, p.mul(ap).sum(0, true));
      x = x.add(p.mul(alpha)) as tf.Tensor2D;
      r = r.sub(ap.mul(alpha)) as tf.Tensor2D;
      z = r.div(d) as tf.Tensor2D;
      const next = r.mul(z).sum(0, true);
      p = z.add(p.mul(tf.divNoNan(next, rz))) as tf.Tensor2D;
      rz = next;
    }
    return x;
  });
}
const GROWTH = 1.6;

/** flat index of (output channel c, slice position k) in a weight of `dims` with channel axis `axis` */
function flatIndex(dims: number[], axis: number): (c: number, k: number) => number {
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  return (c, k) => (Math.floor(k / inner) * dims[axis] + c) * inner + (k % inner);
}

/** Inverse of a symmetric positive definite n×n matrix (Cholesky, float64). */
export function spdInverse(a: Float64Array, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = a[i * n + j];
      for (let k = 0; k < j; k++) sum -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = i === j ? Math.sqrt(Math.max(sum, 1e-300)) : sum / l[j * n + j];
    }
  }
  // L⁻¹ (lower), then A⁻¹ = L⁻ᵀ L⁻¹
  const li = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    li[j * n + j] = 1 / l[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let sum = 0;
      for (let k = j; k < i; k++) sum -= l[i * n + k] * li[k * n + j];
      li[i * n + j] = sum / l[i * n + i];
    }
  }
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) {
    let sum = 0;
    for (let k = i; k < n; k++) sum += li[k * n + i] * li[k * n + j];
    inv[i * n + j] = sum;
    inv[j * n + i] = sum;
  }
  return inv;
}

/**
 * Gram matrices H_g = P_gᵀP_g / positions of the layer's input patches, one per group, built by
 * running the layer on one-hot weights (output channel g·K + k reads exactly slice element k).
 */
export function patchGram(layer: AdmmLayer): { k: number; grams: Float64Array[] } {
  const { dims, axis } = layer.weight;
  const channels = dims[axis];
  const k = dims.reduce((a, b) => a * b, 1) / channels;
  const g = layer.group;
  const eDims = dims.map((d, i) => (i === axis ? g * k : d));
  const e = new Float32Array(g * k * k);
  const at = flatIndex(eDims, axis);
  for (let o = 0; o < g * k; o++) e[at(o, o % k)] = 1;
  const grams = tf.tidy(() => {
    const p = layer.forward(tf.tensor(layer.input.data, layer.input.dims), tf.tensor(e, eDims));
    const chAxis = p.rank >= 3 ? 1 : p.rank - 1;
    const perm = [...Array(p.rank).keys()].filter((i) => i !== chAxis).concat(chAxis);
    const rows = p.transpose(perm).reshape([-1, g * k]);
    const n = rows.shape[0];
    return Array.from({ length: g }, (_, gi) => {
      const pg = rows.slice([0, gi * k], [n, k]);
      return tf.matMul(pg, pg, true, false).div(n);
    });
  });
  const out = grams.map((t) => Float64Array.from(t.dataSync()));
  tf.dispose(grams);
  return { k, grams: out };
}

export function admmWeights(layer: AdmmLayer, q: QParams, iterations: number): AdmmResult {
  if (!Number.isInteger(iterations) || iterations < 1) throw invalidArgument('keep_acc.admm iterations', iterations, 'an integer ≥ 1');
  const { data, dims, axis } = layer.weight;
  const channels = dims[axis];
  const g = layer.group;
  if (channels % g !== 0) throw invalidArgument('group', g, `a divisor of the ${channels} output channels`);
  const perChannel = q.scale.length > 1;
  const nearest = Int32Array.from(quantizeLinear(data, q.scale, q.zeroPoint, q, dims, perChannel ? axis : 1));
  const { k, grams } = patchGram(layer);
  const at = flatIndex(dims, axis);
  const cg = channels / g;
  const values = Int32Array.from(nearest);
  const history = { objective: new Array<number>(iterations).fill(0), primal: new Array<number>(iterations).fill(0), dual: new Array<number>(iterations).fill(0), rho: new Array<number>(iterations).fill(0) };
  let nearestError = 0;
  let error = 0;
  const stageLength = Math.max(1, Math.ceil(iterations / STAGES));
  for (let gi = 0; gi < g; gi++) {
    const h = grams[gi];
    const cols = Array.from({ length: cg }, (_, j) => gi * cg + j);
    // group's matrices [K, Cg]: column j = output channel gi·Cg + j
    const take = (src: ArrayLike<number>) => { const m = new Float32Array(k * cg); cols.forEach((c, j) => { for (let r = 0; r < k; r++) m[r * cg + j] = src[at(c, r)]; }); return m; };
    const sc = Float32Array.from(cols, (c) => q.scale[perChannel ? c : 0]);
    const zc = Float32Array.from(cols, (c) => q.zeroPoint[perChannel ? c : 0] ?? 0);
    const trace = h.reduce((a, _, i) => (i % (k + 1) === 0 ? a + h[i] : a), 0);
    const rho0 = 0.01 * (2 * trace / k) || 1e-6;
    const best = tf.tidy(() => {
      const H = tf.tensor2d(Float32Array.from(h), [k, k]);
      const W = tf.tensor2d(take(data), [k, cg]);
      const s = tf.tensor2d(sc, [1, cg]);
      const z = tf.tensor2d(zc, [1, cg]);
      const project = (t: tf.Tensor2D) => t.div(s).round().add(z).clipByValue(q.qmin, q.qmax).sub(z).mul(s) as tf.Tensor2D;
      const objective = (G: tf.Tensor2D) => { const d = G.sub(W); return d.mul(tf.matMul(H, d)).sum().dataSync()[0]; };
      const twoHW = tf.matMul(H, W).mul(2);
      let G = tf.keep(project(W));
      let U = tf.keep(tf.zerosLike(W));
      let bestG = tf.keep(G.clone());
      const start = objective(G);
      let bestF = start;
      let minv: tf.Tensor2D | undefined;
      let lastV: tf.Tensor2D = tf.keep(W.clone());
      const diagH = tf.tensor2d(Float32Array.from({ length: k }, (_, i) => h[i * k + i]), [k, 1]);
      let rho = rho0;
      for (let it = 0; it < iterations; it++) {
        if (it % stageLength === 0) {
          rho = rho0 * GROWTH ** Math.floor(it / stageLength);
          if (k <= DIRECT_MAX) {
            const m = new Float64Array(k * k);
            for (let i = 0; i < k * k; i++) m[i] = 2 * h[i];
            for (let i = 0; i < k; i++) m[i * k + i] += rho;
            minv?.dispose();
            minv = tf.keep(tf.tensor2d(Float32Array.from(spdInverse(m, k)), [k, k]));
          }
        }
        const step = tf.tidy(() => {
          const rhs = twoHW.add(G.sub(U).mul(rho)) as tf.Tensor2D;
          // (2H + ρI)V = rhs: exact inverse for small K, else preconditioned CG warm-started at the last V
          const V = minv ? tf.matMul(minv, rhs) : conjugateGradient(H, diagH, rho, rhs, lastV);
          tf.dispose(lastV);
          lastV = tf.keep(V.clone()) as tf.Tensor2D;
          const nextG = project(V.add(U) as tf.Tensor2D);
          const nextU = U.add(V).sub(nextG);
          return { V, nextG, nextU, primal: V.sub(nextG).square().sum(), dual: nextG.sub(G).square().sum() };
        });
        history.primal[it] += step.primal.dataSync()[0];
        history.dual[it] += rho ** 2 * step.dual.dataSync()[0];
        history.rho[it] = rho;
        const f = objective(step.nextG as tf.Tensor2D);
        history.objective[it] += f;
        tf.dispose([G, U, step.V, step.primal, step.dual]);
        G = step.nextG as tf.Tensor2D;
        U = step.nextU as tf.Tensor2D;
        if (f < bestF) { bestF = f; bestG.dispose(); bestG = tf.keep(G.clone()); }
      }
      const ints = bestG.div(s).round().add(z).dataSync();
      tf.dispose([G, U, bestG, lastV, ...(minv ? [minv] : [])]);
      nearestError += start;
      error += bestF;
      return ints;
    }) as unknown as Float32Array;
    cols.forEach((c, j) => { for (let r = 0; r < k; r++) values[at(c, r)] = Math.round(best[r * cg + j]); });
  }
  for (let it = 0; it < iterations; it++) { history.primal[it] = Math.sqrt(history.primal[it]); history.dual[it] = Math.sqrt(history.dual[it]); }
  return { values, nearestError, error, history, flipped: values.reduce((n, v, i) => n + (v !== nearest[i] ? 1 : 0), 0) };
}
