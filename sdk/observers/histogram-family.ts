/**
 * Observers that keep one mergeable histogram and choose the clip range from it:
 * HFMG-style window search ('histogram'), percentile, entropy (KL), MSE and IFMR.
 * The quantization error of a candidate range is measured on the histogram (each bin's
 * count at its centre), which is what lets them stream instead of keeping the data.
 */
import { Histogram } from '../kernels/histogram';
import { roundHalfEven } from '../kernels/quant';
import { ObservedBatch, Observer, ObserverState } from './observer';
import { QParams, qparamsFromRange } from './qparams';

abstract class HistogramObserver extends Observer {
  protected hist = new Histogram(this.options.bins ?? 2048);
  /** prefix sums of the histogram for the range searches; dropped whenever the histogram changes */
  private moments?: BinMoments;

  protected update(batch: ObservedBatch): void {
    this.moments = undefined;
    if (batch.values) this.hist.add(batch.values, batch.min, batch.max);
    else this.hist.merge(batch.histogram!);
  }

  override get needsHistogram(): boolean { return true; }

  override get histogram(): Histogram { return this.hist; }

  override restore(s: ObserverState): void {
    super.restore(s);
    this.moments = undefined;
    if (s.histogram) this.hist = new Histogram(s.histogram.counts.length, s.histogram.lo, s.histogram.hi, Float64Array.from(s.histogram.counts));
  }

  /** Squared error of fake-quantizing the histogram's mass with `q` (bin centres). */
  protected histogramError(q: QParams): number {
    this.moments ??= new BinMoments(this.hist);
    return this.moments.qdqError(q);
  }

  protected rangeError(lo: number, hi: number): number {
    return this.histogramError(qparamsFromRange([lo], [hi], this.spec));
  }
}

/** The integer QuantizeLinear gives value v: round half to even, then the zero point, then saturation. */
function quantizedLevel(v: number, s: number, z: number, qmin: number, qmax: number): number {
  const q = roundHalfEven(v / s) + z;
  return q < qmin ? qmin : q > qmax ? qmax : q;
}

export function histogramQdqError(h: Histogram, q: QParams): number {
  const s = q.scale[0];
  const z = q.zeroPoint[0];
  const { qmin, qmax } = q;
  const counts = h.counts;
  const lo = h.lo;
  const w = h.binWidth;
  let err = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (!c) continue;
    const v = lo + (i + 0.5) * w;
    const d = (quantizedLevel(v, s, z, qmin, qmax) - z) * s - v;
    err += c * d * d;
  }
  return err;
}

/**
 * histogramQdqError in O(quantization levels) instead of O(bins), for searches that evaluate
 * hundreds of ranges on one histogram: the bins that quantize to one level are a contiguous run,
 * and their error Σ c·(L - v)² comes from prefix sums of c, c·i and c·i² (v = a + i·w).
 */
export class BinMoments {
  private readonly c: Float64Array;
  private readonly ci: Float64Array;
  private readonly cii: Float64Array;

  constructor(private readonly h: Histogram) {
    const n = h.bins;
    this.c = new Float64Array(n + 1);
    this.ci = new Float64Array(n + 1);
    this.cii = new Float64Array(n + 1);
    for (let i = 0; i < n; i++) {
      const c = h.counts[i];
      this.c[i + 1] = this.c[i] + c;
      this.ci[i + 1] = this.ci[i] + c * i;
      this.cii[i + 1] = this.cii[i] + c * i * i;
    }
  }

