/**
 * Every notebook in notebooks/ executed top to bottom in the real tslab kernel by Debian's
 * `jupyter nbconvert --execute` (fails on any error or stderr output), and the quickstart's HTML
 * export opened in headless Chromium with no network: its plots must be drawn (plotly's SVG
 * present in every plot) with no console error, no failed request and no page error.
 * Needs `jupyter-nbconvert python3-nbclient chromium` (.ci/run installs them); outside CI the
 * tests are skipped, with the reason, when those are missing.
 */
import * as assert from 'assert';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { writeKernelSpec } from '../../kernel-extensions/kernelspec';
import { loadSafetensors } from '../../sdk';
import { tempDir } from '../helpers';

const ROOT = path.join(__dirname, '..', '..', '..');
const NOTEBOOKS = path.join(ROOT, 'notebooks');
const JUPYTER = '/usr/bin/jupyter';
const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p) => p && fs.existsSync(p));

interface Output { output_type: string; name?: string; text?: string[] | string; data?: Record<string, string[] | string>; ename?: string; evalue?: string }
interface Cell { cell_type: string; source: string[] | string; outputs?: Output[] }

const text = (v: string[] | string | undefined) => (Array.isArray(v) ? v.join('') : v ?? '');

function requireTool(ctx: Mocha.Context, file: string | undefined, what: string): void {
  if (file && fs.existsSync(file)) return;
  if (process.env.CI) throw new Error(`${what} is missing; .ci/run installs it`);
  console.log(`      (skipped: ${what} is not installed; apt-get install jupyter-nbconvert python3-nbclient chromium)`);
  ctx.skip();
}

