/**
 * Batch summaries computed inside the ONNX Runtime graph: for each calibrated tensor, its
 * min, max, element count, sum and sum of squares, and (for the histogram observers) a fine
 * histogram, are added to the model as extra nodes, so a calibration run returns a handful of
 * scalars and at most one uint16 code per value instead of every activation as float32.
 *
 * Why: returning the activations themselves (graph outputs) makes ORT keep them all alive to the
 * end of the run and copy each one into a JS buffer: 2.6-3x the plain inference time on
 * PP-OCRv4 before any statistic is computed. The summaries cost about 1.1x (see the bench).
 *
 * The fine histogram is ONNX QuantizeLinear to uint16 (ORT's com.microsoft QuantizeLinear)
 * on the batch's own range widened to include zero: 8192 uniform bins, counted in JS. Every
 * activation range quantbook quantizes with includes zero (see qparamsFromRange), so these
 * bins are 32x finer than an 8-bit grid over the same range and as fine as the observers'
 * finest (1024-8192 bins, default 2048); they are then merged into the observer's histogram
 * like any other batch (each fine bin spread over the bins it overlaps). Per tensor and batch,
 * folding and merging the fine bins is a fixed cost (~0.1 ms at 8192), which is why there are
 * not more of them.
 *
 * Sampling (histogramStride > 1): the codes are made for every k-th row of the tensor seen as
 * [rows, last dim] (Flatten + Slice with steps: whole rows are copied, which ORT does at memcpy
 * speed), and each counted code stands for count / sampled values. Why: exact counting costs per
 * activation value one code made by ORT, returned to JS and counted there (2-2.5 ns together),
 * more than plain inference spends per calibrated value (1.3-2.4 ns on PP-OCRv4), so exact
 * histograms cost 3.6-4.9x plain inference. Min, max, count, sum and sum of squares stay exact
 * (full-tensor reductions) and the histogram's range still runs from the exact min to the exact
 * max, each holding at least one value. A prime stride keeps the sampled rows from lining up with
 * a feature map's height (which a stride dividing it would hit at the same rows of every channel).
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
import { Histogram, pointRangeEnd } from '../kernels/histogram';

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

export const FINE_BINS = 8192;

export interface SummaryRequest { tensor: string; histogram: boolean }

export interface SummaryOptions {
  /** sums, sums of squares and histogram codes are taken over every k-th row of each tensor (1: every value; default 1) */
  sampleStride?: number;
}

interface SummaryOutputs { min: string; max: string; size: string; sum: string; sumSq: string; sampleSize?: string; scale?: string; zeroPoint?: string; codes?: string }

/** The instrumented model and how to read one run's summaries back. */
export interface SummaryPlan {
  model: Model;
  /** the outputs to fetch (only summaries: the model's own outputs are not needed) */
  outputNames: string[];
  read(result: Record<string, ort.Tensor>, tensor: string): BatchSummary | { nonFloat: string };
  /** which values the sums and histograms were taken over: "every value" or "every k-th row" (with why, when the stride asked for could not be used) */
  sampling: string;
}

/** Default-domain opset below which the summary nodes' forms (Cast's integer `to`) do not exist. */
const MIN_OPSET = 6;
/** Flatten with a negative axis (rows whatever the rank) and Slice with steps need opset 11. */
const SAMPLING_OPSET = 11;
/** Older models are raised to this opset, the one upgradeOpset (and W8A8) writes. */
const UPGRADE_OPSET = 13;

