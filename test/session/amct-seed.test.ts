import * as assert from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import * as tf from '@tensorflow/tfjs';
import { DataType, QuantbookError, createQuantConfig, loadModel, metrics, quantizeModel, quantizePtq, saveModel, selectLayers } from '../../sdk';
import { layerForward } from '../../sdk/algorithms/layer-io';
import { DmqConvGroup } from '../../sdk/algorithms/dmq-conv';
import { makeAttribute } from '../../sdk/onnx/graph';
import { tinyModel } from '../build';
import { runModel, tempDir } from '../helpers';

function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1; };
}

const [N, C, HW] = [2, 4, 8];
const OUTLIER = 1; // input channel with planted outliers (×40)

/** x → Conv (g 1) → yA; x → Conv (group 2) → yB; x → ConvTranspose (stride 2) → yT. */
function convModel(seed = 3): { bytes: Uint8Array; wA: Float32Array; wB: Float32Array; wT: Float32Array } {
  const r = uniform(seed);
  const wA = Float32Array.from({ length: 6 * C * 9 }, r);
  const wB = Float32Array.from({ length: 4 * 2 * 9 }, r);
  const wT = Float32Array.from({ length: C * 3 * 4 }, r);
  // the weights reading the outlier channel are small (the outlier carries no more signal than the rest)
  wA.forEach((v, i) => { if (Math.floor(i / 9) % C === OUTLIER) wA[i] = v / 40; });
  wB.forEach((v, i) => { if (Math.floor(i / 9) % 2 === OUTLIER % 2 && Math.floor(i / 36) === Math.floor(OUTLIER / 2)) wB[i] = v / 40; });
  wT.forEach((v, i) => { if (Math.floor(i / 12) === OUTLIER) wT[i] = v / 40; });
  const bytes = tinyModel({
    inputs: [{ name: 'x', shape: [N, C, HW, HW] }],
    outputs: ['yA', 'yB', 'yT'],
    nodes: [
      { op: 'Conv', name: 'convA', inputs: ['x', 'wA', 'bA'], outputs: ['yA'], attrs: [makeAttribute('pads', [1, 1, 1, 1])] },
      { op: 'Conv', name: 'convB', inputs: ['x', 'wB'], outputs: ['yB'], attrs: [makeAttribute('pads', [1, 1, 1, 1]), makeAttribute('group', 2)] },
      { op: 'ConvTranspose', name: 'convT', inputs: ['x', 'wT'], outputs: ['yT'], attrs: [makeAttribute('strides', [2, 2])] },
    ],
    initializers: [
      { name: 'wA', type: DataType.FLOAT, dims: [6, C, 3, 3], data: wA },
      { name: 'bA', type: DataType.FLOAT, dims: [6], data: Float32Array.from({ length: 6 }, r) },
      { name: 'wB', type: DataType.FLOAT, dims: [4, 2, 3, 3], data: wB },
      { name: 'wT', type: DataType.FLOAT, dims: [C, 3, 2, 2], data: wT },
    ],
  });
  return { bytes, wA, wB, wT };
}

function batch(seed: number, outlier = 40): { x: ort.Tensor } {
  const r = uniform(seed);
  const data = Float32Array.from({ length: N * C * HW * HW }, (_, i) => r() * (Math.floor(i / (HW * HW)) % C === OUTLIER ? outlier : 1));
  return { x: new ort.Tensor('float32', data, [N, C, HW, HW]) };
}