  qdqError(q: QParams): number {
    const h = this.h;
    const s = q.scale[0];
    const z = q.zeroPoint[0];
    const { qmin, qmax } = q;
    const bins = h.bins;
    const w = h.binWidth;
    const a = h.lo + 0.5 * w; // centre of bin 0
    // with about as many levels as bins a run is a bin or two: the direct sum is cheaper
    if ((h.hi - h.lo) / s > bins / 4) return histogramQdqError(h, q);
    const level = (i: number) => quantizedLevel(a + i * w, s, z, qmin, qmax);
    let err = 0;
    let i = 0;
    let l = level(0);
    while (i < bins) {
      // first bin past the run at level l (its level: next): estimated from where v / s crosses
      // l - z + 0.5, then checked against the exact rounding
      let j = l >= qmax ? bins : Math.min(bins, Math.max(i + 1, Math.ceil(((l - z + 0.5) * s - a) / w)));
      while (j > i + 1 && level(j - 1) > l) j--;
      let next = j < bins ? level(j) : l;
      while (j < bins && next <= l) next = ++j < bins ? level(j) : l;
      const count = this.c[j] - this.c[i];
      if (count) {
        // Σ c·(L - a - i·w)² = D²·Σc - 2·D·w·Σc·i + w²·Σc·i², with D = L - a
        const d = (l - z) * s - a;
        err += d * d * count - 2 * d * w * (this.ci[j] - this.ci[i]) + w * w * (this.cii[j] - this.cii[i]);
      }
      i = j;
      l = next;
    }
    return Math.max(0, err);
  }
}

/**
 * HFMG ('histogram'): shrink a window from the histogram's sparser tail, one mass quantile
 * step at a time, while the quantization error of the window keeps falling.
 */
export class HfmgObserver extends HistogramObserver {
  protected override hist = new Histogram(this.options.bins ?? 4096);

  protected chooseRange(): [number, number] {
    const h = this.hist;
    const total = h.total;
    const cumulative = new Float64Array(h.bins);
    let acc = 0;
    for (let i = 0; i < h.bins; i++) cumulative[i] = acc += h.counts[i];
    const binAt = (q: number) => {
      const target = q * total;
      let lo = 0;
      let hi = h.bins - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cumulative[mid] < target) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };
    const edge = (b: number) => h.lo + b * h.binWidth;
    let start = 0;
    let end = h.bins - 1;
    let best = this.rangeError(edge(start), edge(end + 1));
    // the window's mass quantiles are alpha = a·step and beta = 1 - b·step (integers: no drift)
    const step = 1e-5;
    const steps = Math.round(1 / step);
    let a = 0;
    let b = 0;
    while (a + b < steps) {
      const nextStart = binAt((a + 1) * step);
      const nextEnd = binAt(1 - (b + 1) * step);
      // Steps that move neither edge of the window change nothing: skip them in one go, to
      // just before the step where the edge would move (a bin holds many 1e-5 quantile steps)
      if (nextStart === start) {
        const k = Math.floor(cumulative[start] / total / step) - 2;
        if (k > a) {
          a = Math.min(k, steps - b);
          continue;
        }
      } else if (nextEnd === end && end > 0) {
        const k = Math.ceil((total - cumulative[end - 1]) / total / step) - 3;
        if (k > b) {
          b = Math.min(k, steps - a);
          continue;
        }
      }
      let s = start;
      let e = end;
      // move the side that gives up fewer bins for the same mass: the sparser tail
      if (nextStart - start > end - nextEnd) {
        e = nextEnd;
        b++;
      } else {
        s = nextStart;
        a++;
      }
      if ((s === start && e === end) || s >= e) {
        if (s >= e) break;
        continue;
      }
      const err = this.rangeError(edge(s), edge(e + 1));
      if (err > best) break;
      best = err;
      start = s;
      end = e;
    }
    return [edge(start), edge(end + 1)];
  }
}

export class PercentileObserver extends HistogramObserver {
  protected chooseRange(): [number, number] {
    const p = this.options.percentile ?? 0.99999;
    return [this.hist.percentile(1 - p), this.hist.percentile(p)];
  }
}

/** Entropy: the threshold T minimising KL(P‖Q) between |x|'s histogram clipped at T and its quantized copy. */
export class EntropyObserver extends HistogramObserver {
  protected chooseRange(): [number, number] {
    const h = this.hist;
    const [min, max] = this.observedRange;
    const amax = Math.max(Math.abs(min), Math.abs(max));
    const bins = h.bins;
    // fold the signed histogram onto |x| in [0, amax]
    const abs = new Float64Array(bins);
    const w = amax / bins;
    for (let i = 0; i < bins; i++) {
      if (!h.counts[i]) continue;
      const b = Math.min(bins - 1, Math.floor(Math.abs(h.binCenter(i)) / w));
      abs[b] += h.counts[i];
    }
    const levels = min < 0 ? 2 ** (this.spec.numBits - 1) : 2 ** this.spec.numBits;
    const kl = thresholdKl(abs, levels);
    let bestKl = Infinity;
    let bestI = bins;
    for (let i = Math.min(levels, bins); i <= bins; i++) {
      const d = kl(i);
      if (d < bestKl) {
        bestKl = d;
        bestI = i;
      }
    }
    const t = bestI * w;
    return [Math.max(min, -t), Math.min(max, t)];
  }
}

