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

/** Title lines are at most this many characters: a title that fits stays clear of the toolbar (top right). */
export const TITLE_LINE_CHARS = 72;

/** Breaks a title into lines of at most TITLE_LINE_CHARS characters at spaces (a longer word keeps its own line). */
export function wrapTitle(text: string, width = TITLE_LINE_CHARS): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/**
 * One figure: a div with `id` and the script that draws into it (now, or once plotly has loaded).
 * The title is left-aligned over the plot and wrapped, with the top margin grown to hold its
 * lines, so it never runs under the toolbar in the top right corner.
 */
export function figureHtml(fig: Figure, id: string, height = 380): string {
  const title = fig.layout.title as { text?: string } | undefined;
  const lines = title?.text ? wrapTitle(title.text) : [];
  const layoutTitle = title?.text
    ? { title: { ...title, text: lines.join('<br>'), x: 0, xref: 'paper', xanchor: 'left', font: { size: 16 } } }
    : {};
  const spec = scriptJson({
    data: fig.data,
    layout: { height, ...fig.layout, margin: { t: 24 + 22 * Math.max(1, lines.length), l: 60, r: 20, b: 60 }, ...layoutTitle },
    config: { displaylogo: false, responsive: true },
  });
  return `<div id="${id}" class="quantbook-plot" style="width:100%;min-height:${height}px"></div>`
    + `<script>(function(){var s=${spec};function draw(){Plotly.newPlot(${JSON.stringify(id)},s.data,s.layout,s.config);}`
    + `if(window.Plotly){draw();}else{(window.__quantbookPlots=window.__quantbookPlots||[]).push(draw);}})();</script>`;
}
