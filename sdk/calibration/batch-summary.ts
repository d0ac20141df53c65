/**
 * Batch summaries computed inside the ONNX Runtime graph: for each calibrated tensor, its
 * min, max, element count, sum and sum of squares, and (for the histogram observers) a fine
 * histogram, are added to the model as extra nodes, so a calibration run returns a few values
 * per channel and at most one int16 code per value instead of every activation as float32.
 *
 * Why: returning the activations themselves (graph outputs) makes ORT keep them all alive to the
 * end of the run and copy each one into a JS buffer: 2.6-3x the plain inference time on
 * PP-OCRv4 before any statistic is computed. The summaries cost 1.1-1.6x (see the bench).
 *
 * The fine histogram is ONNX QuantizeLinear to int16 (ORT's com.microsoft QuantizeLinear) with
 * zero point 0 and a scale that puts FINE_BINS - 1 steps between zero and the larger of |min| and
 * max, counted in JS (kernels/code-counts.ts: WebAssembly or a typed-array loop, whichever this
 * machine runs faster): 8192 to 16383 uniform bins over the batch's range widened to include zero
 * (8192 for a one-sided tensor, more the more two-sided it is; 2048 to 4095 when sampled). Every
 * activation range quantbook quantizes with includes zero (see qparamsFromRange), so these bins
 * are at least 32x finer than an 8-bit grid over the same range and as fine as the observers'
 * finest (1024-8192 bins, default 2048); they are then merged into the observer's histogram like
 * any other batch (each fine bin spread over the bins it overlaps). Per tensor and batch, folding
 * and merging the fine bins is a fixed cost (~0.1 ms at 8192), which is why there are not more of
 * them. A grid symmetric about zero needs no zero point arithmetic in the graph: an earlier
 * uint16 grid over [min(min, 0), max(max, 0)] took 5 more nodes a tensor (zero point = round(-lo /
 * scale), cast), which cost session creation ~0.1 ms each and each run a few µs.
 *
 * Sampling (histogramSample > 0; off by default, see CalibrateOptions): the codes are made for
 * about that many values per tensor and batch, every k-th value of the flattened tensor (Flatten
 * + Slice with steps), and each counted code stands for count / sampled values. Why: exact
 * counting costs per activation value one code made by ORT, returned to JS and counted there
 * (~1.5-2 ns together), more than plain inference spends per calibrated value (1.3-2.4 ns on
 * PP-OCRv4), so exact histograms cost ~3-4x plain inference. The stride is computed in the graph
 * from the tensor's size, so small tensors (SE blocks, pooled features) are counted whole and
 * large ones cost the same as small ones. k is odd so that it cannot sample only even columns of
 * a map with a 2-periodic pattern (a stride-2 ConvTranspose's). Values, not whole rows: while k is
 * below a channel's size (batch items x channels below the sample size) every channel is sampled,
 * whereas a row stride longer than a channel's rows skipped whole channels; one of PP-OCRv4 rec's
 * tensors ([8, 240, 12, 80]) keeps nearly all its values above 1.2 in 4 of its 240 channels, the
 * row sample missed them, HFMG clipped them and the W8A8 model read no text at all (sample 8192).
 * Taking values costs ORT ~3 ms more per det batch than copying rows. Min, max, count, sum and
 * sum of squares stay exact (full-tensor reductions: a sample of rows misestimated the std of
 * channel-heterogeneous tensors by up to 80%), and the histogram's range runs from the exact min
 * to the exact max, each holding at least one value.
 *
 * Min, max and sum of a tensor of rank >= 3 are reduced over all but its first two axes, to one
 * partial per (batch item, channel) that JS folds: ORT reduces a whole tensor to a scalar on one
 * thread, but splits a partial reduction over its threads (on 2 cores, ~40% less time per node on
 * PP-OCRv4 det). The sum of squares stays a full reduction, ORT's partial form of it being 3x
 * slower than the full one. Ranks come from static inference (onnx/rank.ts); a tensor of unknown
 * rank is reduced fully.
 *
 * Node order matters: ORT schedules by a reverse depth-first walk from the graph's leaves,
 * the last leaf first. The summary nodes are appended in reverse topological order of their
 * tensors, so each summary runs right after its tensor is produced and the tensor's memory is
 * reused as in plain inference. (Appended in forward order, all ~60 activations of PP-OCRv4
 * rec stayed alive to the end of the run: peak RSS 270 -> 610 MB, elementwise ops 8x slower.)
 */
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';
import { DataType } from '../onnx/dtype';
import { makeAttribute } from '../onnx/graph';
import { Model } from '../onnx/model';
import { newNode, newValueInfo } from '../onnx/proto';
import { makeTensor } from '../onnx/tensor';
import { upgradeOpset } from '../onnx/opset-upgrade';
import { reduceAxesAreInput } from '../onnx/opset-rules';
import { inferRanks } from '../onnx/rank';
import { Histogram, pointRangeEnd } from '../kernels/histogram';
import { roundHalfEven } from '../kernels/quant';
import { CodeCounter, drainCounts, newCodeCounter } from '../kernels/code-counts';

