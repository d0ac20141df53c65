/**
 * A fixed-bin-count histogram whose range grows as batches arrive: when a batch falls
 * outside [lo, hi], the range is widened and the old counts are re-binned (each old bin's
 * count spread over the new bins it overlaps, as if uniform within the bin). Merging is
 * therefore exact up to one bin width, and memory stays `bins` numbers whatever the data.
 */
export class Histogram {
  counts: Float64Array;

  constructor(
    readonly bins: number,
    public lo = 0,
    public hi = 0,
    counts?: Float64Array,
  ) {
    this.counts = counts ?? new Float64Array(bins);
  }

  get binWidth(): number { return (this.hi - this.lo) / this.bins; }
  get total(): number {
    let t = 0;
    for (let i = 0; i < this.counts.length; i++) t += this.counts[i];
    return t;
  }
  binCenter(i: number): number { return this.lo + (i + 0.5) * this.binWidth; }

  /** Adds values whose min/max are already known (saves a pass over the data). */
  add(x: Float32Array, min: number, max: number): void {
    if (x.length === 0) return;
    if (this.total === 0) {
      this.lo = min;
      this.hi = max > min ? max : pointRangeEnd(min);
      this.counts.fill(0);
    } else if (min < this.lo || max > this.hi) {
      this.rebin(Math.min(min, this.lo), Math.max(max, this.hi));
    }
    const scale = this.bins / (this.hi - this.lo);
    const last = this.bins - 1;
    const counts = this.counts;
    const lo = this.lo;
    for (let i = 0; i < x.length; i++) {
      const b = Math.floor((x[i] - lo) * scale);
      counts[b < 0 ? 0 : b > last ? last : b]++;
    }
  }

  /** Moves the counts onto `bins` bins over [lo, hi] (which must contain the current range). */
  rebin(lo: number, hi: number): void {
    this.counts = spread(this, this.bins, lo, hi);
    this.lo = lo;
    this.hi = hi;
  }

  /** Merges another histogram into this one (ranges and bin counts may differ). */
  merge(other: Histogram): void {
    if (other.total === 0) return;
    if (this.total === 0) {
      this.counts = spread(other, this.bins, other.lo, other.hi);
      this.lo = other.lo;
      this.hi = other.hi;
      return;
    }
    const lo = Math.min(this.lo, other.lo);
    const hi = Math.max(this.hi, other.hi);
    if (lo !== this.lo || hi !== this.hi) this.rebin(lo, hi);
    spread(other, this.bins, lo, hi, this.counts); // added in place: no array per merge
  }

  /** The value below which fraction `p` (0..1) of the mass lies, interpolating inside a bin. */
  percentile(p: number): number {
    const total = this.total;
    if (total === 0) return 0;
    const target = p * total;
    let acc = 0;
    for (let i = 0; i < this.bins; i++) {
      const c = this.counts[i];
      if (acc + c >= target && c > 0) return this.lo + (i + (target - acc) / c) * this.binWidth;
      acc += c;
    }
    return this.hi;
  }

  /** Fraction of the mass at or below `v`. */
  cdf(v: number): number {
    const total = this.total;
    if (total === 0 || v < this.lo) return 0;
    if (v >= this.hi) return 1;
    const pos = (v - this.lo) / this.binWidth;
    const i = Math.floor(pos);
    let acc = 0;
    for (let k = 0; k < i; k++) acc += this.counts[k];
    return (acc + this.counts[i] * (pos - i)) / total;
  }
}

/** Where a histogram of a single value `v` ends: a range just wide enough to hold it. */
export function pointRangeEnd(v: number): number {
  return v + 1e-8 * Math.max(1, Math.abs(v));
}

/** `h`'s counts on `bins` bins over [lo, hi], each source bin spread over the bins it overlaps, added to `out`. */
function spread(h: Histogram, bins: number, lo: number, hi: number, out = new Float64Array(bins)): Float64Array {
  const srcW = h.binWidth;
  const w = (hi - lo) / bins;
  if (srcW <= w) return spreadFiner(h, out, lo, w);
  for (let i = 0; i < h.bins; i++) {
    const c = h.counts[i];
    if (!c) continue;
    const a = h.lo + i * srcW;
    const b = a + srcW;
    let j = Math.max(0, Math.floor((a - lo) / w));
    // the common case when merging finer histograms: the source bin lies inside one target bin
    if (j < bins && a >= lo + j * w && b <= lo + (j + 1) * w) {
      out[j] += c;
      continue;
    }
    for (; j < bins; j++) {
      const s = lo + j * w;
      if (s >= b) break;
      const overlap = Math.min(b, s + w) - Math.max(a, s);
      if (overlap > 0) out[j] += (c * overlap) / srcW;
    }
  }
  return out;
}

/**
 * spread() for source bins no wider than the target bins (merging a batch's fine histogram, the
 * hot path of calibration): each source bin overlaps at most two target bins, found by one
 * multiplication instead of a scan.
 */
function spreadFiner(h: Histogram, out: Float64Array, lo: number, w: number): Float64Array {
  const inv = 1 / w;
  const srcW = h.binWidth;
  const step = srcW * inv; // a source bin's width in target bins (<= 1)
  const last = out.length - 1;
  const counts = h.counts;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (!c) continue;
    const pos = (h.lo + i * srcW - lo) * inv;
    const j = Math.floor(pos);
    // rounding can put a bin that starts at lo a hair below it, or one that ends at hi a hair past it
    if (j < 0) { out[0] += c; continue; }
    if (j >= last || pos + step <= j + 1) { out[j > last ? last : j] += c; continue; }
    const inFirst = (c * (j + 1 - pos)) / step;
    out[j] += inFirst;
    out[j + 1] += c - inFirst;
  }
  return out;
}