export function summaryPlan(model: Model, requests: SummaryRequest[], options: SummaryOptions = {}): SummaryPlan {
  const opset = model.opsetVersion('') ?? 1;
  if (opset < MIN_OPSET) throw new QuantbookError('UNSUPPORTED', `in-graph batch summaries need opset ≥ ${MIN_OPSET}; the model has ${opset}`);
  const anyHistogram = requests.some((r) => r.histogram);
  const copy = model.clone();
  let stride = options.sampleStride ?? 1;
  let sampling = stride > 1 ? `every ${ordinal(stride)} row` : 'every value';
  if (stride > 1 && opset < SAMPLING_OPSET) {
    try {
      upgradeOpset(copy, UPGRADE_OPSET);
    } catch (e) {
      stride = 1;
      sampling = `every value (row sampling needs opset ${SAMPLING_OPSET}: ${(e as Error).message.split(';')[0]})`;
    }
  }
  const g = copy.graph;
  const hasRound = (copy.opsetVersion('') ?? 1) >= 11;
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
  const levels = anyHistogram ? constant('levels', FINE_BINS - 1) : '';
  const negLevels = levels ? constant('neg_levels', -(FINE_BINS - 1)) : '';
  const half = levels && !hasRound ? constant('half', 0.5) : '';
  const zero = levels ? constant('zero', 0) : '';
  const tiny = levels ? constant('tiny', 1e-30) : '';
  // Slice inputs taking rows 0, k, 2k, ... (starts, ends, axes, steps)
  const rowSlice = stride > 1 ? [int64s('first_row', [0n]), int64s('end', [2n ** 62n]), int64s('rows_axis', [0n]), int64s('stride', [BigInt(stride)])] : [];

  // producer position: the order the summaries must be appended in (reversed)
  const position = new Map<string, number>();
  g.nodes.forEach((n, i) => n.output.forEach((o) => position.set(o, i)));
  const ordered = [...requests].sort((a, b) => (position.get(a.tensor) ?? -1) - (position.get(b.tensor) ?? -1));

  for (const r of ordered) {
    const group: ReturnType<typeof newNode>[] = [];
    const op = (opType: string, inputs: string[], attrs: ReturnType<typeof makeAttribute>[] = [], domain = '') => {
      const out = names.fresh(`${r.tensor}_${opType}`);
      group.push(newNode({ op_type: opType, domain, name: out, input: inputs, output: [out], attribute: attrs }));
      return out;
    };
    const reduce = (opType: string, x: string) => op(opType, [x], [makeAttribute('keepdims', 0)]);
    // the tensor as [rows, last dim], every k-th row (whole rows: ORT copies them at memcpy speed)
    const sample = stride > 1 ? op('Slice', [op('Flatten', [r.tensor], [makeAttribute('axis', -1)]), ...rowSlice]) : r.tensor;
    const o: SummaryOutputs = {
      min: reduce('ReduceMin', r.tensor), max: reduce('ReduceMax', r.tensor), size: op('Size', [r.tensor]),
      sum: reduce('ReduceSum', sample), sumSq: reduce('ReduceSumSquare', sample),
    };
    if (stride > 1 && !r.histogram) o.sampleSize = op('Size', [sample]); // with a histogram, the codes say it
    if (r.histogram) {
      // uint16 codes on [lo, hi] = [min(min, 0), max(max, 0)]: scale = (hi - lo) / levels and
      // zero point = round(-lo / scale) = round(-lo * levels / (hi - lo)), in [0, levels] since
      // lo <= 0 <= hi. Few nodes on purpose: each costs ORT ~5 us, times every tensor.
      const lo = op('Min', [o.min, zero]);
      const range = op('Max', [op('Sub', [op('Max', [o.max, zero]), lo]), tiny]);
      o.scale = op('Div', [range, levels]);
      const zp = op('Div', [op('Mul', [lo, negLevels]), range]);
      o.zeroPoint = op('Cast', [hasRound ? op('Round', [zp]) : op('Floor', [op('Add', [zp, half])])], [makeAttribute('to', DataType.UINT16)]);
      o.codes = op('QuantizeLinear', [sample, o.scale, o.zeroPoint], [], 'com.microsoft');
    }
    outputs.set(r.tensor, o);
    nodes.push(group);
  }
  for (const group of nodes.reverse()) g.proto.node.push(...group);
  if (anyHistogram && !copy.proto.opset_import.some((e) => e.domain === 'com.microsoft')) {
    copy.proto.opset_import.push({ domain: 'com.microsoft', version: 1 });
  }
  const outputNames = [...outputs.values()].flatMap((o) => [o.min, o.max, o.size, o.sum, o.sumSq, ...(o.sampleSize ? [o.sampleSize] : []), ...(o.codes ? [o.scale!, o.zeroPoint!, o.codes] : [])]);
  g.proto.output.length = 0;
  for (const name of outputNames) g.proto.output.push(newValueInfo({ name }));
  g.invalidate();

  const counts = new Int32Array(4 * FINE_BINS);
  return {
    model: copy,
    outputNames,
    sampling,
    read(result, tensor) {
      const o = outputs.get(tensor)!;
      const minT = result[o.min];
      if (minT.type !== 'float32') return { nonFloat: minT.type };
      const scalar = (name: string) => Number((result[name].data as Float32Array | BigInt64Array)[0]);
      const count = scalar(o.size);
      const codes = o.codes ? (result[o.codes].data as Uint16Array) : undefined;
      const sampled = o.sampleSize ? scalar(o.sampleSize) : codes ? codes.length : count;
      // sums over a sample stand for the whole tensor: each sampled value counts count / sampled
      const weight = sampled === count || sampled === 0 ? 1 : count / sampled;
      const s: BatchSummary = { min: scalar(o.min), max: scalar(o.max), count, sum: scalar(o.sum) * weight, sumSq: scalar(o.sumSq) * weight };
      if (codes) s.histogram = fineHistogram(codes, scalar(o.scale!), scalar(o.zeroPoint!), s, counts);
      return s;
    },
  };
}

