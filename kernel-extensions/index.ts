/**
 * quantbook's notebook side (tslab): rich display of the SDK's objects, inline plotly plots,
 * live progress and reports. Everything also works outside a kernel (text on the terminal).
 *
 *   import * as qb from 'quantbook';
 *   import { show, plots, progress } from 'quantbook/dist/kernel-extensions';   // in this repo: '../dist/kernel-extensions'
 *   const s = qb.session(model, { calibData }).w8a8('histogram');
 *   show(s);                        // the plan: layers and their settings
 *   const r = await s.onProgress(progress('calibrating', n).onProgress).run();
 *   plots.histograms(r); plots.sensitivity(await r.compare(batches));
 */
import * as path from 'path';
import { ReportOptions, report as writeSessionReport } from '../sdk/session/report';
import { QuantSession, QuantizationResult } from '../sdk/session/session';
import { escapeHtml } from '../sdk/export/html';
import { inKernel, output } from './kernel';
import { render, renderSetup } from './render';
import * as plots from './plots';

export { inKernel } from './kernel';
export { writeKernelSpec } from './kernelspec';
export { progress, Progress } from './progress';
export { render, Rendered } from './render';
export { plots };

/** Shows a value richly: a session's plan, a result's layers, calibration statistics, an Arrow table, a comparison, a figure. */
export function show(x: unknown): void {
  const r = render(x);
  output.show(r.html, r.text);
}

/** Loads plotly.js into the notebook once (inlined: works offline and in exported HTML). */
export function setup(): void {
  const r = renderSetup();
  output.show(r.html, r.text);
}

/** Writes the HTML report of a session or result and shows where it went (and its run facts). */
export async function report(source: QuantSession | QuantizationResult, file: string, options: ReportOptions = {}): Promise<void> {
  const { input } = await writeSessionReport(source, file, options);
  const facts = [`model ${input.model}`, `${input.layers.length} layers`, input.data?.hash ? `data ${input.data.hash.slice(0, 25)}…` : '', input.comparison ? `${input.comparison.length} tensors compared` : ''].filter(Boolean).join(' · ');
  const href = path.relative(process.cwd(), path.resolve(file)).split(path.sep).join('/');
  output.show(`<div style="font:13px system-ui">Report written: <a href="${escapeHtml(href)}" target="_blank">${escapeHtml(href)}</a> (${escapeHtml(facts)})</div>`, `report written: ${file} (${facts})`);
}
