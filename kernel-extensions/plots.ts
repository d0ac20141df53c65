/**
 * Plots of a quantization run, shown inline in a notebook (plotly, interactive) or summarised
 * in one line on a terminal. The figure specs come from the SDK's `figures` (build one there to
 * keep or change it, then pass it to `figure()`); these return nothing, so a notebook cell that
 * ends with a plot does not also print the spec.
 */
import { CalibrationResult } from '../sdk/calibration/calibrator';
import { CalibrationSource, batchesFrom } from '../sdk/calibration/data';
import {
  Figure, activationHistogramFigure, clippedFraction, channelMagnitudeFigure, channelScalesFigure, cosineFigure, historyFigure,
  attributionFigure, outputScatterFigure, quantizedRange, rangesFigure, scaleDistributionFigure, sqnrFigure,
} from '../sdk/export/figures';
import { QuantbookError } from '../sdk/errors';
import type { LayerComparison } from '../sdk/quantize/compare';
import { Runner } from '../sdk/runtime/runner';
import { QuantizationResult } from '../sdk/session/session';
import { output } from './kernel';
import { renderFigure } from './render';

function draw(fig: Figure, height?: number): void {
  const r = renderFigure(fig, height);
  output.show(r.html, r.text);
}

function calibrationOf(x: QuantizationResult | CalibrationResult): CalibrationResult {
  const c = x instanceof CalibrationResult ? x : x.calibration;
  if (!c) throw new QuantbookError('INVALID_ARGUMENT', `${x instanceof QuantizationResult ? x.kind : 'this result'} has no calibration statistics (dynamic quantization calibrates nothing)`);
  return c;
}

/**
 * Activation histograms with the clip range each observer chose. `tensors` defaults to the
 * `limit` tensors that clip the most (where the choice of range matters).
 */
export function histograms(x: QuantizationResult | CalibrationResult, options: { tensors?: string[]; limit?: number } = {}): void {
  const c = calibrationOf(x);
  const rows = c.tensorRows().filter((r) => r.channel === -1);
  if (!rows.some((r) => r.histogram)) {
    throw new QuantbookError('INVALID_ARGUMENT', `these statistics hold no histograms (observer "${rows[0]?.observer}" keeps only min/max); calibrate with act_method 'histogram' or a histogram-family observer`);
  }
  let chosen = rows.filter((r) => r.histogram);
  if (options.tensors) {
    chosen = options.tensors.map((t) => {
      const r = chosen.find((row) => row.tensor === t);
      if (!r) throw new QuantbookError('UNKNOWN_TENSOR', `no histogram for tensor "${t}"; tensors with histograms: ${rows.filter((row) => row.histogram).map((row) => row.tensor).slice(0, 20).join(', ')}…`);
      return r;
    });
  } else {
    chosen = chosen.sort((a, b) => clippedFraction(b) - clippedFraction(a)).slice(0, options.limit ?? 3);
  }
  for (const r of chosen) draw(activationHistogramFigure(r));
}

/**
 * One tensor's histogram (from statistics that keep histograms) with the quantized range each
 * method's statistics give it.
 */
export function ranges(withHistograms: CalibrationResult, tensor: string, methods: Record<string, CalibrationResult>): void {
  const row = withHistograms.tensorRows().find((r) => r.tensor === tensor && r.channel === -1);
  if (!row) throw new QuantbookError('UNKNOWN_TENSOR', `no statistics for tensor "${tensor}"`);
  const chosen: Record<string, [number, number]> = {};
  for (const [name, c] of Object.entries(methods)) {
    const q = c.qparams(tensor);
    chosen[name] = quantizedRange({ scale: q.scale[0], zeroPoint: q.zeroPoint[0], qmin: q.qmin, qmax: q.qmax });
  }
  draw(rangesFigure(row, chosen), 420);
}

/** Distribution of activation scales over layers and of weight scales over all channels. */
export function scales(r: QuantizationResult): void {
  const act = r.layers.filter((l) => l.input).map((l) => l.input!.scale);
  if (act.length) draw(scaleDistributionFigure(act, 'activation (input) scale per layer'));
  const w = r.weightScales();
  if (w.length) draw(scaleDistributionFigure(w, 'weight scale per output channel'));
}

/** One layer's weight scale per output channel. */
export function channelScales(r: QuantizationResult, layer: string): void {
  const l = r.layers.find((x) => x.name === layer);
  if (!l?.weight) throw new QuantbookError('INVALID_ARGUMENT', `no quantized weight for layer "${layer}"; quantized layers with weights: ${r.layers.filter((x) => x.weight).map((x) => x.name).slice(0, 20).join(', ')}…`);
  draw(channelScalesFigure(layer, l.weight.scale));
}

/** Per-layer sensitivity from `result.compare(...)`: SQNR bars from 0 dB and 1 − cosine on a log axis, the worst tenth in red. */
export function sensitivity(rows: LayerComparison[]): void {
  if (!rows.length) throw new QuantbookError('INVALID_ARGUMENT', 'sensitivity: the comparison is empty; pass the rows result.compare(batches) returned');
  draw(sqnrFigure(rows), 420);
  draw(cosineFigure(rows), 420);
}

/**
 * Where error is born: the layers with the lowest own SQNR (each fed the fp32 input), worst
 * first, beside the error accumulated at their outputs; from `result.compare(...)`.
 */
export function attribution(rows: LayerComparison[], top = 30): void {
  if (!rows.some((r) => Number.isFinite(r.localSqnrDb))) throw new QuantbookError('INVALID_ARGUMENT', 'attribution: no row has an own SQNR; pass the rows result.compare(batches) returned (compareModels with attribution on)');
  draw(attributionFigure(rows, top), 460);
}

/**
 * fp32 against quantized values of one tensor (default: the first model output) on the first
 * batch of `data`: both models are run here.
 */
export async function scatter(r: QuantizationResult, data: CalibrationSource, tensor?: string): Promise<void> {
  const name = tensor ?? r.float.graph.outputNames[0];
  r.float.graph.requireTensor(name, 'scatter tensor');
  const expose = r.float.graph.outputNames.includes(name) ? [] : [name];
  const first = await batchesFrom(data, r.float.graph.inputNames).next();
  if (first.done) throw new QuantbookError('INVALID_ARGUMENT', 'scatter: the data holds no batches');
  const values: Float32Array[] = [];
  for (const m of [r.float, r.qdq]) {
    const runner = await Runner.create(m, { expose });
    try {
      const out = await runner.run(first.value);
      values.push((expose.length ? out.exposed[name] : out.outputs[name]).data as Float32Array);
    } finally {
      await runner.dispose();
    }
  }
  draw(outputScatterFigure(name, values[0], values[1]));
}

/** Per-channel magnitudes before (and after) outlier suppression. */
export function channelMagnitudes(layer: string, before: ArrayLike<number>, after?: ArrayLike<number>): void {
  draw(channelMagnitudeFigure(layer, before, after));
}

/** Curves over steps (training loss/accuracy). */
export function history(title: string, steps: number[], series: Record<string, number[]>): void {
  draw(historyFigure(title, steps, series));
}

/** Any plotly figure spec. */
export function figure(fig: Figure, height?: number): void {
  draw(fig, height);
}
