/**
 * createObserver(kind, spec, options): the one way to get an observer. Per-channel specs give a
 * PerChannelObserver that runs one observer of the kind per channel.
 */
import type { BatchSummary } from '../calibration/batch-summary';
import { QuantbookError, invalidArgument } from '../errors';
import { forEachChannel } from '../kernels/quant';
import { reductions } from '../kernels/reductions';
import { EntropyObserver, HfmgObserver, IfmrObserver, MseObserver, PercentileObserver } from './histogram-family';
import { OBSERVER_KINDS, Observer, ObserverKind, ObserverOptions } from './observer';
import { QParams, QuantSpec, qparamsFromRange, resolveSpec } from './qparams';
import { MinMaxObserver, SigmaObserver } from './simple';

export { OBSERVER_KINDS, Observer, ObserverKind, ObserverOptions, ObserverState } from './observer';
export { ACTIVATION_SPEC, WEIGHT_SPEC, QParams, QuantSpec, qparamsFromRange, quantRange, resolveSpec, representableRange } from './qparams';
export { histogramQdqError } from './histogram-family';

const CLASSES: Record<ObserverKind, new (k: ObserverKind, s: QuantSpec, o: ObserverOptions) => Observer> = {
  minmax: MinMaxObserver,
  histogram: HfmgObserver,
  percentile: PercentileObserver,
  entropy: EntropyObserver,
  mse: MseObserver,
  ifmr: IfmrObserver,
  sigma: SigmaObserver,
};

function validateOptions(kind: ObserverKind, o: ObserverOptions): void {
  const inUnit = (name: keyof ObserverOptions, v: number | undefined, lo = 0, hi = 1) => {
    if (v !== undefined && !(v > lo && v <= hi)) throw invalidArgument(`${kind} observer: ${name}`, v, `a number in (${lo}, ${hi}]`);
  };
  if (o.bins !== undefined) {
    const [lo, hi] = kind === 'histogram' ? [1024, 8192] : [16, 65536];
    if (!Number.isInteger(o.bins) || o.bins < lo || o.bins > hi) throw invalidArgument(`${kind} observer: bins`, o.bins, `an integer from ${lo} to ${hi}`);
  }
  if (o.averagingConstant !== undefined && !(o.averagingConstant >= 0 && o.averagingConstant <= 1)) {
    throw invalidArgument('minmax observer: averagingConstant', o.averagingConstant, 'a number in [0, 1] (0 = plain running min/max)');
  }
  inUnit('percentile', o.percentile, 0.5);
  inUnit('maxPercentile', o.maxPercentile, 0.5);
  inUnit('minPercentile', o.minPercentile, 0.5);
  if (o.searchRange !== undefined && !(Array.isArray(o.searchRange) && o.searchRange.length === 2 && o.searchRange[0] > 0 && o.searchRange[0] < o.searchRange[1])) {
    throw invalidArgument('ifmr observer: searchRange', o.searchRange, '[start, end] with 0 < start < end');
  }
  if (o.searchStep !== undefined && !(o.searchStep > 0 && o.searchStep < 1)) throw invalidArgument('ifmr observer: searchStep', o.searchStep, 'a number in (0, 1)');
  if (o.sigmaK !== undefined && !(o.sigmaK > 0)) throw invalidArgument('sigma observer: sigmaK', o.sigmaK, 'a positive number');
}

/** One observer per channel along spec.channelAxis; channels are fixed by the first batch. */
export class PerChannelObserver {
  private children: Observer[] = [];

  constructor(readonly kind: ObserverKind, readonly spec: QuantSpec, readonly options: ObserverOptions) {}

  /** A per-channel observer made of already-filled channel observers (e.g. restored from a stats file). */
  static fromChannels(kind: ObserverKind, spec: QuantSpec, options: ObserverOptions, channels: Observer[]): PerChannelObserver {
    const o = new PerChannelObserver(kind, spec, options);
    o.children = channels;
    return o;
  }

