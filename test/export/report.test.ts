/**
 * The HTML report and the plot specs it shares with the notebook display: binning keeps every
 * count, the saturated share is what QuantizeLinear clips, only trace types of plotly's basic
 * bundle are used, and the same model, config and data give the same report.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { xxhash128 } from 'hash-wasm';
import { CalibrationResult, figures, renderReport, report, session } from '../../sdk';
import { MODELS, tempDir } from '../helpers';
import { clsBatch } from '../ocr-fixtures';

const BASIC_TRACES = ['bar', 'scatter', 'pie'];

describe('report and figures', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const calib = [{ x: clsBatch().x }];

  it('binValues and coarsen keep every count', () => {
    const values = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3);
    const b = figures.binValues(values, 37);
    assert.equal(b.counts.reduce((a, c) => a + c, 0), 1000);
    const c = figures.coarsen(Float64Array.from({ length: 4096 }, (_, i) => i % 7), -1, 1, 200);
    assert.ok(c.counts.length <= 200);
    assert.equal(c.counts.reduce((a, x) => a + x, 0), Array.from({ length: 4096 }, (_, i) => i % 7).reduce((a, x) => a + x, 0));
  });

  it('the saturated share counts the histogram mass outside [(qmin − zp)·scale, (qmax − zp)·scale]', () => {
    // 100 bins over [0, 10), one value per bin; uint8 range with scale 0.02 holds [0, 5.1]
    const row = { tensor: 't', observer: 'histogram' as const, histogram: new Float64Array(100).fill(1), histLo: 0, histHi: 10, min: 0, max: 10, scale: 0.02, zeroPoint: 0, qmin: 0, qmax: 255 };
    const [lo, hi] = figures.quantizedRange(row);
    assert.equal(lo, 0);
    assert.ok(Math.abs(hi - 5.1) < 1e-12);
    assert.equal(figures.clippedFraction(row), 0.49); // bin centres 5.15 … 9.95
    const fig = figures.activationHistogramFigure(row);
    assert.deepEqual((fig.layout.shapes as Array<{ x0: number }>).map((s) => s.x0), [lo, hi]);
    assert.throws(() => figures.activationHistogramFigure({ ...row, histogram: null, observer: 'minmax' }), /keeps only min\/max/);
  });

  it('same model, config and data give the same report; other data gives another data hash', async () => {
    const render = async (data: Array<{ x: ort.Tensor }>) => {
      const r = await session(MODELS.cls, { calibData: data }).w8a8('histogram').run();
      const input = r.reportInput({ title: 'cls', model: 'cls', created: 'fixed', comparison: await r.compare(data) });
      return { html: renderReport(input), input };
    };
    const a = await render(calib);
    const b = await render(calib);
    assert.equal(a.html, b.html);
    const x = calib[0].x.data as Float32Array;
    const other = await render([{ x: new ort.Tensor('float32', x.map((v) => v * 0.5), calib[0].x.dims) }]);
    assert.match(a.input.data!.hash!, /^xxh3-128:[0-9a-f]{32}$/);
    assert.notEqual(other.input.data!.hash, a.input.data!.hash);
    // the hash is XXH3-128 over each batch's "name:type:dims;" and raw bytes, as documented
    const bytes = calib.map((b) => [Buffer.from(`x:float32:${b.x.dims.join('x')};`), Buffer.from((b.x.data as Float32Array).buffer, (b.x.data as Float32Array).byteOffset, (b.x.data as Float32Array).byteLength)]).flat();
    assert.equal(a.input.data!.hash, `xxh3-128:${await xxhash128(Buffer.concat(bytes))}`);
    // the report holds what the issue lists: config, versions, backend, seed, data hash, statistics, plots
    for (const needle of ['&quot;actMethod&quot;: &quot;histogram&quot;', 'onnxruntime-node', 'tfjs backend', 'seed', a.input.data!.hash!, 'Calibration statistics', 'Plotly.newPlot', 'window.Plotly = Plotly']) {
      assert.ok(a.html.includes(needle), needle);
    }
    // every plot uses a trace type plotly's basic bundle has (an unknown type would draw nothing useful)
    const specs = [...a.html.matchAll(/var s=(\{.*?\});function draw/g)].map((m) => JSON.parse(m[1]) as { data: Array<{ type: string }> });
    const types = specs.flatMap((f) => f.data.map((t) => t.type));
    assert.ok(types.length > 0);
    for (const t of types) assert.ok(BASIC_TRACES.includes(t), `trace type ${t}`);
  });

  it('report(session, file) runs the session, compares on the given data and writes one self-contained file', async () => {
    const file = path.join(dir, 'r', 'report.html');
    const s = session(MODELS.cls, { calibData: calib }).w8a8('minmax');
    const { input } = await report(s, file, { compareOn: calib, seed: 7, accuracy: [{ metric: 'm', fp32: '1', int8: '1' }] });
    const html = fs.readFileSync(file, 'utf8');
    assert.ok(!/<script[^>]+src=/.test(html), 'no external script');
    assert.ok(input.comparison!.some((c) => c.opType === 'output'));
    // where error is born: the attribution plot's first bar is the layer with the lowest own SQNR, bars from 0 dB
    const specs = [...html.matchAll(/var s=(\{.*?\});function draw/g)].map((m) => JSON.parse(m[1]) as { data: Array<{ x: string[]; y: number[] }>; layout: { title: { text: string }; yaxis: { rangemode?: string } } });
    const attribution = specs.find((f) => f.layout.title.text.startsWith('Where error is born'));
    assert.ok(attribution, 'attribution figure in the report');
    const layers = input.comparison!.filter((c) => Number.isFinite(c.localSqnrDb));
    const worst = layers.reduce((a, b) => (b.localSqnrDb < a.localSqnrDb ? b : a));
    assert.equal(attribution!.data[0].y[0], Math.round(worst.localSqnrDb * 1000) / 1000);
    assert.ok(attribution!.data[0].y.every((v, i, ys) => i === 0 || v >= ys[i - 1]), 'sorted worst first');
    assert.equal(attribution!.layout.yaxis.rangemode, 'tozero');
    assert.ok(html.includes('<h2>Where error is born</h2>'));
    assert.equal(input.seed, 7);
    assert.equal(input.statistics!.length, new Set(input.statistics!.map((r) => r.tensor)).size);
    const stats = (await s.run()).calibration as CalibrationResult;
    assert.equal(input.statistics!.length, stats.targets.length);
  });
});
