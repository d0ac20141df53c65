import * as assert from 'assert';
import * as tf from '@tensorflow/tfjs';
import { admmWeights } from '../../sdk/algorithms/admm';
import { weightQParams } from '../../sdk/observers';
import { conv2d } from '../../sdk/train/conv';

/** Deterministic pseudo-random numbers (mulberry32) mapped to roughly N(0, 1). */
function gauss(seed: number): () => number {
  let a = seed >>> 0;
  const u = () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296; };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** The integers' dequantized weight: s_c·(v − z_c), float64. */
/** Independent reckoning: mean over rows of Σ_c ((XW)_rc − (XŴ)_rc)², in float64 loops. */
function matmulOutputError(x: Float32Array, w: Float32Array, wq: Float64Array, rows: number, k: number, n: number): number {
  let e = 0;
  for (let r0 = 0; r0 < rows; r0++) for (let c = 0; c < n; c++) {
    let d = 0;
    for (let j = 0; j < k; j++) d += x[r0 * k + j] * (w[j * n + c] - wq[j * n + c]);
    e += d * d;
  }
  return e / rows;
}

function dequant(values: Int32Array, scale: Float32Array, zero: Int32Array, channelOf: (i: number) => number): Float64Array {
  return Float64Array.from(values, (v, i) => Math.fround(scale[channelOf(i)]) * (v - (zero[channelOf(i)] ?? 0)));
}

