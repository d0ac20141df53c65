/**
 * HTML for the SDK's objects: what `show(x)` puts in a notebook. Each renderer returns HTML and
 * a plain-text fallback for terminals. Plots come from sdk/export/figures, the same specs the
 * HTML report draws.
 */
import * as util from 'util';
import * as arrow from 'apache-arrow';
import { CalibrationResult } from '../sdk/calibration/calibrator';
import { Figure, sqnrFigure } from '../sdk/export/figures';
import { escapeHtml, formatNumber as num, htmlTable } from '../sdk/export/html';
import { figureHtml, plotlyLibraryTag } from '../sdk/export/plotly-html';
import type { LayerComparison } from '../sdk/quantize/compare';
import { worstFirst } from '../sdk/quantize/attribution';
import { QuantSession, QuantizationResult, SessionPlan } from '../sdk/session/session';

export interface Rendered { html: string; text: string }

const STYLE = '<style>.quantbook table{border-collapse:collapse;font:12px system-ui,sans-serif;margin:4px 0}'
  + '.quantbook td,.quantbook th{border:1px solid #ddd;padding:2px 6px;text-align:left}.quantbook th{background:#f3f3f3}'
  + '.quantbook .scroll{max-height:420px;overflow:auto}</style>';

const box = (title: string, body: string) => `<div class="quantbook">${STYLE}<b>${escapeHtml(title)}</b>${body}</div>`;
const scroll = (html: string) => `<div class="scroll">${html}</div>`;

/** The layers kept in float and why (empty when none). */
function skippedTable(skipped: SessionPlan['skipped']): string {
  return skipped.length ? `<p>Kept in float (${skipped.length}):</p>${htmlTable(['layer', 'op', 'reason'], skipped.map((s) => [s.name, s.opType, s.reason]), { sortable: true })}` : '';
}

let plotCounter = 0;
let libraryShown = false;

/** A figure as HTML; the first figure of a kernel's life also carries plotly.js (once, inlined). */
export function renderFigure(fig: Figure, height?: number): Rendered {
  const id = `quantbook-plot-${process.pid}-${++plotCounter}`;
  const lib = libraryShown ? '' : plotlyLibraryTag();
  libraryShown = true;
  const title = (fig.layout.title as { text?: string } | undefined)?.text ?? 'figure';
  return { html: lib + figureHtml(fig, id, height), text: `[plot: ${title}]` };
}

/** plotly.js as an output of its own (call at the top of a notebook; later plots reuse it). */
export function renderSetup(): Rendered {
  libraryShown = true;
  return { html: plotlyLibraryTag() + '<span style="font:12px system-ui">quantbook: plotting ready (plotly.js inlined, works offline)</span>', text: 'quantbook: display ready' };
}

export function renderPlan(p: SessionPlan): Rendered {
  const settings = Object.entries(p.settings).map(([k, v]) => `${k}=${String(v)}`).join(', ');
  const rows = p.layers.map((l) => [l.name, l.opType, l.weight, l.activation]);
  const skipped = skippedTable(p.skipped);
  return {
    html: box(`Plan: ${p.processor} (${settings}) — ${p.layers.length} layers quantized, ${p.skipped.length} kept in float`,
      scroll(htmlTable(['layer', 'op', 'weight', 'activation'], rows, { sortable: true })) + skipped),
    text: `${p.processor}: ${p.layers.length} layers quantized, ${p.skipped.length} kept in float`,
  };
}

export function renderResult(r: QuantizationResult): Rendered {
  const rows = r.layers.map((l) => {
    const s = l.weight?.scale;
    const range = s ? `${num(Math.min(...s), 3)} … ${num(Math.max(...s), 3)} (${s.length} ch)` : '—';
    return [l.name, l.opType, range, l.input ? num(l.input.scale) : 'dynamic', l.input?.zeroPoint ?? '—'];
  });
  const skipped = skippedTable(r.selection.skipped);
  return {
    html: box(`${r.baseName}: ${r.kind}, ${r.layers.length} layers quantized`, scroll(htmlTable(['layer', 'op', 'weight scale (min … max)', 'input scale', 'input zero point'], rows, { sortable: true })) + skipped),
    text: `${r.baseName}: ${r.kind}, ${r.layers.length} layers quantized, ${r.selection.skipped.length} kept in float`,
  };
}