/** What an observer needs from one batch of one tensor when it does not see the values. */
export interface BatchSummary {
  min: number;
  max: number;
  count: number;
  sum: number;
  sumSq: number;
  /** present when the summary was asked for a histogram */
  histogram?: Histogram;
}

/** Fine bins between zero and the larger of |min| and max (the codes run over ±(FINE_BINS - 1)). */
export const FINE_BINS = 8192;
/** The same for a sampled histogram: a quarter as many, since a sample of ~32k values a batch
 * fills no more, and folding and merging the bins is a per-tensor cost that sampling does not
 * shrink (4096 cost det ~3 ms a batch more, with the same HFMG error on rec). */
export const SAMPLED_FINE_BINS = 2048;

export interface SummaryRequest {
  tensor: string;
  histogram: boolean;
  /** summaries per channel along this axis (min/max/moments only: no histogram) */
  channelAxis?: number;
}

export interface SummaryOptions {
  /** histogram codes for about this many values per tensor and batch (every k-th value, odd k); 0 (default): every value */
  histogramSample?: number;
}

interface SummaryOutputs { min: string; max: string; size: string; sum: string; sumSq: string; codes?: string; perChannel?: boolean }

/** A batch's summary of each channel of a tensor, in channel order. */
export interface ChannelSummaries { channels: BatchSummary[] }

/** The instrumented model and how to read one run's summaries back. */
export interface SummaryPlan {
  model: Model;
  /** the outputs to fetch (only summaries: the model's own outputs are not needed) */
  outputNames: string[];
  /** one tensor's summary; its histogram's counts are valid until the next read (observe them first) */
  read(result: Record<string, ort.Tensor>, tensor: string): BatchSummary | ChannelSummaries | { nonFloat: string };
  /** which values the histograms count: "every value" or the sample (with why, when a sample asked for could not be taken) */
  sampling: string;
}

/** Default-domain opset below which the summary nodes' forms differ (legacy `consumed_inputs`). */
const MIN_OPSET = 6;
/** Slice with steps needs opset 10. */
const SAMPLING_OPSET = 10;
/** Older models are raised to this opset, the one upgradeOpset (and W8A8) writes. */
const UPGRADE_OPSET = 13;

