import { strict as assert } from 'assert';
import {
  Observer, ObserverKind, PerChannelObserver, QuantbookError, createObserver, fakeQuantize, loopReductions, qparamsFromRange, resolveSpec,
} from '../../sdk';
import { BinMoments, histogramQdqError, thresholdKl } from '../../sdk/observers/histogram-family';
import { Histogram } from '../../sdk/kernels/histogram';
import { seededRandom } from '../helpers';

const rnd = seededRandom(99);
const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());

const laplace = () => (rnd() < 0.5 ? -1 : 1) * -Math.log(1 - rnd() + 1e-12);

/** 10 batches of a heavy-tailed (Laplace) distribution with a few large outliers in two of them. */
function heavyTailWithOutliers(): Float32Array[] {
  return Array.from({ length: 10 }, (_, b) => {
    const x = Float32Array.from({ length: 10000 }, () => 0.5 + laplace());
    if (b === 3) x.set([40, -25, 38], 100);
    if (b === 7) x.set([45], 5);
    return x;
  });
}

function concat(batches: Float32Array[]): Float32Array {
  const out = new Float32Array(batches.reduce((a, b) => a + b.length, 0));
  let o = 0;
  for (const b of batches) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}

/** Reference: mean squared error of fake-quantizing the actual data with range [lo, hi]. */
function dataMse(x: Float32Array, lo: number, hi: number): number {
  const q = qparamsFromRange([lo], [hi], resolveSpec());
  const y = fakeQuantize(x, q.scale, q.zeroPoint, q);
  let e = 0;
  for (let i = 0; i < x.length; i++) e += (y[i] - x[i]) ** 2;
  return e / x.length;
}

function run(kind: ObserverKind, batches: Float32Array[], options = {}): Observer {
  const o = createObserver(kind, {}, options) as Observer;
  for (const b of batches) o.observe(b);
  return o;
}

