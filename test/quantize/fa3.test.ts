/**
 * fa3: static per-head int8 Q, K, V in attention, with W8A8 dynamic. Found in PP-OCRv4 rec's
 * attention blocks (Flatten/Softmax/Reshape as paddle2onnx writes them) and in the project's
 * transformer; the models run on ORT with their accuracy; per-head statistics land in Arrow.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { QuantbookError, WARNING_TYPE, loadModel, normalizeSessionConfig, prepareFloat, readStats, session } from '../../sdk';
import { findAttention } from '../../sdk/quantize/fa3';
import { histogramQdqError } from '../../sdk/observers';
import { characterAccuracy } from '../../sdk/eval/metrics';
import { ctcDecode, loadRecKeys } from '../../sdk/eval/ppocr';
import { DATA_DIR, folderLabels, recBatches } from '../../sdk/eval/ocr-data';
import { MODELS, OCR_KEYS, tempDir } from '../helpers';
import { TRANSFORMER, accuracy, logits, mnist, mnistBatch, transformerCalib } from '../transformer-fixtures';

describe('fa3: per-head int8 Q, K, V (with W8A8 dynamic)', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("finds PP-OCRv4 rec's two attention blocks and the transformer's one, and nothing else", () => {
    const rec = findAttention(prepareFloat(loadModel(MODELS.rec)));
    assert.deepEqual(rec.map((s) => [s.scores, s.softmax, s.context]), [['p2o.MatMul.2', 'p2o.Softmax.0', 'p2o.MatMul.4'], ['p2o.MatMul.14', 'p2o.Softmax.1', 'p2o.MatMul.16']]);
    const t = findAttention(loadModel(TRANSFORMER));
    assert.deepEqual(t, [{ softmax: 'att', scores: 'scores', context: 'ctx_heads', q: 'wq_t', k: 'wk_t', v: 'wv_t' }]);
  });

  it('PP-OCRv4 rec: runs on ORT with the text kept; one scale per head; per-head rows in the stats file', async () => {
    const calib = recBatches(path.join(DATA_DIR, 'rec', 'calib')).slice(0, 2);
    const held = recBatches(path.join(DATA_DIR, 'rec', 'held')).slice(0, 4);
    const labels = folderLabels(path.join(DATA_DIR, 'rec', 'held')).slice(0, 32);
    const r = await session(MODELS.rec, { calibData: calib }).w8a8Dynamic().fa3().run();
    const keys = loadRecKeys(OCR_KEYS);
    const texts = async (m: string | Uint8Array) => {
      const s = await ort.InferenceSession.create(m as string);
      const out: string[] = [];
      for (const b of held) out.push(...ctcDecode(Object.values(await s.run(b))[0], keys));
      await s.release();
      return out;
    };
    const fp32 = await texts(MODELS.rec);
    const int8 = await texts(r.qdq.toBytes());
    assert.ok(characterAccuracy(int8, labels) >= characterAccuracy(fp32, labels) - 0.01, `${characterAccuracy(int8, labels)} vs ${characterAccuracy(fp32, labels)}`);
    // Q, K, V of both blocks: QuantizeLinear with axis 1 and one scale per head
    const g = r.qdq.graph;
    for (const site of r.attention) {
      for (const t of [site.q, site.k, site.v]) {
        const q = g.consumers(t).find((n) => n.op_type === 'QuantizeLinear');
        assert.ok(q, `${t} has no QuantizeLinear`);
        assert.equal(q!.attribute.find((a) => a.name === 'axis')?.i, 1);
        assert.equal(g.constantValue(q!.input[1])!.dims[0], 8, 'PP-OCRv4 rec has 8 heads');
      }
    }
    // the attention MatMuls are not also dynamically quantized
    assert.deepEqual(r.selection.skipped.filter((s) => s.reason.startsWith('fa3')).map((s) => s.name).sort(), ['p2o.MatMul.14', 'p2o.MatMul.16', 'p2o.MatMul.2', 'p2o.MatMul.4']);
    const { files } = r.save(dir, ['stats']);
    const { rows } = readStats(files.find((f) => f.endsWith('.arrow'))!);
    const heads = rows.filter((row) => row.tensor === 'p2o.Mul.181');
    assert.deepEqual([...new Set(heads.map((h) => h.channel))], [0, 1, 2, 3, 4, 5, 6, 7]);
    for (const h of heads) assert.ok(Math.abs(h.scale - Math.max(Math.abs(h.min), Math.abs(h.max)) / 127) <= 1e-6 * h.scale, 'symmetric int8: s = max|x_h| / 127');
  });

  it('the transformer: static per-head Q/K/V cost at most 0.25 points over W8A8 dynamic alone (within 1 point of fp32)', async () => {
    const { test } = mnist();
    const all = mnistBatch(test, 0, test.count);
    const r = await session(TRANSFORMER, { calibData: transformerCalib() }).w8a8Dynamic().fa3().run();
    const fp32 = accuracy(await logits(TRANSFORMER, all), test.labels);
    const int8 = accuracy(await logits(r.qdq.toBytes(), all), test.labels);
    const dynamicOnly = accuracy(await logits((await session(TRANSFORMER).w8a8Dynamic().run()).qdq.toBytes(), all), test.labels);
    assert.ok(dynamicOnly - int8 <= 0.0025 && fp32 - int8 <= 0.01, `fp32 ${fp32}, W8A8 dynamic ${dynamicOnly}, + fa3 ${int8}`);
    // the fake-quant model simulates every head with its own scale (float ops only, no QDQ left)
    assert.ok(!r.fakeQuant.graph.nodes.some((n) => n.op_type === 'QuantizeLinear' && (r.fakeQuant.graph.constantValue(n.input[1])?.data.length ?? 1) > 1));
    const some = mnistBatch(test, 0, 256);
    const [literal, simulated] = [await logits(r.qdq.toBytes(), some, 'disabled'), await logits(r.fakeQuant.toBytes(), some, 'disabled')];
    let max = 0;
    literal.forEach((v, i) => { max = Math.max(max, Math.abs(v - simulated[i])); });
    assert.ok(max <= 1e-4, `per-head fake-quant vs QDQ: max abs difference ${max}`);
  });

  it("w8a8_dynamic's act_method sets fa3's Q/K/V scales: histogram clips long-tailed heads below min-max, 'mix' takes one of the two per head", async () => {
    const calib = transformerCalib();
    const run = (actMethod: 'minmax' | 'histogram' | 'mix') => session(TRANSFORMER, { calibData: calib }).w8a8Dynamic({ actMethod }).fa3().run();
    const headScales = (r: Awaited<ReturnType<typeof run>>) => {
      const g = r.qdq.graph;
      return r.attention.flatMap((s) => [s.q, s.k, s.v]).map((t) => Array.from(g.constantValue(g.consumers(t).find((n) => n.op_type === 'QuantizeLinear')!.input[1])!.data as Float32Array));
    };
    const [mm, hist, mix] = [await run('minmax'), await run('histogram'), await run('mix')];
    const [a, b, c] = [headScales(mm), headScales(hist), headScales(mix)];
    // min-max: s_h = max|x_h| / 127 of what calibration saw
    const heads = [...mm.calibration!.observers.values()].flatMap((o) => ('channels' in o ? o.channels : [o]).map((h) => Math.max(-h.observedRange[0], h.observedRange[1]) / 127));
    assert.deepEqual(a.flat().map((s) => s.toPrecision(5)), heads.map((s) => Math.fround(s).toPrecision(5)));
    const ratios = a.flat().map((s, i) => s / b.flat()[i]);
    assert.ok(ratios.every((r) => r >= 1 - 1e-6), `histogram never widens a head: ${ratios}`);
    assert.ok(Math.max(...ratios) >= 1.02, `histogram clips the longest tail by ≥ 2%: max ratio ${Math.max(...ratios)}`);
    assert.ok(c.flat().every((s, i) => s === a.flat()[i] || s === b.flat()[i]), 'mix: each head takes the min-max or the histogram scale');
    // ... the one that quantizes that head's histogram with less error
    const histograms = [...mix.calibration!.observers.values()].flatMap((o) => ('channels' in o ? o.channels : [o]).map((h) => h.histogram!));
    const error = (i: number, s: number) => histogramQdqError(histograms[i], { scale: Float32Array.of(s), zeroPoint: Int32Array.of(0), qmin: -128, qmax: 127, numBits: 8, signed: true });
    c.flat().forEach((s, i) => assert.ok(error(i, s) <= Math.min(error(i, a.flat()[i]), error(i, b.flat()[i])), `mix head ${i}`));
    console.log(`      fa3 scales, min-max / histogram per head: ${ratios.map((r) => r.toFixed(3)).join(' ')}`);
  });

  it('w8a8_dynamic act_method without fa3 changes nothing, and says so with a QuantbookWarning', async () => {
    const seen: Error[] = [];
    const listen = (w: Error) => { if (w.name === WARNING_TYPE) seen.push(w); };
    process.on('warning', listen);
    try {
      const plain = await session(TRANSFORMER).w8a8Dynamic().run();
      const hist = await session(TRANSFORMER).w8a8Dynamic({ actMethod: 'histogram' }).run();
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
      assert.deepEqual(hist.qdq.toBytes(), plain.qdq.toBytes(), 'same model either way');
      assert.equal(seen.length, 1, 'one warning, for the histogram run only');
      assert.equal((seen[0] as Error & { code?: string }).code, 'QUANTBOOK_ACT_METHOD_UNUSED');
      assert.match(seen[0].message, /w8a8_dynamic.cfg.act_method 'histogram' has no effect without fa3/);
      await session(TRANSFORMER, { calibData: transformerCalib() }).w8a8Dynamic({ actMethod: 'histogram' }).fa3().run();
      await new Promise((r) => setImmediate(r));
      assert.equal(seen.length, 1, 'with fa3 act_method applies: no warning');
    } finally {
      process.off('warning', listen);
    }
  });

  it('config rules: fa3 needs w8a8_dynamic and calibration data, and takes no parameters', () => {
    const rejects = (config: unknown, pattern: RegExp) => assert.throws(() => normalizeSessionConfig(config), (e: QuantbookError) => pattern.test(e.message), String(pattern));
    rejects({ processor_cfg_map: { fa3: {}, w8a8: {} }, calib_data: [] }, /'fa3' must be used together with 'w8a8_dynamic'/);
    rejects({ processor_cfg_map: { fa3: {}, w8a8_dynamic: {} } }, /'fa3' calibrates per-head scales of Q, K and V and needs calibration data/);
    rejects({ processor_cfg_map: { fa3: { cfg: {} }, w8a8_dynamic: {} }, calib_data: [] }, /unknown key "cfg"/);
  });
});
