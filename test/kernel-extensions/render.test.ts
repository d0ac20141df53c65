/**
 * The notebook display outside a kernel and its renderers: what `show` gives for each SDK
 * object (the notebook test runs the same code inside the real tslab kernel).
 */
import { strict as assert } from 'assert';
import * as arrow from 'apache-arrow';
import { inKernel, plots, progress, render, show } from '../../kernel-extensions';
import { calibrate, loadModel, prepareFloat, selectLayers, session } from '../../sdk';
import { MODELS } from '../helpers';
import { clsBatch } from '../ocr-fixtures';

function captureLog<T>(fn: () => T): { value: T; lines: string[] } {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => { lines.push(a.join(' ')); };
  try {
    return { value: fn(), lines };
  } finally {
    console.log = log;
  }
}

const cells = (html: string, row: number) => [...html.matchAll(/<tr>(.*?)<\/tr>/g)][row][1].match(/<td>(.*?)<\/td>/g)!.map((c) => c.replace(/<\/?td>/g, ''));

describe('kernel extensions (display)', () => {
  const calib = [{ x: clsBatch().x }];

  it('outside a kernel, show and plots print one line of text instead of HTML', () => {
    assert.equal(inKernel(), false);
    const { lines } = captureLog(() => show([{ metric: 'accuracy', fp32: '99%' }]));
    assert.deepEqual(lines, ['metric\tfp32\naccuracy\t99%']);
    const p = progress('work', 3);
    p.update(1);
    p.done();
  });

  it("a session's plan lists exactly the layers the session will quantize, and what it keeps in float", () => {
    const s = session(MODELS.cls, { calibData: calib }).w8a8('histogram').disable('p2o.Conv.0');
    const plan = s.plan();
    const selection = selectLayers(prepareFloat(loadModel(MODELS.cls)), ['p2o.Conv.0']);
    assert.deepEqual(plan.layers.map((l) => l.name), selection.layers.map((l) => l.name));
    assert.deepEqual(plan.skipped, [{ name: 'p2o.Conv.0', opType: 'Conv', reason: 'disable_names' }]);
    const html = render(s).html;
    assert.equal([...html.matchAll(/<tr>/g)].length, 1 + plan.layers.length + 1 + 1); // layer table + skipped table (with headers)
    assert.match(html, /histogram/);
  });

  it('a result, its calibration statistics and an Arrow table render as sortable tables with the numbers', async () => {
    const r = await session(MODELS.cls, { calibData: calib }).w8a8('histogram').run();
    const html = render(r).html;
    assert.equal([...html.matchAll(/<tr>/g)].length, 1 + r.layers.length);
    assert.ok(html.includes('onclick'), 'sortable headers');
    const first = cells(html, 1);
    assert.equal(first[0], r.layers[0].name);
    assert.equal(Number(first[3]), Number(r.layers[0].input!.scale.toPrecision(5)));
    const c = await calibrate(prepareFloat(loadModel(MODELS.cls)), calib, { observer: 'minmax' });
    assert.equal([...render(c).html.matchAll(/<tr>/g)].length, 1 + c.targets.length);
    const t = arrow.tableFromArrays({ a: Float64Array.from([3, 1, 2]), b: ['x', 'y', 'z'] });
    const th = render(t).html;
    assert.deepEqual(cells(th, 2), ['1', 'y']); // integers as integers
    assert.deepEqual(cells(render(arrow.tableFromArrays({ a: Float64Array.from([0.123456789]) })).html, 1), ['0.12346']);
  });

  it('plots refuse what they cannot draw, saying why', async () => {
    const r = await session(MODELS.cls, { calibData: calib }).w8a8('minmax').run();
    assert.throws(() => plots.histograms(r), /keeps only min\/max.*act_method 'histogram'/);
    assert.throws(() => plots.channelScales(r, 'nope'), /no quantized weight for layer "nope"/);
    const dyn = await session(MODELS.cls).w8a8Dynamic().run();
    assert.throws(() => plots.histograms(dyn), /dynamic quantization calibrates nothing/);
    // drawing works outside a kernel too (a line per figure)
    const { lines } = captureLog(() => plots.scales(r));
    assert.equal(lines.length, 2);
  });
});
