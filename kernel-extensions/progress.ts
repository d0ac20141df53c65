/**
 * Live progress for long calls (calibration, comparison, training): an HTML bar that updates in
 * place in a notebook, a bar redrawn on one line on a terminal, silence when piped.
 *
 *   const p = progress('calibrating', batches.length);
 *   await session(model, { calibData }).w8a8().onProgress(p.onProgress).run();
 *   p.done();
 */
import { escapeHtml } from '../sdk/export/html';
import { ProgressBar } from '../sdk/cli/progress';
import { inKernel, updatingOutput } from './kernel';

export interface Progress {
  /** `done` units of `total` finished; `detail` is shown after the bar */
  update(done: number, detail?: string): void;
  /** the SDK's progress callbacks, bound to this bar: calibration ({ batch }), AdaRound and sensitivity ({ done, layer }) */
  onProgress: (p: { batch?: number; done?: number; layer?: string }) => void;
  done(detail?: string): void;
}

export function progress(label: string, total?: number): Progress {
  const started = Date.now();
  if (!inKernel()) {
    const bar = new ProgressBar(label, total);
    return { update: (n) => bar.update(n), onProgress: (p) => bar.update(p.done ?? p.batch ?? 0), done: () => bar.done() };
  }
  const out = updatingOutput();
  // updates are throttled: a display message per batch would flood the notebook's websocket
  let last = 0;
  const draw = (done: number, detail: string | undefined, final: boolean) => {
    const now = Date.now();
    if (!final && now - last < 200) return;
    last = now;
    const secs = ((now - started) / 1000).toFixed(1);
    const pct = total ? Math.min(100, (100 * done) / total) : 100;
    const count = total ? `${done}/${total}` : `${done}`;
    out.show(
      `<div style="font:13px system-ui,sans-serif;display:flex;align-items:center;gap:8px">`
      + `<span>${escapeHtml(label)}</span>`
      + `<span style="display:inline-block;width:240px;height:10px;background:#eee;border-radius:5px;overflow:hidden">`
      + `<span style="display:block;height:100%;width:${pct.toFixed(1)}%;background:${final ? '#2ca02c' : '#1f77b4'}"></span></span>`
      + `<span>${count} · ${secs} s${detail ? ` · ${escapeHtml(detail)}` : ''}${final ? ' · done' : ''}</span></div>`,
      `${label} ${count}`,
    );
  };
  let current = 0;
  return {
    update: (n, detail) => draw((current = n), detail, false),
    onProgress: (p) => draw((current = p.done ?? p.batch ?? current), p.layer, false),
    done: (detail) => draw(current, detail, true),
  };
}
