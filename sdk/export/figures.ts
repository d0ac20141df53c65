/**
 * Plot specifications (plotly.js JSON: traces + layout) built from the SDK's results. Pure data
 * in, data out: the HTML report and the notebook display both draw these, so a plot looks the
 * same in both. Only the trace types of plotly's basic bundle are used (scatter, bar): histograms
 * are binned here, which also keeps the figures small.
 */
import { QuantbookError } from '../errors';
import { formatNumber } from './html';
import type { LayerComparison } from '../quantize/compare';
import { worstFirst } from '../quantize/attribution';
import type { StatRow } from '../stats/calibration-stats';

const fmt = (v: number) => formatNumber(v, 4);

export interface Figure {
  data: Array<Record<string, unknown>>;
  layout: Record<string, unknown>;
}

/** Bins values into `bins` equal-width bins between their min and max. */
export function binValues(values: ArrayLike<number>, bins: number): { centers: number[]; counts: number[]; width: number } {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    if (values[i] < lo) lo = values[i];
    if (values[i] > hi) hi = values[i];
  }
  if (!(hi >= lo)) return { centers: [], counts: [], width: 0 };
  const width = hi > lo ? (hi - lo) / bins : 1;
  const counts = new Array<number>(bins).fill(0);
  for (let i = 0; i < values.length; i++) counts[Math.min(bins - 1, Math.floor((values[i] - lo) / width))]++;
  return { centers: counts.map((_, i) => lo + (i + 0.5) * width), counts, width };
}

/** Merges adjacent bins so a stored histogram (thousands of bins) draws as at most `maxBars` bars. */
export function coarsen(counts: ArrayLike<number>, lo: number, hi: number, maxBars: number): { centers: number[]; counts: number[]; width: number } {
  const group = Math.max(1, Math.ceil(counts.length / maxBars));
  const width = ((hi - lo) / counts.length) * group;
  const out: number[] = [];
  for (let i = 0; i < counts.length; i += group) {
    let s = 0;
    for (let j = i; j < Math.min(counts.length, i + group); j++) s += counts[j];
    out.push(s);
  }
  return { centers: out.map((_, i) => lo + (i + 0.5) * width), counts: out, width };
}

const clipLine = (x: number, label: string) => ({
  type: 'line', xref: 'x', yref: 'paper', x0: x, x1: x, y0: 0, y1: 1, line: { color: '#d62728', width: 2, dash: 'dash' }, name: label,
});

type HistogramRow = Pick<StatRow, 'tensor' | 'observer' | 'histogram' | 'histLo' | 'histHi' | 'min' | 'max' | 'scale' | 'zeroPoint' | 'qmin' | 'qmax'>;

/**
 * The range the quantized tensor can actually hold: [(qmin − zp)·scale, (qmax − zp)·scale].
 * It can be wider than the observer's clip range (zero must be representable exactly).
 */
export function quantizedRange(r: Pick<StatRow, 'scale' | 'zeroPoint' | 'qmin' | 'qmax'>): [number, number] {
  return [(r.qmin - r.zeroPoint) * r.scale, (r.qmax - r.zeroPoint) * r.scale];
}

/** Share of the histogram's values outside the quantized range (saturated by QuantizeLinear). */
export function clippedFraction(r: HistogramRow): number {
  if (!r.histogram || r.histLo === null || r.histHi === null) return 0;
  const [lo, hi] = quantizedRange(r);
  const width = (r.histHi - r.histLo) / r.histogram.length;
  let out = 0;
  let total = 0;
  r.histogram.forEach((c, i) => {
    const center = r.histLo! + (i + 0.5) * width;
    total += c;
    if (center < lo || center > hi) out += c;
  });
  return total ? out / total : 0;
}

/**
 * An activation histogram (from a histogram-family observer's statistics) with the range the
 * quantized tensor holds drawn as two dashed lines; counts on a log axis so the tails show.
 */
export function activationHistogramFigure(row: HistogramRow, maxBars = 200): Figure {
  if (!row.histogram || row.histLo === null || row.histHi === null) {
    throw new QuantbookError('INVALID_ARGUMENT', `tensor "${row.tensor}" has no histogram: observer "${row.observer}" keeps only min/max; calibrate with a histogram-family observer (histogram, percentile, entropy, mse, ifmr)`);
  }
  const h = coarsen(row.histogram, row.histLo, row.histHi, maxBars);
  const [lo, hi] = quantizedRange(row);
  return {
    data: [{ type: 'bar', x: h.centers, y: h.counts, width: h.width, marker: { color: '#1f77b4' }, name: 'values' }],
    layout: {
      title: { text: `${row.tensor} (${row.observer}): int8 range [${fmt(lo)}, ${fmt(hi)}] of observed [${fmt(row.min)}, ${fmt(row.max)}], ${(100 * clippedFraction(row)).toFixed(3)}% saturated` },
      xaxis: { title: { text: 'activation value' } },
      yaxis: { title: { text: 'count' }, type: 'log' },
      bargap: 0,
      shapes: [clipLine(lo, 'range min'), clipLine(hi, 'range max')],
      showlegend: false,
    },
  };
}

