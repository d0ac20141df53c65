/**
 * Observers: streaming range estimators. Each consumes one batch at a time and keeps only
 * summaries (running min/max/moments, and for the histogram family one histogram), never
 * the activations themselves. `clipRange()` is the method's choice of range; `qparams()` the
 * scale and zero point for it.
 */
import { QuantbookError } from '../errors';
import { Histogram } from '../kernels/histogram';
import { reductions } from '../kernels/reductions';
import { QParams, QuantSpec, qparamsFromRange } from './qparams';
import type { BatchSummary } from '../calibration/batch-summary';

/** One batch as an observer's update() sees it: its range, and its values or a histogram of them. */
export interface ObservedBatch { min: number; max: number; values?: Float32Array; histogram?: Histogram }

export const OBSERVER_KINDS = ['minmax', 'histogram', 'percentile', 'entropy', 'mse', 'ifmr', 'sigma'] as const;
export type ObserverKind = (typeof OBSERVER_KINDS)[number];

export interface ObserverOptions {
  /** minmax: moving-average constant for the per-batch min/max (0 = plain running min/max) */
  averagingConstant?: number;
  /** histogram family: number of bins (HFMG allows 1024–8192, default 4096; others default 2048) */
  bins?: number;
  /** percentile: fraction of values kept inside the range (default 0.99999) */
  percentile?: number;
  /** ifmr: starting percentiles (default 0.999999 each) */
  maxPercentile?: number;
  minPercentile?: number;
  /** ifmr: candidate ratios [start, end) and step (default [0.7, 1.3), 0.01) */
  searchRange?: [number, number];
  searchStep?: number;
  /** sigma: the range is mean ± k·std (default k = 3), within the observed min/max */
  sigmaK?: number;
}

/** Everything an observer keeps: enough to recompute its qparams, or another method's from the histogram. */
export interface ObserverState {
  kind: ObserverKind;
  min: number;
  max: number;
  /** moving-average min/max (minmax with averagingConstant) */
  avgMin?: number;
  avgMax?: number;
  count: number;
  sum: number;
  sumSq: number;
  batches: number;
  histogram?: { lo: number; hi: number; counts: Float64Array };
}

export abstract class Observer {
  protected min = Infinity;
  protected max = -Infinity;
  protected count = 0;
  protected sum = 0;
  protected sumSq = 0;
  protected batches = 0;

  constructor(
    readonly kind: ObserverKind,
    readonly spec: QuantSpec,
    readonly options: ObserverOptions = {},
  ) {}

  /** Takes one batch of values. */
  observe(x: Float32Array): void {
    if (x.length === 0) return;
    const r = reductions();
    const { min, max } = r.minMax(x);
    this.accumulate({ min, max, ...r.moments(x) }, x);
  }

  /**
   * Takes one batch already summarised (by the ORT graph during calibration: see
   * calibration/batch-summary.ts): the same state observe(x) keeps, except that a histogram
   * observer merges the batch's fine histogram instead of binning the values itself.
   */
  observeSummary(s: BatchSummary): void {
    if (s.count === 0) return;
    // a NaN/infinite batch comes without a histogram: accumulate names the real problem
    const finite = Number.isFinite(s.min) && Number.isFinite(s.max);
    if (this.needsHistogram && !s.histogram && finite) throw new QuantbookError('INVALID_ARGUMENT', `observer (${this.kind}) needs the batch's values or a histogram of them`);
    this.accumulate(s);
  }

  /** Whether a summary must carry a histogram for this observer (the histogram family). */
  get needsHistogram(): boolean { return false; }

  /** The state every observer keeps, then the method's own update with the values or the summary's histogram. */
  private accumulate(m: BatchSummary, values?: Float32Array): void {
    const { min, max } = m;
    // NaN fails every comparison, so min/max miss it; the sum does not
    if (!Number.isFinite(min) || !Number.isFinite(max) || !Number.isFinite(m.sum)) {
      throw new QuantbookError('INVALID_ARGUMENT', `observer (${this.kind}): the batch holds NaN or infinite values (min ${min}, max ${max}, sum ${m.sum})`);
    }
    this.min = Math.min(this.min, min);
    this.max = Math.max(this.max, max);
    this.count += m.count;
    this.sum += m.sum;
    this.sumSq += m.sumSq;
    this.batches++;
    this.chosen = undefined;
    this.update({ min, max, values, histogram: m.histogram });
  }

  /** Method-specific accumulation: the batch's min/max, and its values or a histogram of them. */
  protected abstract update(batch: ObservedBatch): void;

  private chosen?: [number, number];

  /** The range the method chooses (computed once per state; new batches recompute it). */
  clipRange(): [number, number] {
    return (this.chosen ??= this.chooseRange());
  }

  /** The method's range search over what it has kept. */
  protected abstract chooseRange(): [number, number];

  qparams(): QParams {
    this.requireData();
    const [lo, hi] = this.clipRange();
    return qparamsFromRange([lo], [hi], this.spec);
  }

  get observedRange(): [number, number] { return [this.min, this.max]; }
  get mean(): number { return this.count ? this.sum / this.count : 0; }
  get std(): number {
    if (!this.count) return 0;
    const m = this.mean;
    return Math.sqrt(Math.max(0, this.sumSq / this.count - m * m));
  }
  get batchesSeen(): number { return this.batches; }
  get histogram(): Histogram | undefined { return undefined; }

  protected requireData(): void {
    if (this.batches === 0) throw new QuantbookError('INVALID_ARGUMENT', `observer (${this.kind}) has seen no data: run at least one calibration batch`);
  }

  state(): ObserverState {
    const h = this.histogram;
    return {
      kind: this.kind, min: this.min, max: this.max, count: this.count, sum: this.sum, sumSq: this.sumSq, batches: this.batches,
      ...(h ? { histogram: { lo: h.lo, hi: h.hi, counts: Float64Array.from(h.counts) } } : {}),
    };
  }

  /** Restores summaries saved by `state()` (e.g. read back from a stats file). */
  restore(s: ObserverState): void {
    this.chosen = undefined;
    this.min = s.min;
    this.max = s.max;
    this.count = s.count;
    this.sum = s.sum;
    this.sumSq = s.sumSq;
    this.batches = s.batches;
  }
}
