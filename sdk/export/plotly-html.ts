/**
 * Figures as HTML: a <div> and a script that draws it with plotly.js. The library itself comes
 * from the installed `plotly.js-basic-dist-min` package and is inlined (never a CDN), so a
 * report or an exported notebook renders from a file with no network.
 */
import * as fs from 'fs';
import type { Figure } from './figures';

let library: string | undefined;

/** plotly.js (basic bundle: scatter, bar, pie), as script text. */
export function plotlyLibrary(): string {
  return (library ??= fs.readFileSync(require.resolve('plotly.js-basic-dist-min/plotly-basic.min.js'), 'utf8'));
}

/** JSON safe to put inside a <script>: no "</script>" or "<!--" can close or open anything. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/**
 * The library as a <script> that also draws any plot queued before it arrived (in a notebook,
 * outputs may render in any order).
 */
export function plotlyLibraryTag(): string {
  return `<script>${plotlyLibrary()}\n;(window.__quantbookPlots||[]).forEach(function(f){f();});window.__quantbookPlots=[];</script>`;
}

/** One figure: a div with `id` and the script that draws into it (now, or once plotly has loaded). */
export function figureHtml(fig: Figure, id: string, height = 380): string {
  const spec = scriptJson({
    data: fig.data,
    layout: { margin: { t: 50, l: 60, r: 20, b: 60 }, height, ...fig.layout },
    config: { displaylogo: false, responsive: true },
  });
  return `<div id="${id}" class="quantbook-plot" style="width:100%;min-height:${height}px"></div>`
    + `<script>(function(){var s=${spec};function draw(){Plotly.newPlot(${JSON.stringify(id)},s.data,s.layout,s.config);}`
    + `if(window.Plotly){draw();}else{(window.__quantbookPlots=window.__quantbookPlots||[]).push(draw);}})();</script>`;
}