describe('ADMM weight quantization (keep_acc admm): V/G/U iterations on the layer output error', () => {
  it('MatMul: the output error falls over the iterations to below round-to-nearest (re-computed in float64 here), the dual residual goes to 0', () => {
    const rnd = gauss(7);
    const [rows, k, n] = [256, 16, 8];
    // correlated input columns: the error of one weight can cancel another's, which rounding to nearest ignores
    const base = Array.from({ length: rows }, () => Array.from({ length: 4 }, rnd));
    const x = Float32Array.from({ length: rows * k }, (_, i) => base[Math.floor(i / k)][i % 4] + 0.3 * rnd());
    const w = Float32Array.from({ length: k * n }, rnd);
    const q = weightQParams(w, [k, n], { numBits: 4, channelAxis: 1 });
    const iterations = 200;
    const r = admmWeights({ forward: (a, b) => tf.matMul(a, b), weight: { data: w, dims: [k, n], axis: 1 }, group: 1, input: { data: x, dims: [rows, k] } }, q, iterations);
    const outputError = (wq: Float64Array) => matmulOutputError(x, w, wq, rows, k, n);
    const nearest = Int32Array.from(w, (v, i) => Math.max(q.qmin, Math.min(q.qmax, Math.round(v / q.scale[i % n]))));
    const eNearest = outputError(dequant(nearest, q.scale, q.zeroPoint, (i) => i % n));
    const eAdmm = outputError(dequant(r.values, q.scale, q.zeroPoint, (i) => i % n));
    console.log(`      output error: nearest ${eNearest.toExponential(3)} → ADMM ${eAdmm.toExponential(3)} (${r.flipped} of ${w.length} weights flipped); dual residual ${r.history.dual[0].toExponential(2)} → ${r.history.dual[iterations - 1]}`);
    assert.ok(Math.abs(r.nearestError - eNearest) <= 1e-3 * eNearest, `${r.nearestError} vs ${eNearest}`);
    assert.ok(Math.abs(r.error - eAdmm) <= 1e-3 * eAdmm, `${r.error} vs ${eAdmm}`);
    assert.ok(eAdmm < 0.7 * eNearest, `${eAdmm} vs nearest ${eNearest}`);
    // the integers stay on the grid
    assert.ok(r.values.every((v) => v >= q.qmin && v <= q.qmax));
    // the objective of the iterates decreases: last tenth well below the first tenth, and the last below nearest
    const h = r.history.objective;
    const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
    assert.ok(mean(h.slice(-20)) < 0.8 * mean(h.slice(0, 20)), `${mean(h.slice(0, 20))} → ${mean(h.slice(-20))}`);
    assert.ok(h[iterations - 1] < eNearest);
    // ρ grows, G freezes: dual residual ρ‖G − G_prev‖ ends at 0, primal ‖V − G‖ falls
    assert.ok(r.history.rho[iterations - 1] > 1000 * r.history.rho[0]);
    assert.ok(Math.max(...r.history.dual.slice(0, 20)) > 0);
    assert.ok(r.history.dual.slice(-10).every((d) => d <= 1e-9 * Math.max(...r.history.dual)), r.history.dual.slice(-10).join(', '));
    assert.ok(r.history.primal[iterations - 1] < 0.1 * Math.max(...r.history.primal.slice(0, 20)));
  });

  it('wide layer (K = 400 weights per channel: the conjugate-gradient V-update) still ends well below round-to-nearest', () => {
    const rnd = gauss(13);
    const [rows, k, n] = [512, 400, 4];
    const base = Array.from({ length: rows }, () => Array.from({ length: 8 }, rnd));
    const x = Float32Array.from({ length: rows * k }, (_, i) => base[Math.floor(i / k)][i % 8] + 0.3 * rnd());
    const w = Float32Array.from({ length: k * n }, rnd);
    const q = weightQParams(w, [k, n], { numBits: 4, channelAxis: 1 });
    const r = admmWeights({ forward: (a, b) => tf.matMul(a, b), weight: { data: w, dims: [k, n], axis: 1 }, group: 1, input: { data: x, dims: [rows, k] } }, q, 60);
    const outputError = (wq: Float64Array) => matmulOutputError(x, w, wq, rows, k, n);
    const eNearest = outputError(dequant(Int32Array.from(w, (v, i) => Math.max(q.qmin, Math.min(q.qmax, Math.round(v / q.scale[i % n])))), q.scale, q.zeroPoint, (i) => i % n));
    const eAdmm = outputError(dequant(r.values, q.scale, q.zeroPoint, (i) => i % n));
    console.log(`      K = 400: output error nearest ${eNearest.toExponential(3)} → ADMM ${eAdmm.toExponential(3)}`);
    assert.ok(Math.abs(r.error - eAdmm) <= 1e-3 * eAdmm, `${r.error} vs ${eAdmm}`);
    assert.ok(eAdmm < 0.2 * eNearest, `${eAdmm} vs ${eNearest}`);
  });

  it('grouped Conv (group 2, weight [Cout, Cin/g, kh, kw]): per-group Gram matrices; error below nearest against a direct float64 convolution', () => {
    const rnd = gauss(11);
    const [nb, cin, hw, cout, g] = [2, 4, 8, 6, 2];
    const cpg = cin / g;
    // smooth images (a per-channel level plus a ramp and a little noise): neighbouring taps correlate
    const level = Array.from({ length: nb * cin }, rnd);
    const x = Float32Array.from({ length: nb * cin * hw * hw }, (_, i) => level[Math.floor(i / (hw * hw))] + 0.1 * ((i % hw) - hw / 2) / hw + 0.2 * rnd());
    const w = Float32Array.from({ length: cout * cpg * 9 }, rnd);
    const attrs = { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: g } as unknown as Parameters<typeof conv2d>[3];
    const q = weightQParams(w, [cout, cpg, 3, 3], { numBits: 4, channelAxis: 0 });
    const r = admmWeights({ forward: (a, b) => conv2d(a as tf.Tensor4D, b as tf.Tensor4D, undefined, attrs), weight: { data: w, dims: [cout, cpg, 3, 3], axis: 0 }, group: g, input: { data: x, dims: [nb, cin, hw, hw] } }, q, 100);
    // direct convolution (zero padding 1, stride 1) of the weight difference; error = mean over positions of Σ_c
    const outputError = (wq: Float64Array) => {
      let e = 0;
      for (let b = 0; b < nb; b++) for (let o = 0; o < cout; o++) for (let yy = 0; yy < hw; yy++) for (let xx = 0; xx < hw; xx++) {
        let d = 0;
        const grp = Math.floor(o / (cout / g));
        for (let j = 0; j < cpg; j++) for (let ky = 0; ky < 3; ky++) for (let kx = 0; kx < 3; kx++) {
          const iy = yy + ky - 1;
          const ix = xx + kx - 1;
          if (iy < 0 || ix < 0 || iy >= hw || ix >= hw) continue;
          const wi = ((o * cpg + j) * 3 + ky) * 3 + kx;
          d += x[((b * cin + grp * cpg + j) * hw + iy) * hw + ix] * (w[wi] - wq[wi]);
        }
        e += d * d;
      }
      return e / (nb * hw * hw);
    };
    const per = cpg * 9;
    const nearest = Int32Array.from(w, (v, i) => Math.max(q.qmin, Math.min(q.qmax, Math.round(v / q.scale[Math.floor(i / per)]))));
    const eNearest = outputError(dequant(nearest, q.scale, q.zeroPoint, (i) => Math.floor(i / per)));
    const eAdmm = outputError(dequant(r.values, q.scale, q.zeroPoint, (i) => Math.floor(i / per)));
    console.log(`      grouped conv output error: nearest ${eNearest.toExponential(3)} → ADMM ${eAdmm.toExponential(3)}`);
    assert.ok(Math.abs(r.nearestError - eNearest) <= 1e-3 * eNearest, `${r.nearestError} vs ${eNearest}`);
    assert.ok(Math.abs(r.error - eAdmm) <= 1e-3 * eAdmm, `${r.error} vs ${eAdmm}`);
    assert.ok(eAdmm < 0.7 * eNearest, `${eAdmm} vs ${eNearest}`);
  });
});
