/** Small HTML helpers shared by the report and the notebook display: escaping and tables. */

/** A number for a table cell: integers as they are (counts, epochs, zero points), others to `digits` significant digits; ±Infinity and NaN as words. */
export function formatNumber(v: number, digits = 5): string {
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  return Number.isFinite(v) ? v.toPrecision(digits) : String(v);
}

export function escapeHtml(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

// Sorts the table by the clicked column: numerically when both cells parse as numbers, else as
// text; a second click reverses. Inline so it works in a saved notebook or report with no network.
const SORT_ON_CLICK = "(function(th){var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,d=th.dataset.dir==='a'?-1:1;"
  + "th.dataset.dir=d>0?'a':'d';var r=Array.prototype.slice.call(b.rows);r.sort(function(x,y){var p=x.cells[i].textContent,q=y.cells[i].textContent,"
  + "m=parseFloat(p),n=parseFloat(q);return d*(isNaN(m)||isNaN(n)?p.localeCompare(q):m-n);});r.forEach(function(x){b.appendChild(x);});})(this)";

/** A table; `sortable` makes each header sort the rows on click. Cells are escaped. */
export function htmlTable(head: string[], rows: unknown[][], options: { sortable?: boolean; className?: string } = {}): string {
  const th = (h: string) => (options.sortable ? `<th onclick="${escapeHtml(SORT_ON_CLICK)}" style="cursor:pointer" title="sort">${escapeHtml(h)}</th>` : `<th>${escapeHtml(h)}</th>`);
  const cls = options.className ? ` class="${escapeHtml(options.className)}"` : '';
  return `<table${cls}><thead><tr>${head.map(th).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((v) => `<td>${escapeHtml(v)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}
