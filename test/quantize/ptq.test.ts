/**
 * PTQ accuracy recovery: AdaRound beats round-to-nearest on every layer it touches (PP-OCRv4 rec),
 * bias correction removes the mean output shift, cross-layer equalization keeps the function and
 * equalizes ranges, ADMM lowers weight MSE, EasyQuant moves the scales off min/max and raises the
 * output cosine (checked against a float64 re-computation), the sensitivity
 * ranking is the same on two runs and drives amp_num / metric-bound fallback.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as arrow from 'apache-arrow';
import * as ort from 'onnxruntime-node';
import {
  adaRound, bundledModelPath, clePairs, crossLayerEqualize, initBackend, layerForward, loadModel, prepareFloat, quantizePtq,
  sampleLayerInputs, selectLayers, writeTable,
} from '../../sdk';
import * as tf from '@tensorflow/tfjs';
import { easyQuant } from '../../sdk/algorithms/easy-quant';
import { weightQParams } from '../../sdk/observers';
import { ACTIVATION_SPEC, qparamsFromRange } from '../../sdk/observers/qparams';
import { CNN, cnnBatch, cnnCalib, mnist, ortAccuracy } from '../cnn-fixtures';
import { DATA, recBatches } from '../ocr-fixtures';
import { seededRandom, tempDir } from '../helpers';

async function logits(model: Uint8Array | string, feeds: { x: ort.Tensor }): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(model as string);
  const out = (await s.run(feeds))[s.outputNames[0]].data as Float32Array;
  await s.release();
  return out;
}

describe('PTQ recovery', () => {
  before(() => initBackend());

  it('AdaRound lowers the output MSE below round-to-nearest on every PP-OCRv4 rec layer it touches', async () => {
    const float = prepareFloat(loadModel(bundledModelPath('rec')));
    const layers = selectLayers(float).layers.filter((l) => l.weight).slice(0, 6);
    const samples = await sampleLayerInputs(float, layers, recBatches(path.join(DATA, 'rec', 'calib')).slice(0, 1));
    for (const l of layers) {
      const w = float.graph.constantValue(l.weight!)!;
      const q = weightQParams(w.data as Float32Array, w.dims, { channelAxis: l.weightAxis });
      const bias = l.bias ? (float.graph.constantValue(l.bias)!.data as Float32Array) : undefined;
      const r = await adaRound(layerForward(float.graph, l), { data: w.data as Float32Array, dims: w.dims, axis: l.weightAxis! }, q, samples.get(l.name)!, bias, { numIteration: 200 });
      assert.equal(r.kept, 'ada');
      console.log(`      ${l.name} ${w.dims.join('×')}: output MSE nearest ${r.nearestMse.toExponential(2)} → AdaRound ${r.adaMse.toExponential(2)} (${r.flipped} of ${w.data.length} weights rounded the other way)`);
      assert.ok(r.adaMse < r.nearestMse, `${l.name}: ${r.adaMse} ≥ ${r.nearestMse}`);
      assert.ok(r.values.every((v) => v >= -128 && v <= 127));
    }
  });

  it('the engine writes the learned rounding into the QDQ model, and bias correction removes the mean logit shift', async () => {
    const calib = cnnCalib();
    const held = cnnBatch(mnist().test, 0, 512);
    const ref = await logits(CNN, held);
    const meanShift = async (bytes: Uint8Array) => {
      const q = await logits(bytes, held);
      const shift = new Float64Array(10);
      for (let i = 0; i < q.length; i++) shift[i % 10] += (q[i] - ref[i]) / (q.length / 10);
      return Math.max(...Array.from(shift, Math.abs));
    };
    const weight = { perChannel: false } as const;
    const plain = await quantizePtq(loadModel(CNN), calib, { weight });
    const ada = await quantizePtq(loadModel(CNN), calib, { weight, rounding: 'ada', ada: { numIteration: 200 } });
    assert.equal(ada.rounding.length, 3);
    assert.ok(ada.rounding.every((r) => r.adaMse < r.nearestMse), JSON.stringify(ada.rounding));
    // the int8 weights in the QDQ model are AdaRound's choice, which differs from nearest
    const fc = ada.layers.find((l) => l.name === 'fc')!;
    const fcPlain = plain.layers.find((l) => l.name === 'fc')!;
    const stored = ada.qdq.graph.nodes.find((n) => n.op_type === 'DequantizeLinear' && n.input[0].startsWith('fc.weight'))!;
    assert.deepEqual(Array.from(ada.qdq.graph.constantValue(stored.input[0])!.data as Int8Array), Array.from(fc.weight!.int8));
    assert.ok(fc.weight!.int8.some((v, i) => v !== fcPlain.weight!.int8[i]));
    const corrected = await quantizePtq(loadModel(CNN), calib, { weight, biasCorrection: true, ada: { samples: 16, crop: 28 } });
    const [before, after] = [await meanShift(plain.qdq.toBytes()), await meanShift(corrected.qdq.toBytes())];
    console.log(`      per-tensor weights: max |mean logit shift| ${before.toFixed(4)} → ${after.toFixed(4)} with bias correction; accuracy ${(100 * await ortAccuracy(plain.qdq.toBytes(), mnist().test)).toFixed(2)}% → ${(100 * await ortAccuracy(corrected.qdq.toBytes(), mnist().test)).toFixed(2)}%`);
    assert.ok(after < before, `${after} ≥ ${before}`);
    assert.equal(corrected.biasCorrection.length, 3);
  });

  it('cross-layer equalization keeps the function and equalizes per-channel ranges', async () => {
    const float = prepareFloat(loadModel(CNN));
    const held = cnnBatch(mnist().test, 0, 128);
    const before = await logits(float.toBytes(), held);
    const pairs = crossLayerEqualize(float, 10);
    assert.deepEqual(pairs, [{ first: 'conv1', second: 'conv2', via: ['relu1', 'pool1'] }]);
    const after = await logits(float.toBytes(), held);
    const scale = Math.max(...Array.from(before, Math.abs));
    assert.ok(before.every((v, i) => Math.abs(v - after[i]) <= 1e-4 * scale));
    // channel i's range in conv1's output rows equals its range in conv2's input columns
    const w1 = float.graph.constantValue('conv1.weight')!;
    const w2 = float.graph.constantValue('conv2.weight')!;
    const r1 = Array.from({ length: 16 }, (_, c) => Math.max(...Array.from((w1.data as Float32Array).subarray(c * 9, (c + 1) * 9), Math.abs)));
    const r2 = Array.from({ length: 16 }, (_, c) => { let m = 0; for (let o = 0; o < 32; o++) for (let k = 0; k < 9; k++) m = Math.max(m, Math.abs((w2.data as Float32Array)[(o * 16 + c) * 9 + k])); return m; });
    r1.forEach((v, c) => assert.ok(Math.abs(v - r2[c]) <= 1e-3 * v, `channel ${c}: ${v} vs ${r2[c]}`));
    // det: Conv → Relu → Conv pairs found and the output kept
    const det = prepareFloat(loadModel(bundledModelPath('det')));
    assert.ok(clePairs(det.graph).length > 0);
  });

  it('ADMM lowers the layer output error below round-to-nearest on every layer; EasyQuant improves the output cosine of the layers it retunes', async () => {
    const opts = { weight: { perChannel: false } } as const;
    const plain = await quantizePtq(loadModel(CNN), cnnCalib(), opts);
    const admm = await quantizePtq(loadModel(CNN), cnnCalib(), { ...opts, admm: { iterations: 50 } });
    assert.equal(admm.admm.length, 3);
    for (const a of admm.admm) assert.ok(a.admmError < a.nearestError && a.flipped > 0, JSON.stringify(a));
    const r = await quantizePtq(loadModel(CNN), cnnCalib(), { ...opts, easyQuant: { rounds: 3 } });
    assert.equal(r.easyQuant.length, 3);
    for (const e of r.easyQuant) assert.ok(e.cosineAfter >= e.cosineBefore, JSON.stringify(e));
    const improved = r.easyQuant.filter((e) => e.cosineAfter > e.cosineBefore);
    console.log(`      EasyQuant: ${r.easyQuant.map((e) => `${e.layer} ${(1 - e.cosineBefore).toExponential(2)} → ${(1 - e.cosineAfter).toExponential(2)}`).join(', ')} (1 − cosine)`);
    assert.deepEqual(improved.map((e) => e.layer), ['conv1', 'conv2', 'fc'], 'the search improved every layer here');
    // an improved layer's searched scales are what the QDQ model holds, not the min/max ones
    for (const e of improved) {
      const [tuned, base] = [r.layers.find((l) => l.name === e.layer)!, plain.layers.find((l) => l.name === e.layer)!];
      const moved = tuned.input!.scale !== base.input!.scale || Array.from(tuned.weight!.scale).some((v, i) => v !== base.weight!.scale[i]);
      assert.ok(moved, `${e.layer}: input scale ${tuned.input!.scale} and weight scales equal the min/max ones`);
    }
    const acc = await ortAccuracy(r.qdq.toBytes(), mnist().test);
    assert.ok(acc > 0.96, `accuracy ${acc}`);
  });

  it('EasyQuant moves the scales off min/max and raises the output cosine, checked by an independent computation', async () => {
    // A MatMul layer with heavy-tailed (Laplace) inputs: min/max activation scales waste levels on
    // the tail, so a smaller activation scale (and other weight scales) give a better output.
    const rnd = seededRandom(7);
    const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
    const [R, K, N] = [256, 32, 8];
    const x = Float32Array.from({ length: R * K }, () => { const u = rnd() - 0.5; return -Math.sign(u) * Math.log(1 - 2 * Math.abs(u) + 1e-12); });
    const w = Float32Array.from({ length: K * N }, () => gauss());
    let [lo, hi] = [Infinity, -Infinity];
    for (const v of x) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const aq = qparamsFromRange([lo], [hi], { ...ACTIVATION_SPEC, numBits: 6 });
    const wq = weightQParams(w, [K, N], { channelAxis: 1 });
    const r = easyQuant((a, b) => tf.matMul(a, b), { data: w, dims: [K, N], axis: 1 }, wq, aq, { data: x, dims: [R, K] }, undefined, 3);
    // reference: float64 loops, round half to even, ONNX QuantizeLinear saturation
    const rne = (v: number) => { const f = Math.floor(v); const d = v - f; return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1; };
    const qdq = (v: number, s: number, z: number, qmin: number, qmax: number) => (Math.min(qmax, Math.max(qmin, rne(v / s) + z)) - z) * s;
    const meanCosine = (sa: number, sw: ArrayLike<number>): number => {
      const xq = Array.from(x, (v) => qdq(v, sa, aq.zeroPoint[0], aq.qmin, aq.qmax));
      const wd = Array.from(w, (v, i) => qdq(v, sw[i % N], 0, wq.qmin, wq.qmax));
      let total = 0;
      for (let n = 0; n < N; n++) {
        let [dot, nq, nf] = [0, 0, 0];
        for (let i = 0; i < R; i++) {
          let [yq, yf] = [0, 0];
          for (let k = 0; k < K; k++) { yq += xq[i * K + k] * wd[k * N + n]; yf += x[i * K + k] * w[k * N + n]; }
          dot += yq * yf; nq += yq * yq; nf += yf * yf;
        }
        total += dot / Math.sqrt(nq * nf);
      }
      return total / N;
    };
    const before = meanCosine(aq.scale[0], wq.scale);
    const after = meanCosine(r.activationScale, r.weightScale);
    console.log(`      1 − cosine: min/max scales ${(1 - before).toExponential(3)} → EasyQuant ${(1 - after).toExponential(3)}; activation scale × ${(r.activationScale / aq.scale[0]).toFixed(3)}`);
    // the reported cosines are the reference's
    assert.ok(Math.abs(r.cosineBefore - before) < 2e-6, `${r.cosineBefore} vs ${before}`);
    assert.ok(Math.abs(r.cosineAfter - after) < 2e-6, `${r.cosineAfter} vs ${after}`);
    // the search changed the scales ...
    assert.ok(r.activationScale < 0.99 * aq.scale[0], `activation scale ${r.activationScale} vs min/max ${aq.scale[0]}`);
    assert.ok(Array.from(r.weightScale).some((v, i) => Math.abs(v - wq.scale[i]) > 1e-3 * wq.scale[i]), 'some weight scale moved');
    // ... to candidates of its grid (0.5 … 1.2 × min/max) ...
    const onGrid = (v: number, base: number) => Array.from({ length: 15 }, (_, i) => 0.5 + 0.05 * i).some((f) => Math.abs(v - base * f) <= 1e-6 * base);
    assert.ok(onGrid(r.activationScale, aq.scale[0]));
    assert.ok(Array.from(r.weightScale).every((v, i) => onGrid(v, wq.scale[i])));
    // ... and the independent cosine improved by a clear margin (≥ 10% of the remaining error)
    assert.ok(1 - after < 0.9 * (1 - before), `1 − cosine ${1 - after} vs ${1 - before}`);
  });

  it('sensitivity: "only this layer" / "all but this layer" in Arrow, the same ranking on two runs, and fallback', async () => {
    const dir = tempDir();
    const { test } = mnist();
    const evaluate = (m: Uint8Array) => ortAccuracy(m, test, 1000);
    const run = () => quantizePtq(loadModel(CNN), cnnCalib(), { weight: { perChannel: false }, sensitivity: true, evaluate, sensitivityData: [cnnBatch(test, 1000, 256)] });
    const [a, b] = [await run(), await run()];
    assert.deepEqual(a.sensitivity!.ranking(), b.sensitivity!.ranking());
    const file = path.join(dir, 'sensitivity.arrow');
    writeTable(file, a.sensitivity!.table());
    const t = arrow.tableFromIPC(fs.readFileSync(file));
    assert.deepEqual(t.schema.fields.map((f) => f.name), ['layer', 'op_type', 'only_sqnr_db', 'only_cosine', 'all_but_sqnr_db', 'all_but_cosine', 'only_metric', 'all_but_metric']);
    assert.equal(t.numRows, 3);
    for (const row of a.sensitivity!.rows) {
      // one quantized layer costs less than all of them
      assert.ok(row.onlySqnrDb > a.sensitivity!.all.sqnrDb, JSON.stringify(row));
      console.log(`      ${row.layer}: only ${row.onlySqnrDb.toFixed(1)} dB / ${(100 * row.onlyMetric).toFixed(1)}%, all but ${row.allButSqnrDb.toFixed(1)} dB / ${(100 * row.allButMetric).toFixed(1)}%`);
    }
    const amp = await quantizePtq(loadModel(CNN), cnnCalib(), { weight: { perChannel: false }, ampNum: 1, evaluate });
    assert.deepEqual(amp.fallback, [a.sensitivity!.ranking()[0]]);
    assert.ok(!amp.qdq.graph.nodes.some((n) => n.op_type === 'DequantizeLinear' && n.input[0].startsWith(`${amp.fallback[0]}.weight`)));
    const bound = await quantizePtq(loadModel(CNN), cnnCalib(), { weight: { perChannel: false }, maxMetricDrop: 0, evaluate });
    assert.ok(await evaluate(bound.qdq.toBytes()) >= bound.sensitivity!.floatMetric, 'fallback until the metric is back to fp32');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('dmq (AMCT DMQ balancer) as an engine option: the transformer keeps its function in float and gains output SQNR in int8', async () => {
    const { TRANSFORMER, transformerCalib, mnist: digits, mnistBatch } = await import('../transformer-fixtures');
    const held = mnistBatch(digits().test, 0, 256);
    const ref = await logits(TRANSFORMER, held);
    const sqnr = async (m: Uint8Array) => {
      const q = await logits(m, held);
      let s = 0;
      let n = 0;
      ref.forEach((v, i) => { s += v * v; n += (v - q[i]) ** 2; });
      return 10 * Math.log10(s / n);
    };
    const plain = await quantizePtq(loadModel(TRANSFORMER), transformerCalib());
    const dmq = await quantizePtq(loadModel(TRANSFORMER), transformerCalib(), { dmq: 0.5 });
    const floatOut = await logits(dmq.float.toBytes(), held);
    assert.ok(ref.every((v, i) => Math.abs(v - floatOut[i]) <= 1e-3 * Math.max(1, Math.abs(v))), 'balancing keeps the float function');
    assert.ok(dmq.balanced.length >= 2 && dmq.balanced.every((g) => g.alpha === 0.5 && g.beta === 0.5));
    const [a, b] = [await sqnr(plain.qdq.toBytes()), await sqnr(dmq.qdq.toBytes())];
    console.log(`      transformer logits SQNR: ${a.toFixed(1)} dB → ${b.toFixed(1)} dB with dmq 0.5`);
    assert.ok(b > a + 3, `${b} vs ${a}`);
    await assert.rejects(quantizePtq(loadModel(TRANSFORMER), transformerCalib(), { dmq: 0.9 }), /dmq \(migration strength\): got 0.9; expected a number in \[0.2, 0.8\]/);
  });
});