/**
 * KL(P‖Q) for the threshold at bin i of `hist` (TensorRT-style): P is the first i bins with the
 * mass beyond them added to bin i - 1; Q spreads each of `levels` chunks' mass evenly over its
 * nonzero bins; mass Q cannot represent costs a fixed penalty. Each call is O(levels): the sums
 * over bins come from prefix sums of h, of the nonzero count and of h·log h, since within a chunk
 * log q is one number (a direct sum per call made the search O(bins²): ~30 ms a tensor).
 */
export function thresholdKl(hist: Float64Array, levels: number): (i: number) => number {
  const bins = hist.length;
  const mass = new Float64Array(bins + 1);
  const nonzero = new Float64Array(bins + 1);
  const hLogH = new Float64Array(bins + 1);
  for (let k = 0; k < bins; k++) {
    const h = hist[k];
    mass[k + 1] = mass[k] + h;
    nonzero[k + 1] = nonzero[k] + (h ? 1 : 0);
    hLogH[k + 1] = hLogH[k] + (h ? h * Math.log(h) : 0);
  }
  const total = mass[bins];
  const logTotal = Math.log(total);
  const PENALTY = 20;
  return (i: number) => {
    if (!(total > 0)) return 0;
    const qs = mass[i]; // Q's total: every chunk with mass keeps it
    if (!(qs > 0)) return PENALTY; // Q is empty: all of P is mass it cannot represent
    const last = hist[i - 1];
    const pLast = last + (total - mass[i]); // the outliers join the last bin of P
    // Σ over k < i-1 of p·log p, then minus p·log q chunk by chunk
    let kl = (hLogH[i - 1] - mass[i - 1] * logTotal) / total;
    const per = i / levels;
    let a = 0;
    let logQLast = 0;
    for (let j = 0; j < levels; j++) {
      const b = j === levels - 1 ? i : Math.floor((j + 1) * per);
      const m = mass[b] - mass[a];
      const n = nonzero[b] - nonzero[a];
      if (n > 0) {
        const logQ = Math.log(m / (n * qs));
        kl -= ((b === i ? m - last : m) / total) * logQ;
        if (b === i) logQLast = logQ;
      }
      a = b;
    }
    if (pLast > 0) kl += last ? (pLast / total) * (Math.log(pLast / total) - logQLast) : (pLast / total) * PENALTY;
    return kl;
  };
}

/** MSE: shrink [min, max] by r ∈ (0, 1] (100 steps) and keep the range with the least error. */
export class MseObserver extends HistogramObserver {
  protected chooseRange(): [number, number] {
    const [min, max] = this.observedRange;
    let best: [number, number] = [min, max];
    let bestErr = Infinity;
    for (let k = 100; k >= 1; k--) {
      const r = k / 100;
      const err = this.rangeError(min * r, max * r);
      if (err < bestErr) {
        bestErr = err;
        best = [min * r, max * r];
      }
    }
    return best;
  }
}

/** IFMR (AMCT): start at the percentiles, scale by r over search_range in search_step, least error wins. */
export class IfmrObserver extends HistogramObserver {
  protected chooseRange(): [number, number] {
    const maxP = this.options.maxPercentile ?? 0.999999;
    const minP = this.options.minPercentile ?? 0.999999;
    const [from, to] = this.options.searchRange ?? [0.7, 1.3];
    const step = this.options.searchStep ?? 0.01;
    const hi0 = this.hist.percentile(maxP);
    const lo0 = Math.min(0, this.hist.percentile(1 - minP));
    let best: [number, number] = [lo0, hi0];
    let bestErr = Infinity;
    const n = Math.round((to - from) / step);
    for (let k = 0; k < n; k++) {
      const r = from + k * step;
      const err = this.rangeError(lo0 * r, hi0 * r);
      if (err < bestErr) {
        bestErr = err;
        best = [lo0 * r, hi0 * r];
      }
    }
    return best;
  }
}
