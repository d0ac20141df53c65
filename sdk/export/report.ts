/**
 * A self-contained HTML report of a quantization run: configuration, environment (versions,
 * backend), data hash, per-layer quantization parameters, fp32-vs-int8 comparison and accuracy,
 * with plotly.js inlined so the plots render from a file with no network.
 * Only what is passed in is shown; the same inputs give the same file, apart from `created`.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { writeAll, writeFilesAtomically } from '../util/atomic-write';
import type { LayerComparison } from '../quantize/compare';

export interface ReportInput {
  title: string;
  model: string;
  /** the session config as JSON (no calibration data) */
  config: unknown;
  environment: Record<string, string>;
  data?: { description: string; sha256?: string; batches?: number };
  layers: Array<{ name: string; opType: string; inputScale?: number; inputZeroPoint?: number }>;
  skipped?: Array<{ name: string; opType: string; reason: string }>;
  comparison?: LayerComparison[];
  accuracy?: Array<{ metric: string; fp32: string; int8: string }>;
  files?: string[];
  created?: string;
}

/** sha256 over the names and bytes of the files of a folder (sorted), or of one file. */
export function hashPath(p: string): string {
  const h = crypto.createHash('sha256');
  const files = fs.statSync(p).isDirectory() ? fs.readdirSync(p).sort().map((f) => path.join(p, f)).filter((f) => fs.statSync(f).isFile()) : [p];
  for (const f of files) h.update(path.basename(f)).update(fs.readFileSync(f));
  return h.digest('hex');
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

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function table(head: string[], rows: unknown[][]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((v) => `<td>${esc(v)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

function plot(id: string, data: unknown[], layout: Record<string, unknown>): string {
  const spec = JSON.stringify({ data, layout: { margin: { t: 40, l: 60, r: 20, b: 120 }, height: 380, ...layout }, config: { displaylogo: false, responsive: true } }).replace(/</g, '\\u003c');
  return `<div id="${id}" class="plot"></div><script>(function(){var s=${spec};Plotly.newPlot(${JSON.stringify(id)},s.data,s.layout,s.config);})();</script>`;
}

/** The report as one HTML string. */
export function renderReport(r: ReportInput): string {
  const plotly = fs.readFileSync(require.resolve('plotly.js-basic-dist-min/plotly-basic.min.js'), 'utf8');
  const sections: string[] = [];
  sections.push(`<h2>Run</h2>${table(['', ''], [['model', r.model], ['created', r.created ?? new Date().toISOString()], ...(r.data ? [['calibration data', r.data.description], ['data sha256', r.data.sha256 ?? 'n/a'], ['batches', r.data.batches ?? 'n/a']] : [])])}`);
  sections.push(`<h2>Environment</h2>${table(['', ''], Object.entries(r.environment))}`);
  sections.push(`<h2>Configuration</h2><pre>${esc(JSON.stringify(r.config, null, 2))}</pre>`);
  if (r.accuracy?.length) sections.push(`<h2>Accuracy</h2>${table(['metric', 'fp32', 'int8'], r.accuracy.map((a) => [a.metric, a.fp32, a.int8]))}`);
  if (r.comparison?.length) {
    const c = r.comparison;
    sections.push(`<h2>Per-layer error, fp32 vs int8</h2>${plot('sqnr', [{ type: 'bar', x: c.map((l) => l.layer), y: c.map((l) => +l.sqnrDb.toFixed(3)), name: 'SQNR (dB)' }], { title: 'SQNR per layer output (dB, higher is better)', yaxis: { title: 'dB' } })}`);
    sections.push(plot('cosine', [{ type: 'bar', x: c.map((l) => l.layer), y: c.map((l) => +l.cosine.toFixed(6)), name: 'cosine' }], { title: 'Cosine similarity per layer output', yaxis: { range: [Math.min(...c.map((l) => l.cosine)) - 0.001, 1] } }));
    sections.push(table(['layer', 'op', 'tensor', 'SQNR dB', 'cosine', 'max |error|'], c.map((l) => [l.layer, l.opType, l.tensor, l.sqnrDb.toFixed(2), l.cosine.toFixed(6), l.maxAbsError.toPrecision(4)])));
  }
  const scaled = r.layers.filter((l) => l.inputScale !== undefined);
  if (scaled.length) sections.push(`<h2>Activation scales</h2>${plot('scales', [{ type: 'histogram', x: scaled.map((l) => Math.log10(l.inputScale!)), nbinsx: 40 }], { title: 'log10(input scale) over quantized layers', xaxis: { title: 'log10 scale' }, yaxis: { title: 'layers' } })}`);
  sections.push(`<h2>Quantized layers (${r.layers.length})</h2>${table(['layer', 'op', 'input scale', 'input zero point'], r.layers.map((l) => [l.name, l.opType, l.inputScale?.toPrecision(6) ?? '—', l.inputZeroPoint ?? '—']))}`);
  if (r.skipped?.length) sections.push(`<h2>Kept in float (${r.skipped.length})</h2>${table(['layer', 'op', 'reason'], r.skipped.map((s) => [s.name, s.opType, s.reason]))}`);
  if (r.files?.length) sections.push(`<h2>Files</h2><ul>${r.files.map((f) => `<li>${esc(f)}</li>`).join('')}</ul>`);
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}pre{background:#f7f7f7;padding:8px;overflow:auto}.plot{width:100%}</style>
<script>${plotly}</script></head>
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
