/**
 * A self-contained HTML report of a quantization run: configuration, environment (versions,
 * backend), seed, data hash, calibration statistics, per-layer quantization parameters,
 * fp32-vs-int8 comparison and accuracy, with plotly.js inlined so the plots render from a file
 * with no network. Only what is passed in is shown; the same inputs give the same file, apart
 * from `created`.
 */
import * as fs from 'fs';
import * as path from 'path';
import { writeAll, writeFilesAtomically } from '../util/atomic-write';
import type { LayerComparison } from '../quantize/compare';
import type { StatRow } from '../stats/calibration-stats';
import { activationHistogramFigure, attributionFigure, cosineFigure, scaleDistributionFigure, sqnrFigure } from './figures';
import { worstFirst } from '../quantize/attribution';
import { escapeHtml as esc, formatNumber as num, htmlTable as table } from './html';
import { figureHtml, plotlyLibraryTag } from './plotly-html';

export interface ReportInput {
  title: string;
  model: string;
  /** the session config as JSON (no calibration data) */
  config: unknown;
  environment: Record<string, string>;
  /** the random seed the run used, or why none was needed */
  seed?: number | string;
  /** `hash`: the calibration data's hash, algorithm first ("xxh3-128:…") */
  data?: { description: string; hash?: string; batches?: number };
  layers: Array<{ name: string; opType: string; inputScale?: number; inputZeroPoint?: number }>;
  /** every per-channel weight scale of the quantized layers */
  weightScales?: ArrayLike<number>;
  /** calibration statistics, one per-tensor row each (histograms are drawn for the first `histogramsShown`) */
  statistics?: StatRow[];
  histogramsShown?: number;
  skipped?: Array<{ name: string; opType: string; reason: string }>;
  comparison?: LayerComparison[];
  accuracy?: Array<{ metric: string; fp32: string; int8: string }>;
  files?: string[];
  created?: string;
}

export function environment(extra: Record<string, string> = {}): Record<string, string> {
  const version = (pkg: string) => {
    try {
      return JSON.parse(fs.readFileSync(require.resolve(`${pkg}/package.json`), 'utf8')).version as string;
    } catch {
      return 'not installed';
    }
  };
  const own = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')).version as string;
  return { quantbook: own, node: process.version, 'onnxruntime-node': version('onnxruntime-node'), '@tensorflow/tfjs': version('@tensorflow/tfjs'), platform: `${process.platform} ${process.arch}`, ...extra };
}

/** The report as one HTML string. */
export function renderReport(r: ReportInput): string {
  const sections: string[] = [];
  const run: unknown[][] = [['model', r.model], ['created', r.created ?? new Date().toISOString()], ['seed', r.seed ?? 'none (the run is deterministic)']];
  if (r.data) run.push(['calibration data', r.data.description], ['data hash', r.data.hash ?? 'n/a'], ['batches', r.data.batches ?? 'n/a']);
  sections.push(`<h2>Run</h2>${table(['', ''], run)}`);
  sections.push(`<h2>Environment</h2>${table(['', ''], Object.entries(r.environment))}`);
  sections.push(`<h2>Configuration</h2><pre>${esc(JSON.stringify(r.config, null, 2))}</pre>`);
  if (r.accuracy?.length) sections.push(`<h2>Accuracy</h2>${table(['metric', 'fp32', 'int8'], r.accuracy.map((a) => [a.metric, a.fp32, a.int8]))}`);
  if (r.comparison?.length) {
    const c = r.comparison;
    sections.push(`<h2>Per-layer error, fp32 vs int8</h2>${figureHtml(sqnrFigure(c), 'sqnr', 420)}`);
    sections.push(figureHtml(cosineFigure(c), 'cosine', 420));
    sections.push(table(['layer', 'op', 'tensor', 'SQNR dB', 'cosine', 'max |error|'], c.map((l) => [l.layer, l.opType, l.tensor, l.sqnrDb.toFixed(2), l.cosine.toFixed(6), l.maxAbsError.toPrecision(4)]), { sortable: true }));
    const attributed = worstFirst(c);
    if (attributed.length) {
      sections.push(`<h2>Where error is born</h2><p>Own SQNR: the layer's quantized form fed the fp32 input (the error it adds by itself); accumulated: at its output in the quantized model. Worst own SQNR first.</p>${figureHtml(attributionFigure(c), 'attribution', 460)}`);
      sections.push(table(['layer', 'op', 'own SQNR dB', 'accumulated SQNR dB', 'own cosine'], attributed.map((l) => [l.layer, l.opType, l.localSqnrDb.toFixed(2), l.sqnrDb.toFixed(2), l.localCosine.toFixed(6)]), { sortable: true }));
    }
  }
  if (r.statistics?.length) {
    const s = r.statistics;
    sections.push(`<h2>Calibration statistics (${s.length} tensors)</h2>${table(['tensor', 'observer', 'min', 'max', 'mean', 'std', 'clip min', 'clip max', 'scale', 'zero point'],
      s.map((x) => [x.tensor, x.observer, num(x.min), num(x.max), num(x.mean), num(x.std), num(x.clipMin), num(x.clipMax), num(x.scale), x.zeroPoint]), { sortable: true })}`);
    const withHistogram = s.filter((x) => x.histogram).slice(0, r.histogramsShown ?? 4);
    withHistogram.forEach((x, i) => sections.push(figureHtml(activationHistogramFigure(x), `histogram-${i}`)));
  }
  const scaled = r.layers.filter((l) => l.inputScale !== undefined);
  if (scaled.length || r.weightScales?.length) sections.push('<h2>Scales</h2>');
  if (scaled.length) sections.push(figureHtml(scaleDistributionFigure(scaled.map((l) => l.inputScale!), 'activation (input) scale per layer'), 'activation-scales'));
  if (r.weightScales?.length) sections.push(figureHtml(scaleDistributionFigure(r.weightScales, 'weight scale per output channel'), 'weight-scales'));
  sections.push(`<h2>Quantized layers (${r.layers.length})</h2>${table(['layer', 'op', 'input scale', 'input zero point'], r.layers.map((l) => [l.name, l.opType, l.inputScale?.toPrecision(6) ?? '—', l.inputZeroPoint ?? '—']), { sortable: true })}`);
  if (r.skipped?.length) sections.push(`<h2>Kept in float (${r.skipped.length})</h2>${table(['layer', 'op', 'reason'], r.skipped.map((s) => [s.name, s.opType, s.reason]))}`);
  if (r.files?.length) sections.push(`<h2>Files</h2><ul>${r.files.map((f) => `<li>${esc(f)}</li>`).join('')}</ul>`);
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}pre{background:#f7f7f7;padding:8px;overflow:auto}</style>
${plotlyLibraryTag()}</head>
<body><h1>${esc(r.title)}</h1>
${sections.join('\n')}
</body></html>
`;
}

export function writeReport(file: string, r: ReportInput): string {
  const html = new TextEncoder().encode(renderReport(r));
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeFilesAtomically([{ path: file, write: (fd) => writeAll(fd, html) }]);
  return file;
}