const [T1, T2, T3] = [FINE_BINS, 2 * FINE_BINS, 3 * FINE_BINS];

/**
 * Counts uint16 codes (each below FINE_BINS) into four interleaved tables (repeated codes do not wait on each other),
 * reading them two at a time through a 32-bit view where the buffer allows it. The tables must
 * be zero on entry; foldCounts leaves them so.
 */
function countCodes(codes: Uint16Array, counts: Int32Array): void {
  let i = 0;
  if ((codes.byteOffset & 3) === 0) {
    const pairs = new Uint32Array(codes.buffer, codes.byteOffset, codes.length >> 1);
    const n = pairs.length & ~1;
    for (let p = 0; p < n; p += 2) {
      const a = pairs[p];
      const b = pairs[p + 1];
      counts[a & 0xffff]++;
      counts[T1 + (a >>> 16)]++;
      counts[T2 + (b & 0xffff)]++;
      counts[T3 + (b >>> 16)]++;
    }
    i = 2 * n;
  }
  for (; i < codes.length; i++) counts[codes[i]]++;
}

/** Sums the four tables into the first, zeroing the others; returns the first and last occupied code (-1 when none). */
function foldCounts(counts: Int32Array): [number, number] {
  let first = -1;
  let last = -1;
  for (let k = 0; k < FINE_BINS; k++) {
    const c = counts[k] + counts[k + T1] + counts[k + T2] + counts[k + T3];
    counts[k] = c;
    counts[k + T1] = 0;
    counts[k + T2] = 0;
    counts[k + T3] = 0;
    if (c !== 0) {
      if (first < 0) first = k;
      last = k;
    }
  }
  return [first, last];
}

/**
 * The uint16 code histogram as a Histogram over the values the codes stand for, from the code of
 * the batch's min to that of its max. Codes of a sample count count / codes.length values each.
 */
function fineHistogram(codes: Uint16Array, scale: number, zeroPoint: number, s: BatchSummary, counts: Int32Array): Histogram {
  if (!(s.max > s.min)) {
    // a constant tensor: one bin at its value, as Histogram.add makes it
    return new Histogram(1, s.min, pointRangeEnd(s.min), Float64Array.of(s.count));
  }
  countCodes(codes, counts);
  let [first, last] = foldCounts(counts);
  const sampled = codes.length !== s.count;
  if (sampled) {
    // the exact min and max are in the batch even when the sample missed them
    const codeOf = (v: number) => Math.min(FINE_BINS - 1, Math.max(0, Math.round(v / scale) + zeroPoint));
    first = first < 0 ? codeOf(s.min) : Math.min(first, codeOf(s.min));
    last = Math.max(last, codeOf(s.max));
  } else if (first < 0) {
    first = last = 0;
  }
  const weight = sampled ? s.count / codes.length : 1;
  const merged = new Float64Array(last - first + 1);
  for (let k = first; k <= last; k++) merged[k - first] = counts[k] * weight;
  counts.fill(0, first, last + 1); // zero again for the next tensor
  if (sampled) {
    merged[0] ||= 1;
    merged[merged.length - 1] ||= 1;
  }
  // code k stands for values within half a step of (k - zeroPoint) * scale; the end bins are cut
  // at the batch's min and max (as Histogram.add does), a stretch of under one code step
  const lo = Math.max((first - zeroPoint - 0.5) * scale, s.min);
  const hi = Math.min((last - zeroPoint + 0.5) * scale, s.max);
  return new Histogram(merged.length, lo, hi, merged);
}

/** 2 → "2nd", 11 → "11th". */
function ordinal(n: number): string {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th';
  return `${n}${suffix}`;
}