describe('observers against direct reference computations', () => {
  const uniform = Array.from({ length: 10 }, () => Float32Array.from({ length: 5000 }, () => -1 + 4 * rnd()));
  const all = concat(uniform);
  const exact = loopReductions.minMax(all);

  it('minmax: the exact range, and the ONNX scale/zero point for it (uint8 asymmetric)', () => {
    const o = run('minmax', uniform);
    assert.deepEqual(o.clipRange(), [exact.min, exact.max]);
    const q = o.qparams();
    const scale = Math.fround((exact.max - exact.min) / 255);
    assert.equal(q.scale[0], scale);
    assert.equal(q.zeroPoint[0], Math.round(-exact.min / scale));
    assert.deepEqual([q.qmin, q.qmax], [0, 255]);
  });

  it('minmax: signed symmetric, narrow range and other bit widths', () => {
    const sym = createObserver('minmax', { signed: true, symmetric: true }) as Observer;
    uniform.forEach((b) => sym.observe(b));
    const q = sym.qparams();
    assert.equal(q.scale[0], Math.fround(Math.max(-exact.min, exact.max) / 127));
    assert.equal(q.zeroPoint[0], 0);
    const narrow = createObserver('minmax', { narrowRange: true, numBits: 4 }) as Observer;
    uniform.forEach((b) => narrow.observe(b));
    const n = narrow.qparams();
    assert.deepEqual([n.qmin, n.qmax], [1, 15]);
    assert.equal(n.scale[0], Math.fround((exact.max - exact.min) / 14));
  });

  it('minmax with a moving average follows the per-batch extremes', () => {
    const c = 0.25;
    const o = run('minmax', uniform, { averagingConstant: c });
    let lo = 0;
    let hi = 0;
    uniform.forEach((b, i) => {
      const m = loopReductions.minMax(b);
      lo = i === 0 ? m.min : lo + c * (m.min - lo);
      hi = i === 0 ? m.max : hi + c * (m.max - hi);
    });
    const [a, b] = o.clipRange();
    assert.ok(Math.abs(a - lo) < 1e-12 && Math.abs(b - hi) < 1e-12);
  });

  const noisy = heavyTailWithOutliers();
  const noisyAll = concat(noisy);
  const sorted = Float32Array.from(noisyAll).sort();
  const noisyRange = loopReductions.minMax(noisyAll);
  const minmaxMse = dataMse(noisyAll, noisyRange.min, noisyRange.max);

  it('percentile: within two bins of the exact percentiles', () => {
    const o = run('percentile', noisy, { percentile: 0.999 });
    const h = o.histogram!;
    const [lo, hi] = o.clipRange();
    const at = (p: number) => sorted[Math.floor(p * (sorted.length - 1))];
    assert.ok(Math.abs(hi - at(0.999)) <= 2 * h.binWidth, `${hi} vs ${at(0.999)}`);
    assert.ok(Math.abs(lo - at(0.001)) <= 2 * h.binWidth, `${lo} vs ${at(0.001)}`);
  });

  it('sigma: mean ± k·std of all batches (to 1e-6)', () => {
    const o = run('sigma', noisy, { sigmaK: 3 });
    let sum = 0;
    let sq = 0;
    for (const v of noisyAll) sum += v;
    const mean = sum / noisyAll.length;
    for (const v of noisyAll) sq += (v - mean) ** 2;
    const std = Math.sqrt(sq / noisyAll.length);
    const [lo, hi] = o.clipRange();
    assert.ok(Math.abs(lo - (mean - 3 * std)) < 1e-6 && Math.abs(hi - (mean + 3 * std)) < 1e-6, `${lo},${hi} vs ${mean}±${3 * std}`);
  });

  it('mse: the chosen range is within 5% of the best of the same search done on the raw data', () => {
    const o = run('mse', noisy);
    const [lo, hi] = o.clipRange();
    let best = Infinity;
    for (let k = 1; k <= 100; k++) best = Math.min(best, dataMse(noisyAll, noisyRange.min * k / 100, noisyRange.max * k / 100));
    const got = dataMse(noisyAll, lo, hi);
    assert.ok(got <= best * 1.05, `mse ${got} vs brute force ${best}`);
    assert.ok(got < minmaxMse, 'clipping the tail pays on heavy-tailed data');
  });

  it('ifmr: percentile start + search_range/search_step scan matches the raw-data scan within 5%', () => {
    const o = run('ifmr', noisy, { maxPercentile: 0.9999, minPercentile: 0.9999 });
    const h = o.histogram!;
    const hi0 = h.percentile(0.9999);
    const lo0 = Math.min(0, h.percentile(0.0001));
    let best = Infinity;
    for (let k = 0; k < 60; k++) best = Math.min(best, dataMse(noisyAll, lo0 * (0.7 + k * 0.01), hi0 * (0.7 + k * 0.01)));
    const [lo, hi] = o.clipRange();
    const got = dataMse(noisyAll, lo, hi);
    assert.ok(got <= best * 1.05, `ifmr ${got} vs brute force ${best}`);
  });

  it('histogram (HFMG): clips the sparse tail and does strictly better than min-max on the data', () => {
    const o = run('histogram', noisy);
    const [lo, hi] = o.clipRange();
    assert.ok(hi < noisyRange.max && lo > noisyRange.min, `range [${lo}, ${hi}] vs observed [${noisyRange.min}, ${noisyRange.max}]`);
    // the reference it claims: min-max quantization of the same data, no slack
    const got = dataMse(noisyAll, lo, hi);
    assert.ok(got < minmaxMse, `hfmg mse ${got} vs minmax ${minmaxMse}`);
    assert.ok(got <= 0.95 * minmaxMse, `clipping the outliers pays at least 5%: ${got} vs ${minmaxMse}`);
    // the quantity the window search minimises (error on the histogram's bin centres), recomputed
    // directly: the chosen window is below the full (min-max) window it starts from
    const h = o.histogram!;
    assert.deepEqual([h.lo, h.hi], [noisyRange.min, noisyRange.max]);
    const histErr = (a: number, b: number) => histogramQdqError(h, qparamsFromRange([a], [b], resolveSpec()));
    assert.ok(histErr(lo, hi) < histErr(h.lo, h.hi), `histogram error ${histErr(lo, hi)} vs full range ${histErr(h.lo, h.hi)}`);
    // window edges are bin edges
    for (const e of [lo, hi]) assert.ok(Math.abs((e - h.lo) / h.binWidth - Math.round((e - h.lo) / h.binWidth)) < 1e-6, `${e} is not a bin edge`);
  });

  it('entropy: clips the tail where KL says so, keeping almost all of the mass', () => {
    const o = run('entropy', noisy);
    const [lo, hi] = o.clipRange();
    assert.ok(hi < noisyRange.max / 2, `threshold ${hi} of max ${noisyRange.max}`);
    const kept = noisyAll.filter((v) => v >= lo && v <= hi).length / noisyAll.length;
    assert.ok(kept > 0.99, `keeps ${kept} of the values`);
  });

  it('entropy: the prefix-sum KL equals the direct sum over bins for every threshold (1e-9)', () => {
    // the direct definition: P = first i bins + outliers in the last, Q = chunk mass spread over its nonzero bins
    const directKl = (hist: Float64Array, i: number, levels: number) => {
      const p = hist.slice(0, i);
      for (let k = i; k < hist.length; k++) p[i - 1] += hist[k];
      const q = new Float64Array(i);
      const per = i / levels;
      for (let j = 0; j < levels; j++) {
        const [a, b] = [Math.floor(j * per), j === levels - 1 ? i : Math.floor((j + 1) * per)];
        let mass = 0;
        let nonzero = 0;
        for (let k = a; k < b; k++) {
          mass += hist[k];
          if (hist[k]) nonzero++;
        }
        for (let k = a; k < b; k++) if (hist[k]) q[k] = mass / nonzero;
      }
      const ps = p.reduce((x, y) => x + y, 0);
      const qs = q.reduce((x, y) => x + y, 0);
      let kl = 0;
      for (let k = 0; k < i; k++) {
        if (!p[k]) continue;
        const [pk, qk] = [p[k] / ps, q[k] / qs];
        kl += qk > 0 ? pk * Math.log(pk / qk) : pk * 20;
      }
      return kl;
    };
    for (const [bins, levels, zeros] of [[512, 128, 0.3], [300, 256, 0.6], [1024, 128, 0]] as const) {
      const hist = Float64Array.from({ length: bins }, (_, k) => (rnd() < zeros ? 0 : Math.exp(-k / 60) * 1000 * rnd()));
      hist[bins - 3] = 0; // a threshold whose last bin is empty but has outliers beyond it
      const kl = thresholdKl(hist, levels);
      for (let i = levels; i <= bins; i++) {
        const [fast, direct] = [kl(i), directKl(hist, i, levels)];
        assert.ok(Math.abs(fast - direct) <= 1e-9 * Math.max(1, Math.abs(direct)), `bins ${bins}, i ${i}: ${fast} vs ${direct}`);
      }
    }
  });

  it('the QDQ error by level runs (prefix sums) equals the direct sum over bins (1e-6)', () => {
    for (const [bins, lo, hi, zeros] of [[2048, -3, 5, 0.2], [4096, 0, 10, 0], [1024, -1, 1, 0.7], [8192, -0.4, 12, 0.1]] as const) {
      const h = new Histogram(bins, lo, hi, Float64Array.from({ length: bins }, (_, k) => (rnd() < zeros ? 0 : Math.round(1e5 * Math.exp(-Math.abs(k - bins / 3) / 200) * rnd()))));
      const moments = new BinMoments(h);
      for (let t = 0; t < 40; t++) {
        const [a, b] = [lo + (hi - lo) * 0.4 * rnd(), hi - (hi - lo) * 0.4 * rnd()];
        for (const spec of [resolveSpec({}), resolveSpec({ signed: true, symmetric: true }), resolveSpec({ numBits: 4 })]) {
          const q = qparamsFromRange([a], [b], spec);
          const [fast, direct] = [moments.qdqError(q), histogramQdqError(h, q)];
          assert.ok(Math.abs(fast - direct) <= 1e-6 * direct + 1e-9, `bins ${bins} [${a}, ${b}] ${spec.numBits} bits: ${fast} vs ${direct}`);
        }
      }
    }
  });

  it('keeps a fixed amount of state however many batches it sees', () => {
    const o = createObserver('histogram', {}, { bins: 2048 }) as Observer;
    for (let i = 0; i < 100; i++) o.observe(Float32Array.from({ length: 1000 }, () => gauss() * (1 + i / 10)));
    assert.equal(o.state().histogram!.counts.length, 2048);
    assert.equal(o.batchesSeen, 100);
    assert.equal(o.state().count, 100_000);
  });

  it('per channel: one range per channel along the axis', () => {
    const shape = [4, 3, 10];
    const x = Float32Array.from({ length: 120 }, (_, i) => ((i * 37) % 23) - 11 + Math.floor(i / 10) % 3 * 100);
    const o = createObserver('minmax', { perChannel: true, channelAxis: 1, signed: true, symmetric: true });
    assert.ok(o instanceof PerChannelObserver);
    o.observe(x, shape);
    const ref = loopReductions.channelMinMax(x, shape, 1);
    const q = o.qparams();
    assert.equal(q.axis, 1);
    for (let c = 0; c < 3; c++) assert.equal(q.scale[c], Math.fround(Math.max(-ref.min[c], ref.max[c]) / 127));
  });

  it('rejects bad settings naming the allowed values', () => {
    assert.throws(() => createObserver('histogram', {}, { bins: 100 }), /histogram observer: bins: got 100; expected an integer from 1024 to 8192/);
    assert.throws(() => createObserver('kl' as never), /observer: got "kl"; expected one of minmax, histogram, percentile, entropy, mse, ifmr, sigma/);
    assert.throws(() => createObserver('minmax', { numBits: 1 }), /numBits: got 1; expected an integer from 2 to 16/);
    assert.throws(() => createObserver('ifmr', {}, { searchRange: [1.3, 0.7] }), /searchRange/);
    assert.throws(() => (createObserver('minmax') as Observer).qparams(), (e: QuantbookError) => /has seen no data/.test(e.message));
    assert.throws(() => (createObserver('minmax') as Observer).observe(Float32Array.of(1, NaN)), /NaN or infinite/);
  });
});