  observe(x: Float32Array, shape: readonly number[]): void {
    const axis = this.spec.channelAxis;
    if (axis >= shape.length) throw invalidArgument('channelAxis', axis, `an axis of the tensor's shape [${shape}]`);
    const channels = shape[axis];
    this.fixChannels(channels);
    const per = x.length / channels;
    const gathered = Array.from({ length: channels }, () => new Float32Array(per));
    const filled = new Int32Array(channels);
    forEachChannel(x.length, channels, shape, axis, (start, end, _s, c) => {
      gathered[c].set(x.subarray(start, end), filled[c]);
      filled[c] += end - start;
    });
    gathered.forEach((g, c) => this.children[c].observe(g));
  }

  /** One batch as per-channel summaries (in-graph calibration; observers that need no histogram). */
  observeSummaries(channels: readonly BatchSummary[]): void {
    this.fixChannels(channels.length);
    channels.forEach((s, c) => this.children[c].observeSummary(s));
  }

  /** The first batch fixes the number of channels; later batches must have as many. */
  private fixChannels(count: number): void {
    if (this.children.length === 0) this.children = Array.from({ length: count }, () => this.newChannel());
    if (count !== this.children.length) throw new QuantbookError('INVALID_ARGUMENT', `per-channel observer: batch has ${count} channels on axis ${this.spec.channelAxis}, earlier batches had ${this.children.length}`);
  }

  private newChannel(): Observer {
    return new CLASSES[this.kind](this.kind, this.spec, this.options);
  }

  get channels(): readonly Observer[] { return this.children; }

  /** Whether its channel observers need histograms of the values (the histogram family). */
  get needsHistogram(): boolean {
    return (this.children[0] ?? this.newChannel()).needsHistogram;
  }

  qparams(): QParams {
    if (!this.children.length) throw new QuantbookError('INVALID_ARGUMENT', `observer (${this.kind}, per channel) has seen no data`);
    const ranges = this.children.map((c) => c.clipRange());
    return qparamsFromRange(ranges.map((r) => r[0]), ranges.map((r) => r[1]), this.spec);
  }
}

export type AnyObserver = Observer | PerChannelObserver;

export function createObserver(kind: ObserverKind, spec: Partial<QuantSpec> = {}, options: ObserverOptions = {}): AnyObserver {
  if (!OBSERVER_KINDS.includes(kind)) throw invalidArgument('observer', kind, `one of ${OBSERVER_KINDS.join(', ')}`);
  validateOptions(kind, options);
  const s = resolveSpec(spec);
  return s.perChannel ? new PerChannelObserver(kind, s, options) : new CLASSES[kind](kind, s, options);
}

/** Feeds a batch to either kind of observer. */
export function observe(o: AnyObserver, x: Float32Array, shape: readonly number[]): void {
  if (o instanceof PerChannelObserver) o.observe(x, shape);
  else o.observe(x);
}

/** Per-channel min/max straight from the kernel: what weight quantization needs (no observer state). */
export function weightQParams(w: Float32Array, shape: readonly number[], spec: Partial<QuantSpec> = {}): QParams {
  const s = resolveSpec(spec, { numBits: 8, signed: true, symmetric: true, narrowRange: false, perChannel: true, channelAxis: 0 });
  if (!s.perChannel) {
    const { min, max } = reductions().minMax(w);
    return qparamsFromRange([min], [max], s);
  }
  const { min, max } = reductions().channelMinMax(w, shape, s.channelAxis);
  return qparamsFromRange(min, max, s);
}

export function restoreObserver(kind: ObserverKind, spec: Partial<QuantSpec>, options: ObserverOptions, state: import('./observer').ObserverState): Observer {
  const o = createObserver(kind, { ...spec, perChannel: false }, options) as Observer;
  o.restore(state);
  return o;
}