export function summaryPlan(model: Model, requests: SummaryRequest[], options: SummaryOptions = {}): SummaryPlan {
  const opset = model.opsetVersion('') ?? 1;
  if (opset < MIN_OPSET) throw new QuantbookError('UNSUPPORTED', `in-graph batch summaries need opset ≥ ${MIN_OPSET}; the model has ${opset}`);
  const anyHistogram = requests.some((r) => r.histogram);
  const copy = model.clone();
  let sample = Math.max(0, options.histogramSample ?? 0);
  let sampling = !anyHistogram ? 'no histograms' : sample > 0 ? `about ${sample} values per tensor and batch (every k-th value, odd k)` : 'every value';
  if (anyHistogram && sample > 0 && opset < SAMPLING_OPSET) {
    try {
      upgradeOpset(copy, UPGRADE_OPSET);
    } catch (e) {
      sample = 0;
      sampling = `every value (value sampling needs opset ${SAMPLING_OPSET}: ${(e as Error).message.split(';')[0]})`;
    }
  }
  const g = copy.graph;
  const copyOpset = copy.opsetVersion('') ?? 1;
  const ranks = inferRanks(g);
  for (const r of requests) g.requireTensor(r.tensor, 'calibration tensor');
  const names = g.nameSource();
  const nodes: ReturnType<typeof newNode>[][] = [];
  const outputs = new Map<string, SummaryOutputs>();
  const constant = (base: string, value: number) => {
    const name = names.fresh(`quantbook_summary_${base}`);
    g.proto.initializer.push(makeTensor(name, DataType.FLOAT, [], new Float32Array([value])));
    return name;
  };
  const int64s = (base: string, values: bigint[]) => {
    const name = names.fresh(`quantbook_summary_${base}`);
    g.proto.initializer.push(makeTensor(name, DataType.INT64, [values.length], BigInt64Array.from(values)));
    return name;
  };
  const axesInputs = new Map<string, string>();
  const axesInput = (axes: number[]) => {
    const key = axes.join('_');
    if (!axesInputs.has(key)) axesInputs.set(key, int64s(`axes_${key}`, axes.map(BigInt)));
    return axesInputs.get(key)!;
  };
  const bins = sample > 0 ? SAMPLED_FINE_BINS : FINE_BINS;
  const steps = anyHistogram ? constant('steps', bins - 1) : '';
  const tiny = steps ? constant('tiny', TINY) : '';
  let zeroCode = '';
  if (steps) {
    zeroCode = names.fresh('quantbook_summary_zero_code');
    g.proto.initializer.push(makeTensor(zeroCode, DataType.INT16, [], new Int16Array(1)));
  }
  // Slice inputs taking values 0, k, 2k, ... of [1, size] (starts, ends, axes; the steps k are per tensor)
  const valueSlice = anyHistogram && sample > 0 ? [int64s('first_value', [0n]), int64s('end', [2n ** 62n]), int64s('values_axis', [1n])] : [];
  const twiceSample = valueSlice.length ? int64s('twice_sample', [BigInt(2 * sample)]) : '';
  const two = valueSlice.length ? int64s('two', [2n]) : '';
  const one = valueSlice.length ? int64s('one', [1n]) : '';

  // producer position: the order the summaries must be appended in (reversed)
  const position = new Map<string, number>();
  g.nodes.forEach((n, i) => n.output.forEach((o) => position.set(o, i)));
  const ordered = [...requests].sort((a, b) => (position.get(a.tensor) ?? -1) - (position.get(b.tensor) ?? -1));

  // Few nodes and outputs on purpose: ORT spends ~5 us a run on each, and session creation grows
  // faster than linearly with their number, times every calibrated tensor.
  for (const r of ordered) {
    const group: ReturnType<typeof newNode>[] = [];
    const op = (opType: string, inputs: string[], attrs: ReturnType<typeof makeAttribute>[] = [], domain = '') => {
      const out = names.fresh(`${r.tensor}_${opType}`);
      group.push(newNode({ op_type: opType, domain, name: out, input: inputs, output: [out], attribute: attrs }));
      return out;
    };
    const reduce = (opType: string, x: string) => op(opType, [x], [makeAttribute('keepdims', 0)]);
    // a reduction of the tensor over some axes, in the form the model's opset has
    const reduceOver = (opType: string, axes: number[], x = r.tensor) => (reduceAxesAreInput(opType, copyOpset)
      ? op(opType, [x, axesInput(axes)], [makeAttribute('keepdims', 0)])
      : op(opType, [x], [makeAttribute('axes', axes), makeAttribute('keepdims', 0)]));
    const rank = ranks.get(r.tensor);
    // min, max and sum of a tensor of rank >= 3 as partials over all but its first two axes
    const partialAxes = rank !== undefined && rank >= 3 ? Array.from({ length: rank - 2 }, (_, i) => i + 2) : undefined;
    let o: SummaryOutputs;
    if (r.channelAxis !== undefined) {
      // one value per channel: every axis but the channel axis reduced
      const axis = r.channelAxis;
      if (r.histogram) throw new QuantbookError('UNSUPPORTED', `per-channel in-graph summaries have no histograms ("${r.tensor}")`);
      if (rank === undefined || rank < 2 || axis >= rank) {
        throw new QuantbookError('UNSUPPORTED', `per-channel in-graph summary of "${r.tensor}": channel axis ${axis} needs a tensor of known rank ≥ 2 above it (rank ${rank ?? 'unknown'})`);
      }
      const axes = Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis);
      o = {
        min: reduceOver('ReduceMin', axes), max: reduceOver('ReduceMax', axes), size: op('Size', [r.tensor]),
        // squares summed by ReduceSum: ORT's ReduceSumSquare over some axes is ~2.5x slower than Mul + ReduceSum
        sum: reduceOver('ReduceSum', axes), sumSq: reduceOver('ReduceSum', axes, op('Mul', [r.tensor, r.tensor])), perChannel: true,
      };
    } else {
      const partial = (opType: string) => (partialAxes ? reduceOver(opType, partialAxes) : reduce(opType, r.tensor));
      o = {
        min: partial('ReduceMin'), max: partial('ReduceMax'), size: op('Size', [r.tensor]),
        sum: partial('ReduceSum'), sumSq: reduce('ReduceSumSquare', r.tensor),
      };
    }
    if (r.histogram) {
      let values = r.tensor;
      if (valueSlice.length) {
        // every k-th value of the tensor flattened to [1, size], k = 2·floor(size / 2·sample) + 1
        const stride = op('Add', [op('Mul', [op('Div', [o.size, twiceSample]), two]), one]);
        values = op('Slice', [op('Flatten', [r.tensor], [makeAttribute('axis', 0)]), ...valueSlice, stride]);
      }
      // int16 codes on a grid symmetric about zero, bins - 1 steps to the larger of |min| and max:
      // scale = max(-min, max, tiny) / (bins - 1) and zero point 0, so the grid needs no zero
      // point arithmetic (5 nodes fewer a tensor, each costing run and session-creation time).
      // codeScale() redoes this float32 arithmetic in JS, so the scale is not an output.
      const bound = partialAxes
        ? op('Max', [reduce('ReduceMax', op('Max', [op('Neg', [o.min]), o.max])), tiny])
        : op('Max', [op('Neg', [o.min]), o.max, tiny]);
      o.codes = op('QuantizeLinear', [values, op('Div', [bound, steps]), zeroCode], [], 'com.microsoft');
    }
    outputs.set(r.tensor, o);
    nodes.push(group);
  }
  for (const group of nodes.reverse()) g.proto.node.push(...group);
  if (anyHistogram && !copy.proto.opset_import.some((e) => e.domain === 'com.microsoft')) {
    copy.proto.opset_import.push({ domain: 'com.microsoft', version: 1 });
  }
  const outputNames = [...outputs.values()].flatMap((o) => [o.min, o.max, o.size, o.sum, o.sumSq, ...(o.codes ? [o.codes] : [])]);
  g.proto.output.length = 0;
  for (const name of outputNames) g.proto.output.push(newValueInfo({ name }));
  g.invalidate();

  // code tables: codes run from -(bins - 1) to bins - 1
  const counter = newCodeCounter(2 * bins);
  const weighted = new Float64Array(2 * bins);
  return {
    model: copy,
    outputNames,
    sampling,
    read(result, tensor) {
      const o = outputs.get(tensor)!;
      const minT = result[o.min];
      if (minT.type !== 'float32') return { nonFloat: minT.type };
      const scalar = (name: string) => Number((result[name].data as Float32Array | BigInt64Array)[0]);
      if (o.perChannel) {
        const [mins, maxs, sums, sumSqs] = [o.min, o.max, o.sum, o.sumSq].map((n) => result[n].data as Float32Array);
        const count = scalar(o.size) / mins.length;
        return { channels: Array.from(mins, (min, c) => ({ min, max: maxs[c], count, sum: sums[c], sumSq: sumSqs[c] })) };
      }
      const [min, max] = [foldPartials(minT.data as Float32Array, Math.min), foldPartials(result[o.max].data as Float32Array, Math.max)];
      const s: BatchSummary = { min, max, count: scalar(o.size), sum: foldPartials(result[o.sum].data as Float32Array, add), sumSq: scalar(o.sumSq) };
      // a NaN or infinite min/max has no code grid: the observer rejects the batch by its min/max
      if (o.codes && Number.isFinite(min) && Number.isFinite(max)) {
        s.histogram = fineHistogram(result[o.codes].data as Int16Array, codeScale(min, max, bins), s, counter, weighted);
      }
      return s;
    },
  };
}