/** Calibration statistics: one row per tensor (per channel when per-channel), sortable. */
export function renderCalibration(c: CalibrationResult): Rendered {
  const unique = c.tensorRows();
  return {
    html: box(`Calibration statistics: ${c.targets.length} tensors, ${c.metadata.batches} batches, backend ${c.metadata.backend}`,
      scroll(htmlTable(['tensor', 'channel', 'observer', 'min', 'max', 'mean', 'std', 'clip min', 'clip max', 'scale', 'zero point'],
        unique.map((r) => [r.tensor, r.channel, r.observer, num(r.min), num(r.max), num(r.mean), num(r.std), num(r.clipMin), num(r.clipMax), num(r.scale), r.zeroPoint]), { sortable: true }))),
    text: `calibration statistics: ${c.targets.length} tensors over ${c.metadata.batches} batches`,
  };
}

/** Any Arrow table (stats files, comparison tables, training history): sortable, first `limit` rows. */
export function renderArrow(t: arrow.Table, limit = 1000): Rendered {
  const names = t.schema.fields.map((f) => f.name);
  const rows: unknown[][] = [];
  for (let i = 0; i < Math.min(t.numRows, limit); i++) {
    const row = t.get(i)!;
    rows.push(names.map((n) => cell(row[n])));
  }
  const more = t.numRows > limit ? `<p>… ${t.numRows - limit} more rows</p>` : '';
  return { html: box(`Arrow table: ${t.numRows} rows × ${names.length} columns`, scroll(htmlTable(names, rows, { sortable: true })) + more), text: `Arrow table: ${t.numRows} rows × ${names.length} columns` };
}

function cell(v: unknown): unknown {
  if (typeof v === 'number') return num(v);
  if (v && typeof v === 'object' && 'length' in v) return `[${(v as ArrayLike<number>).length} values]`;
  return v ?? '';
}

/** Per-layer comparison: SQNR bars (worst layers in red) and the sortable table. */
export function renderComparison(rows: LayerComparison[]): Rendered {
  const fig = renderFigure(sqnrFigure(rows), 420);
  const worst = [...rows].sort((a, b) => a.sqnrDb - b.sqnrDb)[0];
  const born = worstFirst(rows)[0];
  return {
    html: fig.html + box(`fp32 vs quantized, ${rows.length} tensors`, scroll(htmlTable(['layer', 'op', 'tensor', 'SQNR dB', 'own SQNR dB', 'cosine', 'max |error|'],
      rows.map((l) => [l.layer, l.opType, l.tensor, l.sqnrDb.toFixed(2), Number.isFinite(l.localSqnrDb) ? l.localSqnrDb.toFixed(2) : '—', l.cosine.toFixed(6), num(l.maxAbsError, 4)]), { sortable: true }))),
    text: `${rows.length} tensors compared; worst SQNR ${worst ? `${worst.sqnrDb.toFixed(2)} dB at ${worst.layer}` : 'n/a'}${born ? `; worst own SQNR ${born.localSqnrDb.toFixed(2)} dB at ${born.layer}` : ''}`,
  };
}

/** An array of plain objects (e.g. an accuracy table): one row each, columns from their keys. */
export function renderRecords(records: Array<Record<string, unknown>>): Rendered {
  const head = [...new Set(records.flatMap((r) => Object.keys(r)))];
  const rows = records.map((r) => head.map((h) => cell(r[h])));
  const text = [head.join('\t'), ...rows.map((r) => r.join('\t'))].join('\n');
  return { html: box(`${records.length} rows`, scroll(htmlTable(head, rows, { sortable: true }))), text };
}

const isRecords = (x: unknown): x is Array<Record<string, unknown>> => Array.isArray(x) && x.length > 0 && x.every((r) => r !== null && typeof r === 'object' && Object.getPrototypeOf(r) === Object.prototype);
const isComparison = (x: unknown): x is LayerComparison[] => Array.isArray(x) && x.length > 0 && x.every((r) => r && typeof r === 'object' && 'sqnrDb' in r && 'cosine' in r);
const isFigure = (x: unknown): x is Figure => !!x && typeof x === 'object' && Array.isArray((x as Figure).data) && typeof (x as Figure).layout === 'object';

/** Picks the renderer for a value; anything unknown is shown as Node would print it. */
export function render(x: unknown): Rendered {
  if (x instanceof QuantSession) return renderPlan(x.plan());
  if (x instanceof QuantizationResult) return renderResult(x);
  if (x instanceof CalibrationResult) return renderCalibration(x);
  if (x instanceof arrow.Table) return renderArrow(x);
  if (isComparison(x)) return renderComparison(x);
  if (isFigure(x)) return renderFigure(x);
  if (isRecords(x)) return renderRecords(x);
  const text = util.inspect(x, { depth: 4 });
  return { html: `<pre>${escapeHtml(text)}</pre>`, text };
}
