/**
 * msModelSlim's QuantConfig + Calibrator: documented defaults and ranges, Data-Free quantization
 * of PP-OCR cls with no data (label agreement ≥ 95%), Label-Free with keep_acc (plain PTQ misses
 * the SQNR bound, each option's gain is measured, together they pass it) and amp_num.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { Calibrator, KeepAcc, QuantConfig, QuantbookError, bundledModelPath, initBackend, loadModel, ppocr, virtualInputs } from '../../sdk';
import { clsSet } from '../../sdk/eval/ocr-data';
import { CNN, cnnBatch, cnnCalib, mnist, ortAccuracy } from '../cnn-fixtures';
import { tempDir } from '../helpers';

async function clsLabels(model: string | Uint8Array, x: ort.Tensor): Promise<string[]> {
  const s = await ort.InferenceSession.create(model as string);
  const out = Object.values(await s.run({ x }))[0];
  await s.release();
  return ppocr.clsLabels(out);
}

describe('msModelSlim QuantConfig and Calibrator', () => {
  before(() => initBackend());

  it('has the documented defaults and rejects every out-of-range value', () => {
    assert.deepEqual({ ...new QuantConfig() }, {
      w_bit: 8, a_bit: 8, w_signed: true, a_signed: false, w_sym: true, a_sym: false, input_shape: null, act_quant: true, act_method: 0, quant_mode: 0,
      disable_names: [], amp_num: 0, keep_acc: { admm: [false, 1000], easy_quant: [false, 1000], round_opt: false }, sigma: 25, device: 'cpu',
    });
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ w_bit: 4 }, /w_bit: got 4; expected 8/], [{ a_bit: 16 }, /a_bit/], [{ act_quant: false }, /act_quant/], [{ act_method: 3 }, /act_method: got 3/],
      [{ quant_mode: 2 }, /quant_mode: got 2; expected 0 \(Data-Free\) or 1 \(Label-Free\)/], [{ act_method: 1 }, /act_method: got 1; expected 0 with quant_mode 0/],
      [{ amp_num: -1 }, /amp_num/], [{ sigma: 2.5 }, /sigma: got 2.5/], [{ device: 'gpu' }, /device: got "gpu"; expected "cpu" or "npu"/],
      [{ w_sym: 1 }, /w_sym: got 1; expected true or false/], [{ input_shape: [1, 0, 3] }, /input_shape/], [{ disable_names: 'fc' }, /disable_names/],
      [{ keep_acc: { admm: [true] } }, /keep_acc.admm: got \[true\]; expected \[bool, iterations ≥ 1\]/], [{ keep_acc: { ada: true } }, /keep_acc: unknown key "ada"/],
      [{ keep_acc: { round_opt: 1 } }, /keep_acc.round_opt/], [{ batch_size: 4 }, /QuantConfig: unknown key "batch_size"/],
    ];
    for (const [o, re] of bad) assert.throws(() => new QuantConfig(o as never), (e: QuantbookError) => e.code === 'INVALID_ARGUMENT' && re.test(e.message), JSON.stringify(o));
    assert.throws(() => new QuantConfig({ device: 'npu' }), (e: QuantbookError) => e.code === 'UNSUPPORTED');
    assert.deepEqual(new QuantConfig({ input_shape: [1, 3, 48, 192] }).input_shape, [[1, 3, 48, 192]]);
    assert.throws(() => new Calibrator(CNN, new QuantConfig({ quant_mode: 1, act_method: 1 })), /quant_mode 1 \(Label-Free\) needs calibration data/);
    assert.throws(() => new Calibrator(CNN, new QuantConfig(), cnnCalib()), /quant_mode 0 \(Data-Free\) uses virtual inputs/);
    assert.throws(() => virtualInputs(loadModel(bundledModelPath('cls')), null), /input "x" has dynamic dimensions .*needs input_shape/);
  });

  it('Data-Free: quantizes PP-OCR cls with no data at all and keeps ≥ 95% label agreement with fp32', async () => {
    const { x } = clsSet();
    // reduceRange 'auto': 7-bit weights where ORT's x86 int8 pair sums would saturate (no VNNI)
    const calibrator = new Calibrator(bundledModelPath('cls'), new QuantConfig({ input_shape: [8, 3, 48, 192] }), undefined, { reduceRange: 'auto' });
    const result = await calibrator.run();
    const [fp32, int8] = [await clsLabels(bundledModelPath('cls'), x), await clsLabels(result.qdq.toBytes(), x)];
    const agreement = int8.filter((l, i) => l === fp32[i]).length / fp32.length;
    console.log(`      Data-Free (smooth virtual inputs, sigma 25): label agreement ${(100 * agreement).toFixed(1)}% on ${fp32.length} lines`);
    assert.ok(agreement >= 0.95, `agreement ${agreement}`);
    assert.equal(calibrator.ptqOptions().observer, 'sigma');
    assert.equal(new Calibrator(CNN, new QuantConfig({ sigma: 0 })).ptqOptions().observer, 'minmax');
  });

  it('Label-Free keep_acc: plain PTQ misses a 45 dB logit SQNR bound, each keep_acc option raises it and together they pass', async () => {
    const { test } = mnist();
    const held = cnnBatch(test, 0, 1000);
    const logits = async (m: string | Uint8Array) => {
      const s = await ort.InferenceSession.create(m as string);
      const out = (await s.run(held))[s.outputNames[0]].data as Float32Array;
      await s.release();
      return out;
    };
    const ref = await logits(CNN);
    const sqnr = async (m: Uint8Array) => {
      const q = await logits(m);
      let [sig, err] = [0, 0];
      ref.forEach((v, i) => { sig += v * v; err += (v - q[i]) ** 2; });
      return 10 * Math.log10(sig / err);
    };
    const run = async (keep_acc: KeepAcc) => {
      const c = new Calibrator(CNN, new QuantConfig({ quant_mode: 1, act_method: 2, keep_acc }), cnnCalib(), { ada: { numIteration: 100 } });
      const r = await c.run();
      return { r, db: await sqnr(r.qdq.toBytes()) };
    };
    const BOUND = 45;
    const plain = await run({});
    const admm = await run({ admm: [true, 20] });
    const easy = await run({ easy_quant: [true, 2] });
    const noRound = await run({ admm: [true, 20], easy_quant: [true, 2] });
    const all = await run({ admm: [true, 20], easy_quant: [true, 2], round_opt: true });
    console.log(`      logit SQNR vs fp32: plain ${plain.db.toFixed(2)} dB, admm ${admm.db.toFixed(2)}, easy_quant ${easy.db.toFixed(2)}, admm + easy_quant ${noRound.db.toFixed(2)}, + round_opt ${all.db.toFixed(2)} (bound ${BOUND} dB)`);
    assert.deepEqual([plain.r.admm.length, plain.r.easyQuant.length, plain.r.rounding.length], [0, 0, 0]);
    assert.ok(plain.db < BOUND, `plain PTQ already passes: ${plain.db}`);
    assert.ok(all.db >= BOUND, `keep_acc does not recover: ${all.db}`);
    // admm: lower layer output error than round-to-nearest on every layer, and those integers (not nearest's) are in the model
    assert.equal(admm.r.admm.length, 3);
    for (const a of admm.r.admm) assert.ok(a.admmError < a.nearestError && a.flipped > 0, JSON.stringify(a));
    for (const l of admm.r.layers) {
      const base = plain.r.layers.find((p) => p.name === l.name)!;
      assert.ok(Array.from(l.weight!.int8).some((v, i) => v !== base.weight!.int8[i]), `${l.name}: admm left the round-to-nearest integers`);
    }
    assert.ok(admm.db > plain.db, `admm ${admm.db} vs plain ${plain.db}`);
    // easy_quant: output cosine up on every layer, a clear SQNR gain
    assert.equal(easy.r.easyQuant.length, 3);
    for (const e of easy.r.easyQuant) assert.ok(e.cosineAfter > e.cosineBefore, JSON.stringify(e));
    assert.ok(easy.db > plain.db + 1, `easy_quant ${easy.db} vs plain ${plain.db}`);
    // round_opt (AdaRound) on top of both: per layer the lower output error of ADA's and ADMM's integers is kept
    // (never above nearest), ADA wins somewhere, and the logits gain further
    assert.equal(noRound.r.rounding.length, 0);
    assert.equal(all.r.rounding.length, 3);
    console.log(`      round_opt vs admm (output error on the samples): ${all.r.rounding.map((row) => `${row.layer} nearest ${row.nearestMse.toExponential(2)}, ada ${row.adaMse.toExponential(2)}, admm ${all.r.admm.find((a) => a.layer === row.layer)!.admmError.toExponential(2)}`).join('; ')}`);
    const admmOf = (layer: string) => all.r.admm.find((a) => a.layer === layer)!.admmError;
    for (const row of all.r.rounding) assert.ok(Math.min(row.kept === 'ada' ? row.adaMse : Infinity, admmOf(row.layer)) <= row.nearestMse, JSON.stringify(row));
    assert.ok(all.r.rounding.some((row) => row.kept === 'ada' && row.adaMse < admmOf(row.layer)), 'AdaRound beat ADMM on no layer');
    // where ADMM won, the model holds ADMM's integers (those of the run without round_opt); where ADA won, others
    const ints = (r: typeof all.r, layer: string) => Array.from(r.layers.find((l) => l.name === layer)!.weight!.int8);
    for (const row of all.r.rounding) {
      const adaWon = row.kept === 'ada' && row.adaMse < admmOf(row.layer);
      assert.equal(JSON.stringify(ints(all.r, row.layer)) === JSON.stringify(ints(noRound.r, row.layer)), !adaWon, row.layer);
    }
    assert.ok(all.db > noRound.db + 0.2, `with round_opt ${all.db} vs without ${noRound.db}`);
  });

  it('Label-Free with keep_acc and amp_num, exported as QDQ and fake-quant ONNX', async () => {
    const dir = tempDir();
    const { test } = mnist();
    const config = new QuantConfig({ quant_mode: 1, act_method: 2, amp_num: 1, keep_acc: { admm: [true, 20], easy_quant: [true, 2], round_opt: true } });
    const calibrator = new Calibrator(CNN, config, cnnCalib(), { ada: { numIteration: 100 }, evaluate: (m) => ortAccuracy(m, test, 500) });
    const r = await calibrator.run();
    assert.equal(calibrator.ptqOptions().observer, 'histogram');
    assert.deepEqual([r.admm.length, r.easyQuant.length, r.rounding.length], [3, 3, 3]);
    // amp_num 1: the most sensitive layer stays float
    assert.deepEqual(r.fallback, [r.sensitivity!.ranking()[0]]);
    assert.ok(!r.qdq.graph.nodes.some((n) => n.op_type === 'DequantizeLinear' && n.input[0].startsWith(`${r.fallback[0]}.weight`)));
    const files = calibrator.exportQuantOnnx(dir, 'cnn');
    assert.ok(fs.existsSync(files.qdq) && fs.existsSync(files.fakeQuant) && path.basename(files.qdq) === 'cnn_quant.onnx');
    const [acc, fq] = [await ortAccuracy(files.qdq, test), await ortAccuracy(files.fakeQuant, test)];
    console.log(`      Label-Free histogram + admm + easy_quant + round_opt, amp_num 1 (${r.fallback[0]} in float): accuracy ${(100 * acc).toFixed(2)}%`);
    assert.ok(acc > 0.965 && Math.abs(acc - fq) <= 0.001, `${acc} / ${fq}`);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