describe('AMCT seed constraints: dmq_balancer on convolutions, ada_quantize coverage, Conv3d dilation_d', function () {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('dmq_balancer on Conv, grouped Conv and ConvTranspose: s_j = max|X_j|^m / max|W_j|^(1−m) on the right weight axis, float outputs unchanged, int8 error down', async () => {
    const m = convModel();
    const modelFile = path.join(dir, 'convs.onnx');
    fs.writeFileSync(modelFile, m.bytes);
    const calib = [batch(1), batch(2)];
    const plainFile = path.join(dir, 'convs.json');
    createQuantConfig(plainFile, modelFile, calib[0], { batchNum: 2 });
    const config = JSON.parse(fs.readFileSync(plainFile, 'utf8'));
    const dmqFile = path.join(dir, 'convs-dmq.json');
    for (const n of ['convA', 'convB', 'convT']) config[n].dmq_balancer_param = 0.5;
    fs.writeFileSync(dmqFile, JSON.stringify(config));
    const held = batch(9);
    const ref = await runModel(modelFile, held);
    const run = async (file: string) => {
      const q = quantizeModel(file, modelFile);
      await q.calibrate(calib);
      const saved = saveModel(path.join(dir, path.basename(file, '.json')), q);
      const got = await runModel(saved.fakeQuantModel, held);
      const db = Object.fromEntries(['yA', 'yB', 'yT'].map((o) => [o, metrics.compareOutputs(ref[o].data as Float32Array, got[o].data as Float32Array).sqnrDb]));
      return { q, db };
    };
    const plain = await run(plainFile);
    const dmq = await run(dmqFile);
    const groups = dmq.q.balanced as DmqConvGroup[];
    assert.deepEqual(groups.map((g) => g.layers[0]).sort(), ['convA', 'convB', 'convT']);

    // the scales, re-computed here from the calibration data and each op's weight layout
    const xMax = Array.from({ length: C }, (_, j) => Math.max(...calib.map((b) => {
      const d = b.x.data as Float32Array;
      let mx = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < HW * HW; i++) mx = Math.max(mx, Math.abs(d[(n * C + j) * HW * HW + i]));
      return mx;
    })));
    const absMax = (w: Float32Array, pick: (i: number) => boolean) => w.reduce((mx, v, i) => (pick(i) ? Math.max(mx, Math.abs(v)) : mx), 0);
    const wMax: Record<string, (j: number) => number> = {
      // Conv [Cout, Cin, 3, 3]: axis 1
      convA: (j) => absMax(m.wA, (i) => Math.floor(i / 9) % C === j),
      // grouped Conv [4, 2, 3, 3], group 2: input channel j → column j mod 2 of its group's 2 output channels
      convB: (j) => absMax(m.wB, (i) => Math.floor(i / 9) % 2 === j % 2 && Math.floor(Math.floor(i / 18) / 2) === Math.floor(j / 2)),
      // ConvTranspose [Cin, Cout, 2, 2]: axis 0
      convT: (j) => absMax(m.wT, (i) => Math.floor(i / 12) === j),
    };
    for (const g of groups) {
      const want = Array.from({ length: C }, (_, j) => Math.sqrt(xMax[j]) / Math.sqrt(wMax[g.layers[0]](j)));
      g.scales.forEach((s, j) => assert.ok(Math.abs(s - want[j]) <= 1e-5 * want[j], `${g.layers[0]} channel ${j}: ${s} vs ${want[j]}`));
      assert.ok(g.alpha === 0.5 && g.beta === 0.5);
    }

    // before quantization the balanced model computes the same function
    const balanced = await runModel(dmq.q.float.toBytes(), held);
    for (const o of ['yA', 'yB', 'yT']) {
      const [a, b] = [ref[o].data as Float32Array, balanced[o].data as Float32Array];
      const top = a.reduce((mx, v) => Math.max(mx, Math.abs(v)), 0);
      const diff = a.reduce((mx, v, i) => Math.max(mx, Math.abs(v - b[i])), 0);
      assert.ok(diff <= 2e-6 * top, `${o}: float outputs moved by ${diff} (max ${top})`);
    }
    // the balanced weights are the ones quantized
    const wA = dmq.q.float.graph.constantValue(dmq.q.float.graph.nodes.find((n) => n.name === 'convA')!.input[1])!.data as Float32Array;
    assert.ok(Math.abs(wA[OUTLIER * 9] - m.wA[OUTLIER * 9] * groups.find((g) => g.layers[0] === 'convA')!.scales[OUTLIER]) < 1e-5);
    console.log(`      fake-quant SQNR (dB) plain → dmq 0.5: ${['yA', 'yB', 'yT'].map((o) => `${o} ${plain.db[o].toFixed(1)} → ${dmq.db[o].toFixed(1)}`).join(', ')}`);
    for (const o of ["yA", "yB", "yT"]) assert.ok(dmq.db[o] > plain.db[o] + 20, `${o}: ${dmq.db[o]} vs ${plain.db[o]}`);
  });

  it('Conv3d needs dilation_d = 1: create_quant_config and quantize_model name the layer and the rule before any work; dilation_h/w > 1 is fine', () => {
    const conv3d = (dilations: number[]) => {
      const file = path.join(dir, `c3d-${dilations.join('')}.onnx`);
      fs.writeFileSync(file, tinyModel({
        inputs: [{ name: 'x', shape: [1, 2, 6, 6, 6] }],
        outputs: ['y'],
        nodes: [{ op: 'Conv', name: 'c3d', inputs: ['x', 'w'], outputs: ['y'], attrs: [makeAttribute('dilations', dilations), makeAttribute('pads', [0, 1, 1, 0, 1, 1])] }],
        initializers: [{ name: 'w', type: DataType.FLOAT, dims: [3, 2, 3, 3, 3], data: Float32Array.from({ length: 162 }, uniform(5)) }],
      }));
      return file;
    };
    const ok = conv3d([1, 2, 2]);
    const bad = conv3d([2, 1, 1]);
    const okConfig = path.join(dir, 'c3d-ok.json');
    createQuantConfig(okConfig, ok, null);
    assert.ok(quantizeModel(okConfig, ok).layers.includes('c3d'));
    const rule = (e: QuantbookError) => e.code === 'UNSUPPORTED' && /layer "c3d" is a Conv3d with dilations \[2, 1, 1\]; AMCT quantizes Conv3d only with dilation_d = 1/.test(e.message);
    assert.throws(() => createQuantConfig(path.join(dir, 'c3d-bad.json'), bad, null), rule);
    assert.ok(!fs.existsSync(path.join(dir, 'c3d-bad.json')), 'nothing written');
    // the same layer config against the dilated model: refused at quantize_model, before fusion or weights
    assert.throws(() => quantizeModel(okConfig, bad), rule);
    // left out of the config it is no obstacle
    const skipped = path.join(dir, 'c3d-skip.json');
    const cfg = JSON.parse(fs.readFileSync(okConfig, 'utf8'));
    cfg.c3d.quant_enable = false;
    fs.writeFileSync(skipped, JSON.stringify(cfg));
    assert.throws(() => quantizeModel(skipped, bad), /no layer has quant_enable true/);
  });

  it('ada_quantize covers the seed\'s layers (Conv2d, grouped Conv2d, Conv3d, ConvTranspose2d): tfjs forward = ORT, AdaRound beats nearest on each; others refused by name, PTQ round_opt too', async () => {
    const ada = { num_bits: 8, wts_algo: 'ada_quantize', channel_wise: true, num_iteration: 200, reg_param: 0.01, beta_range: [20, 2], warm_start: 0.2 };
    const c3dFile = path.join(dir, 'c3d-ada.onnx');
    fs.writeFileSync(c3dFile, tinyModel({
      inputs: [{ name: 'x', shape: [1, 2, 5, 6, 6] }], outputs: ['y'],
      nodes: [{ op: 'Conv', name: 'c3d', inputs: ['x', 'w'], outputs: ['y'], attrs: [makeAttribute('pads', [1, 1, 1, 1, 1, 1]), makeAttribute('strides', [2, 2, 1])] }],
      initializers: [{ name: 'w', type: DataType.FLOAT, dims: [3, 2, 3, 3, 3], data: Float32Array.from({ length: 162 }, uniform(6)) }],
    }));
    const convFile = path.join(dir, 'convs-ada.onnx');
    fs.writeFileSync(convFile, convModel(4).bytes);
    const c3dBatch = (seed: number) => { const r = uniform(seed); return { x: new ort.Tensor('float32', Float32Array.from({ length: 360 }, r), [1, 2, 5, 6, 6]) }; };
    for (const [modelFile, data, outputs] of [[convFile, [batch(1, 1)], ['yA', 'yB', 'yT']], [c3dFile, [c3dBatch(1)], ['y']]] as const) {
      const file = modelFile.replace(/\.onnx$/, '.json');
      createQuantConfig(file, modelFile, null);
      const config = JSON.parse(fs.readFileSync(file, 'utf8'));
      for (const k of Object.keys(config)) if (config[k].weight_quant_params) config[k].weight_quant_params = ada;
      fs.writeFileSync(file, JSON.stringify(config));
      const q = quantizeModel(file, modelFile);
      // the layer computation AdaRound differentiates is ONNX's (each layer's output is a model output)
      const ref = await runModel(modelFile, data[0]);
      const g = q.float.graph;
      for (const [i, layer] of selectLayers(q.float).layers.entries()) {
        const w = g.constantValue(layer.weight!)!;
        const b = layer.bias ? g.constantValue(layer.bias)!.data as Float32Array : undefined;
        const y = tf.tidy(() => layerForward(g, layer)(tf.tensor(data[0].x.data as Float32Array, data[0].x.dims as number[]), tf.tensor(w.data as Float32Array, w.dims), b && tf.tensor1d(b)).dataSync());
        const want = ref[outputs[i]].data as Float32Array;
        const top = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        assert.equal(y.length, want.length, layer.name);
        assert.ok(want.every((v, j) => Math.abs(v - y[j]) <= 1e-5 * top), `${layer.name}: tfjs forward differs from ORT`);
      }
      await q.calibrate(data);
      console.log(`      ${q.adaRounding.map((r) => `${r.layer} output MSE ${r.nearestMse.toExponential(2)} → ${r.adaMse.toExponential(2)}`).join(', ')}`);
      assert.deepEqual(q.adaRounding.map((r) => r.layer), outputs.length === 1 ? ['c3d'] : ['convA', 'convB', 'convT']);
      for (const r of q.adaRounding) assert.ok(r.kept === 'ada' && r.adaMse < r.nearestMse, JSON.stringify(r));
      const sum = (k: 'adaMse' | 'nearestMse') => q.adaRounding.reduce((t, r) => t + r[k], 0);
      assert.ok(sum('adaMse') < 0.95 * sum('nearestMse'), `${sum('adaMse')} vs ${sum('nearestMse')}`);
    }

    // ConvTranspose1d: not in the seed's list, refused by name with what is supported
    const t1File = path.join(dir, 'convt1d.onnx');
    fs.writeFileSync(t1File, tinyModel({
      inputs: [{ name: 'x', shape: [1, 2, 8] }], outputs: ['y'],
      nodes: [{ op: 'ConvTranspose', name: 't1d', inputs: ['x', 'w'], outputs: ['y'] }],
      initializers: [{ name: 'w', type: DataType.FLOAT, dims: [2, 3, 3], data: Float32Array.from({ length: 18 }, uniform(8)) }],
    }));
    const t1Config = path.join(dir, 'convt1d.json');
    createQuantConfig(t1Config, t1File, null);
    const c = JSON.parse(fs.readFileSync(t1Config, 'utf8'));
    c.t1d.weight_quant_params = ada;
    fs.writeFileSync(t1Config, JSON.stringify(c));
    assert.throws(() => quantizeModel(t1Config, t1File), (e: QuantbookError) => e.code === 'UNSUPPORTED'
      && /layer "t1d": ada_quantize is implemented for Conv1d, Conv2d, Conv3d \(any group\), ConvTranspose2d \(without output_shape\), Linear \(Gemm, or MatMul with a 2-D weight\) layers; this layer is ConvTranspose1d \(3-D weight\)/.test(e.message));
    // PTQ (msModelSlim round_opt): named before any calibration runs
    let progress = 0;
    const t1Data = [{ x: new ort.Tensor('float32', Float32Array.from({ length: 16 }, uniform(9)), [1, 2, 8]) }];
    await assert.rejects(quantizePtq(loadModel(t1File), t1Data, { rounding: 'ada', onProgress: () => { progress++; } }),
      (e: QuantbookError) => e.code === 'UNSUPPORTED' && /layer "t1d": rounding 'ada' \(round_opt\) is implemented for Conv1d, .*; this layer is ConvTranspose1d/.test(e.message));
    assert.equal(progress, 0);
  });
});