describe('notebooks (tslab kernel, nbconvert, headless Chromium)', function () {
  const work = tempDir('quantbook-nb-');
  const executed = new Map<string, string>();
  let jupyterPath = '';

  before(function () {
    requireTool(this, JUPYTER, 'Debian jupyter-nbconvert');
    jupyterPath = path.join(work, 'jupyter');
    writeKernelSpec(jupyterPath);
  });

  const names = fs.readdirSync(NOTEBOOKS).filter((f) => f.endsWith('.ipynb')).sort();
  it('there are notebooks for quickstart, calibration methods, outlier suppression, QAT and Ascend export', () => {
    for (const n of ['quickstart.ipynb', 'calibration-methods.ipynb', 'outlier-suppression.ipynb', 'qat.ipynb', 'ascend-export.ipynb']) assert.ok(names.includes(n), n);
  });

  for (const name of names) {
    it(`${name} runs top to bottom with no error output`, function () {
      requireTool(this, JUPYTER, 'Debian jupyter-nbconvert');
      const out = path.join(work, name);
      // --allow-errors: every output is kept, so the first error below is reported with its message
      // (tslab prints the error to stderr; nbconvert's own exception would hold no message)
      execFileSync(JUPYTER, ['nbconvert', '--to', 'notebook', '--execute', '--allow-errors', '--ExecutePreprocessor.timeout=900', '--ExecutePreprocessor.kernel_name=tslab', '--output', out, path.join(NOTEBOOKS, name)], {
        cwd: NOTEBOOKS, env: { ...process.env, JUPYTER_PATH: jupyterPath }, stdio: 'pipe', maxBuffer: 1 << 26,
      });
      const nb = JSON.parse(fs.readFileSync(out, 'utf8')) as { cells: Cell[] };
      const code = nb.cells.filter((c) => c.cell_type === 'code');
      for (const [i, c] of code.entries()) {
        const stderr = (c.outputs ?? []).filter((o) => o.output_type === 'stream' && o.name === 'stderr').map((o) => text(o.text)).join('');
        for (const o of c.outputs ?? []) {
          assert.notEqual(o.output_type, 'error', `${name} code cell ${i}: ${o.ename}: ${o.evalue}\n${stderr.slice(0, 1500)}\n--- cell:\n${text(c.source)}`);
        }
        assert.equal(stderr, '', `${name} code cell ${i} wrote to stderr\n--- cell:\n${text(c.source)}`);
      }
      // the rich display ran inside the kernel (not the terminal fallback): HTML outputs with plots
      const html = code.flatMap((c) => c.outputs ?? []).map((o) => text(o.data?.['text/html'])).filter(Boolean);
      assert.ok(html.length >= 3, `${name}: only ${html.length} HTML outputs`);
      assert.ok(html.some((h) => h.includes('Plotly.newPlot')), `${name}: no plot`);
      executed.set(name, out);
    });
  }

  it('the quickstart shows where error is born: the attribution plot and the five worst layers by own SQNR, in order', function () {
    const nb = executed.get('quickstart.ipynb');
    if (!nb) this.skip();
    const cells = (JSON.parse(fs.readFileSync(nb!, 'utf8')) as { cells: Cell[] }).cells.filter((c) => c.cell_type === 'code');
    const cell = cells.find((c) => text(c.source).includes('plots.attribution(comparison)'))!;
    const html = (cell.outputs ?? []).map((o) => text(o.data?.['text/html']));
    assert.ok(html.some((h) => h.includes('Where error is born') && h.includes('Plotly.newPlot')), 'attribution plot drawn');
    // the table: 5 body rows (layer, op, own, accumulated), own SQNR ascending
    const table = html.find((h) => h.includes('own SQNR dB</th>'))!;
    const rows = [...table.split('<tbody>')[1].matchAll(/<tr>(.*?)<\/tr>/g)].map((m) => [...m[1].matchAll(/<td>(.*?)<\/td>/g)].map((c) => c[1]));
    const own = rows.map((r) => Number(r[2]));
    assert.equal(own.length, 5, table);
    assert.ok(own.every((v, i) => Number.isFinite(v) && (i === 0 || v >= own[i - 1])), own.join(', '));
  });

  it('ascend-export prints the tensor count the exported safetensors file holds (> 0, all described) and shows the layer\'s tensors', function () {
    const nb = executed.get('ascend-export.ipynb');
    if (!nb) this.skip();
    const cells = (JSON.parse(fs.readFileSync(nb!, 'utf8')) as { cells: Cell[] }).cells.filter((c) => c.cell_type === 'code');
    const stdout = (c: Cell) => (c.outputs ?? []).filter((o) => o.output_type === 'stream' && o.name === 'stdout').map((o) => text(o.text)).join('');
    const saveCell = cells.find((c) => text(c.source).includes("saveType: ['safe_tensor']"))!;
    const file = stdout(saveCell).split('\n').find((l) => l.endsWith('.safetensors'));
    assert.ok(file, `no .safetensors file listed:\n${stdout(saveCell)}`);
    const held = loadSafetensors(path.join(ROOT, 'out', 'notebooks', 'ascend', file!)).tensors.size;
    const cell = cells.find((c) => text(c.source).includes('tensors stored'))!;
    const m = /model_quant_type: W8A8; (\d+) tensors stored, (\d+) described/.exec(stdout(cell));
    assert.ok(m, `printed: ${stdout(cell)}`);
    const [stored, described] = [Number(m![1]), Number(m![2])];
    assert.ok(stored > 0 && stored === held && described === held, `printed ${stored} stored / ${described} described; the file holds ${held}`);
    // the table of one layer's tensors: weight, input_scale, input_offset, quant_bias, deq_scale
    const table = (cell.outputs ?? []).map((o) => text(o.data?.['text/html'])).find((h) => h.includes('<table'));
    const rows = table ? [...table.matchAll(/<tr>/g)].length - 1 : 0;
    assert.ok(rows >= 5, `the layer table has ${rows} rows:\n${table}`);
    for (const t of ['.weight', '.input_scale', '.input_offset', '.quant_bias', '.deq_scale']) assert.ok(table!.includes(t), `${t} missing from the table`);
  });

  it('the quickstart exported to HTML renders its plots offline in headless Chromium', async function () {
    requireTool(this, CHROMIUM, 'chromium');
    const nb = executed.get('quickstart.ipynb');
    if (!nb) this.skip();
    const html = path.join(work, 'quickstart.html');
    execFileSync(JUPYTER, ['nbconvert', '--to', 'html', '--template', 'offline', `--TemplateExporter.extra_template_basedirs=${path.join(NOTEBOOKS, 'templates')}`, '--output', html, nb!], { stdio: 'pipe' });
    const page = fs.readFileSync(html, 'utf8');
    assert.ok(!/<script[^>]+src=/.test(page), 'the export loads a script from elsewhere');

    const puppeteer = await import('puppeteer-core');
    const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
    const problems: string[] = [];
    try {
      const tab = await browser.newPage();
      await tab.setViewport({ width: 1200, height: 900 });
      tab.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warn') problems.push(`console ${m.type()}: ${m.text()}`); });
      tab.on('pageerror', (e) => problems.push(`page error: ${(e as Error).message}`));
      tab.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
      // no network: any request that leaves the file would fail here and be reported above
      await tab.setRequestInterception(true);
      tab.on('request', (r) => (r.url().startsWith('file:') || r.url().startsWith('data:') ? r.continue() : r.abort()));
      await tab.goto(`file://${html}`, { waitUntil: 'load' });
      const plots = await tab.$$eval('.quantbook-plot', (divs) => divs.map((d) => d.querySelectorAll('svg.main-svg').length));
      const shot = path.join(work, 'quickstart.png');
      await tab.screenshot({ path: shot, fullPage: true });
      assert.ok(plots.length >= 6, `only ${plots.length} plots in the export`);
      plots.forEach((svgs, i) => assert.ok(svgs > 0, `plot ${i} was not drawn`));
      assert.ok(fs.statSync(shot).size > 50_000, 'the screenshot is (nearly) empty');
    } finally {
      await browser.close();
    }
    assert.deepEqual(problems, []);
  });
});