/**
 * One tensor's histogram with the quantized range several methods chose for it, one colour
 * per method: where the methods disagree, and what each one saturates.
 */
export function rangesFigure(row: HistogramRow, ranges: Record<string, [number, number]>, maxBars = 200): Figure {
  const base = activationHistogramFigure(row, maxBars);
  const colors = ['#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];
  const top = Math.max(...(base.data[0].y as number[]));
  const data = [...base.data];
  Object.entries(ranges).forEach(([name, [lo, hi]], i) => {
    data.push({ type: 'scatter', mode: 'lines', x: [lo, lo, null, hi, hi], y: [0.5, top, null, 0.5, top], line: { color: colors[i % colors.length], width: 2, dash: 'dash' }, name: `${name} [${fmt(lo)}, ${fmt(hi)}]` });
  });
  return {
    data,
    layout: { ...base.layout, title: { text: `${row.tensor}: range chosen by each method (observed [${fmt(row.min)}, ${fmt(row.max)}])` }, shapes: [], showlegend: true },
  };
}

/**
 * Scales at or below this are degenerate (an all-zero channel, a denormal): drawn, they would
 * stretch the log10 axis to −42 and squeeze every real scale into one bar.
 */
export const DEGENERATE_SCALE = 1e-30;

/**
 * Distribution of log10(scale) over layers (activation scales) or over all channels (weight
 * scales). Degenerate scales (≤ DEGENERATE_SCALE, zero, not finite) are left out and counted in the title.
 */
export function scaleDistributionFigure(scales: ArrayLike<number>, what: string, bins = 40): Figure {
  const all = Array.from(scales);
  const logs = all.filter((s) => Number.isFinite(s) && s > DEGENERATE_SCALE).map((s) => Math.log10(s));
  const skipped = all.length - logs.length;
  const h = binValues(logs, bins);
  const note = skipped ? `; ${skipped} degenerate (scale ≤ ${DEGENERATE_SCALE}, zero or not finite) left out` : '';
  return {
    data: [{ type: 'bar', x: h.centers, y: h.counts, width: h.width, name: what }],
    layout: { title: { text: `log10 of ${what} (${logs.length}${note})` }, xaxis: { title: { text: 'log10 scale' } }, yaxis: { title: { text: 'count' }, rangemode: 'tozero' }, bargap: 0.02 },
  };
}

/** Per-channel weight scales of one layer, in channel order: a few tall bars are outlier channels. */
export function channelScalesFigure(layer: string, scales: ArrayLike<number>): Figure {
  const y = Array.from(scales);
  return {
    data: [{ type: 'bar', x: y.map((_, i) => i), y, name: 'scale' }],
    layout: { title: { text: `${layer}: weight scale per output channel` }, xaxis: { title: { text: 'channel' } }, yaxis: { title: { text: 'scale' } }, bargap: 0 },
  };
}

/** The colour of the worst layers' bars in the per-layer figures. */
export const WORST_COLOR = '#d62728';
const BAR_COLOR = '#1f77b4';

/** The tensors of the worst tenth of `rows` (at least one) by `badness` (higher is worse). */
function worstTenth(rows: LayerComparison[], badness: (r: LayerComparison) => number): Set<string> {
  const ranked = rows.filter((r) => !Number.isNaN(badness(r))).sort((a, b) => badness(b) - badness(a));
  return new Set(ranked.slice(0, Math.max(1, Math.ceil(rows.length / 10))).map((r) => r.tensor));
}

/** Per-layer SQNR bars from 0 dB, in graph order, the worst tenth in red: where quantization hurts. */
export function sqnrFigure(rows: LayerComparison[], title = 'SQNR per layer output (dB, higher is better; worst tenth in red)'): Figure {
  const worst = worstTenth(rows, (r) => -r.sqnrDb);
  return {
    data: [{
      type: 'bar', x: rows.map(label), y: rows.map((r) => round(r.sqnrDb, 3)),
      marker: { color: rows.map((r) => (worst.has(r.tensor) ? WORST_COLOR : BAR_COLOR)) },
      hovertext: rows.map((r) => `${r.opType} → ${r.tensor}`), name: 'SQNR (dB)',
    }],
    layout: { title: { text: title }, yaxis: { title: { text: 'dB' }, rangemode: 'tozero' }, xaxis: { tickangle: -60, automargin: true } },
  };
}

/**
 * Where error is born: for the `top` layers with the lowest own SQNR (worst first), the error
 * each adds on its own (fed the fp32 input) beside the accumulated error at its output. Bars
 * start at 0 dB, so the worst layer has the shortest bar.
 */
export function attributionFigure(rows: LayerComparison[], top = 30): Figure {
  const measured = worstFirst(rows).slice(0, top);
  const x = measured.map(label);
  const hovertext = measured.map((r) => `${r.opType} → ${r.tensor}`);
  return {
    data: [
      { type: 'bar', x, y: measured.map((r) => round(r.localSqnrDb, 3)), name: 'own (layer alone, fp32 input)', marker: { color: '#d62728' }, hovertext },
      { type: 'bar', x, y: measured.map((r) => round(r.sqnrDb, 3)), name: 'accumulated (at its output)', marker: { color: '#1f77b4' }, hovertext },
    ],
    layout: {
      title: { text: `Where error is born: ${measured.length} layers with the lowest own SQNR, worst first` },
      barmode: 'group', yaxis: { title: { text: 'SQNR (dB, higher is better)' }, rangemode: 'tozero' }, xaxis: { tickangle: -60, automargin: true },
      legend: { orientation: 'h', y: -0.45 },
    },
  };
}

/** 1 − cosine below this is drawn at it: an exact match still has a (short) bar on the log axis. */
export const COSINE_GAP_FLOOR = 1e-9;

/**
 * Per-layer cosine similarity of fp32 and quantized outputs, drawn as 1 − cosine on a log axis
 * (taller is worse; the worst tenth in red): a cosine of 0.61 and one of 0.99999 both show,
 * where a cosine axis zoomed to [min, 1] would give the worst layer no bar at all.
 */
export function cosineFigure(rows: LayerComparison[]): Figure {
  const gaps = rows.map((r) => Math.max(COSINE_GAP_FLOOR, 1 - r.cosine));
  const finite = gaps.filter(Number.isFinite);
  const lo = Math.floor(Math.log10(Math.min(...finite, 1e-3))) - 0.5;
  const hi = Math.max(0, Math.ceil(Math.log10(Math.max(...finite, 1e-3))));
  const worst = worstTenth(rows, (r) => 1 - r.cosine);
  return {
    data: [{
      type: 'bar', x: rows.map(label), y: gaps.map((g) => +g.toPrecision(4)), name: '1 − cosine',
      marker: { color: rows.map((r) => (worst.has(r.tensor) ? WORST_COLOR : BAR_COLOR)) },
      hovertext: rows.map((r) => `${r.opType} → ${r.tensor}: cosine ${r.cosine.toFixed(6)}`),
    }],
    layout: {
      title: { text: '1 − cosine similarity per layer output (log; lower is better; worst tenth in red)' },
      yaxis: { title: { text: '1 − cosine' }, type: 'log', range: [lo, hi], exponentformat: 'power' },
      xaxis: { tickangle: -60, automargin: true },
    },
  };
}

/**
 * fp32 (x) against quantized (y) values of one tensor, evenly subsampled to `maxPoints`, with
 * the y = x line: spread around the line is the quantization error, bends are clipping.
 */
export function outputScatterFigure(name: string, fp32: ArrayLike<number>, quantized: ArrayLike<number>, maxPoints = 4000): Figure {
  if (fp32.length !== quantized.length) throw new QuantbookError('INVALID_ARGUMENT', `outputScatterFigure: ${fp32.length} fp32 values but ${quantized.length} quantized values`);
  const step = Math.max(1, Math.floor(fp32.length / maxPoints));
  const x: number[] = [];
  const y: number[] = [];
  for (let i = 0; i < fp32.length; i += step) {
    x.push(round(fp32[i], 6));
    y.push(round(quantized[i], 6));
  }
  const lo = Math.min(...x, ...y);
  const hi = Math.max(...x, ...y);
  return {
    data: [
      { type: 'scatter', mode: 'markers', x, y, marker: { size: 3, opacity: 0.5 }, name: `${x.length} values` },
      { type: 'scatter', mode: 'lines', x: [lo, hi], y: [lo, hi], line: { color: '#888', dash: 'dot' }, name: 'y = x' },
    ],
    layout: { title: { text: `${name}: fp32 vs quantized` }, xaxis: { title: { text: 'fp32' } }, yaxis: { title: { text: 'quantized' } } },
  };
}

/**
 * Per-input-channel magnitude (e.g. max |x| of a layer's activation) before and, when given,
 * after an outlier-suppression rewrite: smoothing should flatten the tall bars.
 */
export function channelMagnitudeFigure(layer: string, before: ArrayLike<number>, after?: ArrayLike<number>): Figure {
  const x = Array.from(before, (_, i) => i);
  const data: Array<Record<string, unknown>> = [{ type: 'bar', x, y: Array.from(before), name: 'before', opacity: 0.7 }];
  if (after) data.push({ type: 'bar', x, y: Array.from(after), name: 'after', opacity: 0.7 });
  return {
    data,
    layout: { title: { text: `${layer}: max |x| per input channel` }, barmode: 'overlay', xaxis: { title: { text: 'channel' } }, yaxis: { title: { text: 'max |x|' } }, bargap: 0 },
  };
}

/** Curves over steps (loss, accuracy...), one trace per series. */
export function historyFigure(title: string, steps: number[], series: Record<string, number[]>): Figure {
  return {
    data: Object.entries(series).map(([name, y]) => ({ type: 'scatter', mode: 'lines+markers', x: steps, y, name })),
    layout: { title: { text: title }, xaxis: { title: { text: 'step' } } },
  };
}

function label(r: LayerComparison): string {
  return r.layer === '(model output)' ? `output ${r.tensor}` : r.layer;
}

function round(v: number, digits: number): number {
  return Number.isFinite(v) ? +v.toFixed(digits) : v;
}