const add = (a: number, b: number) => a + b;

/** Min, max or sum over a reduction's partial results (one value when the graph reduced fully); NaN propagates. */
function foldPartials(partials: Float32Array, fold: (a: number, b: number) => number): number {
  let acc = partials[0];
  for (let i = 1; i < partials.length; i++) acc = fold(acc, partials[i]);
  return acc;
}

/** The least upper end of a code range (keeps scale > 0). */
const TINY = 1e-30;

/**
 * The scale the summary graph gives a tensor's codes, by the same float32 operations (Neg, Max and
 * ReduceMax are exact; the division is reproduced exactly by Math.fround of the double quotient),
 * so the graph need not return it. The zero point is 0: code c stands for c · scale.
 */
export function codeScale(min: number, max: number, bins = FINE_BINS): number {
  return Math.fround(Math.max(-min, max, Math.fround(TINY)) / (bins - 1));
}

/**
 * The int16 code histogram as a Histogram over the values the codes stand for, from the code of
 * the batch's min to that of its max. Codes of a sample count count / codes.length values each.
 * Its counts are a view of `weighted`, overwritten by the next call: the observer merges them
 * right away (one scratch buffer instead of 128 KB of garbage per tensor and batch).
 */
function fineHistogram(codes: Int16Array, scale: number, s: BatchSummary, counter: CodeCounter, weighted: Float64Array): Histogram {
  if (!(s.max > s.min)) {
    // a constant tensor: one bin at its value, as Histogram.add makes it
    return new Histogram(1, s.min, pointRangeEnd(s.min), Float64Array.of(s.count));
  }
  const table = weighted.length;
  const offset = (table >> 1) - 1;
  // codes run from -offset to offset: index code + offset in the counter's tables
  counter.count(codes, offset);
  const sampled = codes.length !== s.count;
  const weight = sampled ? s.count / codes.length : 1;
  // every code lies between those of the batch's min and max (QuantizeLinear is monotone); one
  // code of margin on each side in case a division rounds differently
  const indexOf = (v: number) => Math.min(table - 1, Math.max(0, roundHalfEven(Math.fround(v / scale)) + offset));
  const [minIndex, maxIndex] = [indexOf(s.min), indexOf(s.max)];
  // sum that span's counts into `weighted`, leaving the tables zero for the next tensor
  let [first, last] = drainCounts(counter, Math.max(0, minIndex - 1), Math.min(table - 1, maxIndex + 1), weight, weighted);
  if (sampled) {
    // the exact min and max are in the batch even when the sample missed them
    first = first < 0 ? minIndex : Math.min(first, minIndex);
    last = Math.max(last, maxIndex);
    weighted[first] ||= 1;
    weighted[last] ||= 1;
  } else if (first < 0) {
    first = last = minIndex;
    weighted[first] = 0;
  }
  // code index k stands for values within half a step of (k - offset) * scale; the end bins are
  // cut at the batch's min and max (as Histogram.add does), a stretch of under one code step
  const lo = Math.max((first - offset - 0.5) * scale, s.min);
  const hi = Math.min((last - offset + 0.5) * scale, s.max);
  return new Histogram(last - first + 1, lo, hi, weighted.subarray(first, last + 1));
}
