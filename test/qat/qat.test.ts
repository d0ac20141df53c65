/**
 * Quantization-aware training on the MNIST CNN (fixed split: 8,000 train / 2,000 test digits):
 * fp32, PTQ and QAT accuracy on ONNX Runtime; the exported QAT model scores on ORT exactly what
 * the training loop measured; the fake quantizers' forward and gradients; Golden Stick's
 * SimulatedQuantizationAwareTraining rules and BN fold modes; msModelSlim's QatConfig.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import {
  QatConfig, QatNetwork, QuantDtype, QuantbookError, SimulatedQuantizationAwareTraining, TrainableGraph, ValueError,
  dequantizeLinear, evaluate, fakeQuantizeSte, fit, initBackend, learnedScaleFakeQuantize, loadModel, qsinQat,
  quantizeLinear, quantizeW8A8, readNpy, saveQsinQatModel, ortAccuracy as scoreOnOrt,
} from '../../sdk';
import { CNN, SAMPLE_SHAPE, cnnCalib, mnist, ortAccuracy } from '../cnn-fixtures';
import { assertSameScoreOnOrt, onnxCheck, requireChecker, runPython, tempDir } from '../helpers';

const pct = (v: number) => `${(100 * v).toFixed(2)}%`;

describe('fake quantization (STE, LSQ)', () => {
  before(() => initBackend());

  it('forward equals QuantizeLinear → DequantizeLinear; the gradient passes inside the range only', () => {
    const x = Float32Array.from({ length: 41 }, (_, i) => -3 + i * 0.15 + 0.0001);
    const scale = 0.02;
    const zp = 100;
    const y = tf.tidy(() => fakeQuantizeSte(tf.tensor1d(x), tf.scalar(scale), tf.scalar(zp), 0, 255).dataSync());
    const ref = dequantizeLinear(quantizeLinear(x, Float32Array.of(scale), Int32Array.of(zp), { qmin: 0, qmax: 255 }), Float32Array.of(scale), Int32Array.of(zp));
    assert.deepEqual(Array.from(y), Array.from(ref));
    const g = tf.tidy(() => tf.grad((v: tf.Tensor) => fakeQuantizeSte(v, tf.scalar(scale), tf.scalar(zp), 0, 255).sum())(tf.tensor1d(x)).dataSync());
    const [lo, hi] = [(0 - zp) * scale, (255 - zp) * scale];
    x.forEach((v, i) => assert.equal(g[i], v >= lo - scale / 2 && v <= hi + scale / 2 ? 1 : 0, `x=${v}`));
  });

  it('LSQ: the scale gradient is Σ dy·(round(x/s) − x/s) inside, qmin−z / qmax−z outside, times grad_scale', () => {
    const x = Float32Array.of(-1, 0.013, 0.26, 0.5, 2.6, 9);
    const s = tf.variable(tf.scalar(0.01));
    const { grads } = tf.variableGrads(() => learnedScaleFakeQuantize(tf.tensor1d(x), s, 10, 0, 255, 0.5).sum() as tf.Scalar);
    let expected = 0;
    for (const v of x) {
      const r = v / 0.01;
      const q = Math.round(r) + 10;
      expected += q < 0 ? 0 - 10 : q > 255 ? 255 - 10 : Math.round(r) - r;
    }
    assert.ok(Math.abs(grads[s.name].dataSync()[0] - expected * 0.5) < 1e-3, `${grads[s.name].dataSync()[0]} vs ${expected * 0.5}`);
    s.dispose();
  });
});

describe('QAT on the MNIST CNN', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  before(() => initBackend());

  it('fp32 / PTQ / QAT on ORT: QAT ≥ PTQ, within 0.3 points of fp32, and the export scores what training measured', async () => {
    const { train, test } = mnist();
    const model = loadModel(CNN);
    const fp32 = await ortAccuracy(CNN, test);
    const ptq = await quantizeW8A8(model, cnnCalib(), { weightPerChannel: false });
    const ptqAcc = await ortAccuracy(ptq.qdq.toBytes(), test);
    // msModelSlim defaults: opset 11 (per-tensor weights), asymmetric uint8 activations, EMA 0.99
    const config = new QatConfig({ save_onnx_name: path.join(dir, 'cnn_qat.onnx') });
    const net = qsinQat(model, config);
    const history = await fit(net, { train, test, epochs: 1, batchSize: 64, learningRate: 2e-4, sampleShape: SAMPLE_SHAPE, seed: 3 });
    const loopAcc = history.history[0].testAccuracy;
    const saved = saveQsinQatModel(net, config);
    const qatAcc = await ortAccuracy(saved.qdq, test);
    const fakeAcc = await ortAccuracy(saved.fakeQuant!, test);
    console.log(`      ${'model'.padEnd(26)} accuracy (ORT, ${test.count} test digits)`);
    for (const [name, v] of [['fp32', fp32], ['PTQ W8A8 (per-tensor)', ptqAcc], ['QAT 1 epoch, QDQ', qatAcc], ['QAT 1 epoch, fake-quant', fakeAcc], ['QAT in the training loop', loopAcc]] as const) console.log(`      ${name.padEnd(26)} ${pct(v)}`);
    assert.equal(fakeAcc, loopAcc, 'the fake-quant export scores what the training loop measured');
    assertSameScoreOnOrt(qatAcc, loopAcc, 'the QDQ export scores what the training loop measured');
    assert.ok(qatAcc >= ptqAcc, `QAT ${qatAcc} < PTQ ${ptqAcc}`);
    assert.ok(qatAcc >= fp32 - 0.003, `QAT ${qatAcc} more than 0.3 points below fp32 ${fp32}`);
    // the QDQ model is what it claims: opset 11, per-tensor int8 weights, every Conv/Gemm quantized
    const qdq = loadModel(saved.qdq);
    assert.equal(qdq.opsetVersion(''), 11);
    const dq = qdq.graph.nodes.filter((n) => n.op_type === 'DequantizeLinear');
    assert.ok(dq.every((n) => qdq.graph.valueType(n.input[1])?.shape?.length === 0), 'per-tensor (scalar) scales at opset 11');
    assert.deepEqual(saved.records.map((r) => r.name), ['conv1', 'conv2', 'fc']);
    assert.equal(qdq.graph.nodes.filter((n) => n.op_type === 'BatchNormalization').length, 0, 'BatchNormalization folded');
    net.dispose();
  });

  it('opset 13 export has per-channel weights and passes onnx.checker; save_params, checkpoint and io names', async function () {
    requireChecker(this);
    const { train, test } = mnist();
    const config = new QatConfig({
      opset_version: 13, a_sym: true, grad_scale: 0.001, save_params: true, input_names: ['image'], output_names: ['scores'],
      save_onnx_name: path.join(dir, 'pc', 'cnn.onnx'), compressed_model_checkpoint: path.join(dir, 'pc', 'cnn_qat.safetensors'),
    });
    const net = qsinQat(loadModel(CNN), config);
    const small = { images: train.images, labels: train.labels, count: 1024 };
    const h = await fit(net, { train: small, epochs: 1, batchSize: 64, learningRate: 1e-4, sampleShape: SAMPLE_SHAPE });
    assert.equal(h.history[0].steps, 16);
    assert.ok([...net.activations.values()].every((q) => q.scale), 'grad_scale > 0 learns every activation scale');
    const loopAcc = await evaluate(net, test, { sampleShape: SAMPLE_SHAPE, limit: 1000 });
    const saved = saveQsinQatModel(net, config);
    onnxCheck(saved.qdq);
    const model = loadModel(saved.qdq);
    assert.deepEqual([model.graph.inputNames, model.graph.outputNames], [['image'], ['scores']]);
    const w = model.graph.nodes.find((n) => n.op_type === 'DequantizeLinear' && n.input[0].startsWith('conv2.weight'))!;
    assert.deepEqual(model.graph.valueType(w.input[1])?.shape, [32]);
    // symmetric activations: int8 zero points 0
    const aq = model.graph.nodes.filter((n) => n.op_type === 'QuantizeLinear');
    assert.ok(aq.every((n) => model.graph.constantValue(n.input[2])!.data[0] === 0));
    const ortAcc = await scoreOnOrt(saved.qdq, test, SAMPLE_SHAPE, { limit: 1000, input: 'image', output: 'scores' });
    assertSameScoreOnOrt(ortAcc, loopAcc, 'QDQ export on ORT vs the training loop');
    // .npy parameters numpy reads, equal to the model's
    const rec = saved.records.find((r) => r.name === 'conv2')!;
    const scaleFile = path.join(saved.params!, 'conv2.weight_scale.npy');
    assert.deepEqual(Array.from(readNpy(scaleFile).data as Float32Array), Array.from(rec.weight!.scale));
    const fromNumpy = JSON.parse(runPython('import numpy, sys, json; a = numpy.load(sys.argv[1]); print(json.dumps([list(a.shape), str(a.dtype), float(a[0])]))', [scaleFile]));
    assert.deepEqual(fromNumpy, [[32], 'float32', rec.weight!.scale[0]]);
    assert.ok(fs.existsSync(path.join(saved.params!, 'conv1.input_scale.npy')) && fs.existsSync(path.join(saved.params!, 'fc.quant_bias.npy')));
    // the checkpoint restores weights and quantizer state: a fresh network exports the same model
    const again = qsinQat(loadModel(CNN), config);
    again.loadCheckpoint(saved.checkpoint!);
    const rebuilt = again.toQdqModel(13).model;
    assert.deepEqual(Buffer.from(rebuilt.toBytes()), Buffer.from(net.toQdqModel(13).model.toBytes()));
    net.dispose();
    again.dispose();
  });

  it('amp_num falls back exactly the layers a greedy sensitivity measurement on ORT picks (in `steps` rounds)', async () => {
    const { train } = mnist();
    const config = new QatConfig({ amp_num: 2, steps: 2, save_onnx_name: path.join(dir, 'amp', 'cnn.onnx') });
    const net = qsinQat(loadModel(CNN), config);
    await fit(net, { train: { ...train, count: 256 }, epochs: 1, batchSize: 64, learningRate: 1e-5, sampleShape: SAMPLE_SHAPE });
    assert.throws(() => saveQsinQatModel(net, config), /amp_num 2: fallback needs data/);
    const data = [0, 1].map((i) => ({ x: { data: train.images.subarray(i * 64 * 784, (i + 1) * 64 * 784), dims: [64, 1, 28, 28] } }));
    // Independent sensitivity: the exported QDQ model with some layers left float, run on ONNX
    // Runtime, against the trained float model; each of `steps` rounds keeps in float the layer
    // whose fallback leaves the lowest output MSE.
    const runOrt = async (bytes: Uint8Array) => {
      const session = await ort.InferenceSession.create(bytes);
      const outs: Float32Array[] = [];
      for (const d of data) outs.push((await session.run({ x: new ort.Tensor('float32', Float32Array.from(d.x.data), d.x.dims) }))[session.outputNames[0]].data as Float32Array);
      await session.release();
      return outs;
    };
    const reference = await runOrt(net.toFloatModel().toBytes());
    const mseWithFloat = async (layers: string[]) => {
      net.fallenBack.clear();
      for (const l of layers) net.fallenBack.add(l);
      const got = await runOrt(net.toQdqModel().model.toBytes());
      net.fallenBack.clear();
      let [sum, n] = [0, 0];
      got.forEach((g, b) => g.forEach((v, i) => { sum += (v - reference[b][i]) ** 2; n++; }));
      return sum / n;
    };
    const expected: string[] = [];
    const measured: string[] = [];
    for (let round = 0; round < 2; round++) {
      const scores: Array<[string, number]> = [];
      for (const l of ['conv1', 'conv2', 'fc'].filter((x) => !expected.includes(x))) scores.push([l, await mseWithFloat([...expected, l])]);
      scores.sort((a, b) => a[1] - b[1]);
      measured.push(scores.map(([l, e]) => `${l} ${e.toExponential(3)}`).join(', '));
      expected.push(scores[0][0]);
    }
    console.log(`      output MSE with one more layer in float (ORT): round 1 ${measured[0]}; round 2 ${measured[1]}`);
    const saved = saveQsinQatModel(net, config, { data });
    assert.deepEqual(saved.fallback, expected);
    assert.deepEqual(saved.records.map((r) => r.name).sort(), ['conv1', 'conv2', 'fc'].filter((l) => !expected.includes(l)));
    const model = loadModel(saved.qdq);
    for (const l of expected) assert.ok(!model.graph.nodes.some((n) => n.op_type === 'DequantizeLinear' && n.input[0].startsWith(`${l}.weight`)), `${l} stays float`);
    const left = ['conv1', 'conv2', 'fc'].find((l) => !expected.includes(l))!;
    assert.ok(model.graph.nodes.some((n) => n.op_type === 'DequantizeLinear' && n.input[0].startsWith(`${left}.weight`)), `${left} is quantized`);
    net.dispose();
  });

  it('QatConfig validates every documented range', () => {
    assert.deepEqual({ ...new QatConfig() }, {
      w_bit: 8, a_bit: 8, a_sym: false, amp_num: 0, steps: 1, ema: 0.99, is_forward: false, ignore_head_tail_node: false, disable_names: null, has_init_quant: false,
      quant_mode: true, grad_scale: 0, compressed_model_checkpoint: null, opset_version: 11, save_params: false, input_names: null, output_names: null, save_onnx_name: null,
    });
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ w_bit: 4 }, /w_bit: got 4; expected 8/], [{ a_bit: 16 }, /a_bit/], [{ amp_num: 11 }, /amp_num: got 11; expected an integer in \[0, 10\]/],
      [{ amp_num: 1.5 }, /amp_num/], [{ steps: 0 }, /steps: got 0/], [{ ema: 0.05 }, /ema: got 0.05; expected a number in \[0.1, 1.0\]/],
      [{ ema: 1.2 }, /ema/], [{ opset_version: 12 }, /opset_version: got 12; expected 11 or 13/], [{ grad_scale: -1 }, /grad_scale/],
      [{ a_sym: 'yes' }, /a_sym: got "yes"; expected true or false/], [{ disable_names: 'conv1' }, /disable_names/], [{ input_names: [1] }, /input_names/],
      [{ save_onnx_name: '' }, /save_onnx_name/], [{ learning_rate: 1 }, /unknown key "learning_rate"/],
    ];
    for (const [o, re] of bad) assert.throws(() => new QatConfig(o as never), (e: QuantbookError) => e.code === 'INVALID_ARGUMENT' && re.test(e.message), JSON.stringify(o));
    // disable_names and ignore_head_tail_node choose the quantized layers
    assert.deepEqual(qsinQat(loadModel(CNN), new QatConfig({ disable_names: ['fc'] })).layers.map((l) => l.name), ['conv1', 'conv2']);
    assert.deepEqual(qsinQat(loadModel(CNN), new QatConfig({ ignore_head_tail_node: true })).layers.map((l) => l.name), ['conv2']);
    assert.throws(() => qsinQat(loadModel(CNN), new QatConfig({ disable_names: ['nope'] })), /"nope" matches no quantizable layer/);
  });
});

describe('Golden Stick SimulatedQuantizationAwareTraining', () => {
  before(() => initBackend());

  it('applies the TypeError / ValueError rules of its API page', () => {
    const S = SimulatedQuantizationAwareTraining;
    const typeErrors: Array<Record<string, unknown>> = [
      { bn_fold: 1 }, { one_conv_fold: 'true' }, { enable_fusion: null }, { freeze_bn: 1.5 }, { quant_delay: '0' }, { quant_delay: [0, 0.5] },
      { quant_dtype: 'int8' }, { quant_dtype: [QuantDtype.INT8, 8] }, { per_channel: 0 }, { per_channel: [false, 1] }, { symmetric: 'no' }, { symmetric: [true, 0] },
      { narrow_range: 1 }, { narrow_range: [false, 'x'] },
    ];
    for (const c of typeErrors) assert.throws(() => new S(c as never), TypeError, JSON.stringify(c));
    const valueErrors: Array<Record<string, unknown>> = [
      { freeze_bn: -1 }, { quant_delay: [0, 0, 0] }, { quant_dtype: [QuantDtype.INT8, QuantDtype.INT8, QuantDtype.INT8] }, { per_channel: [false, true, false] },
      { symmetric: [true, true, true] }, { narrow_range: [false, false, false] }, { quant_delay: -1 }, { quant_delay: [0, -2] },
      { quant_dtype: QuantDtype.INT4 }, { quant_dtype: [QuantDtype.INT8, QuantDtype.UINT8] }, { per_channel: true }, { per_channel: [true, false] },
    ];
    for (const c of valueErrors) assert.throws(() => new S(c as never), ValueError, JSON.stringify(c));
    const sim = new S();
    assert.deepEqual(sim.config, { quant_delay: [0, 0], quant_dtype: ['INT8', 'INT8'], per_channel: [false, false], symmetric: [false, false], narrow_range: [false, false], enable_fusion: false, freeze_bn: 10000000, bn_fold: false, one_conv_fold: true });
    assert.throws(() => sim.set_act_per_channel(true), ValueError);
    assert.throws(() => sim.set_act_per_channel(1 as never), TypeError);
    assert.throws(() => sim.set_act_quant_delay(-1), ValueError);
    assert.throws(() => sim.set_weight_quant_delay(0.5), TypeError);
    assert.throws(() => sim.set_act_quant_dtype(QuantDtype.INT4), ValueError);
    assert.throws(() => sim.set_weight_quant_dtype('INT8x' as never), TypeError);
    assert.throws(() => sim.set_freeze_bn(-3), ValueError);
    for (const m of ['set_act_narrow_range', 'set_act_symmetric', 'set_bn_fold', 'set_enable_fusion', 'set_one_conv_fold', 'set_weight_narrow_range', 'set_weight_symmetric'] as const) {
      assert.throws(() => sim[m](0 as never), TypeError, m);
    }
    sim.set_weight_symmetric(true);
    sim.set_act_quant_delay(5);
    sim.set_enable_fusion(true);
    sim.set_bn_fold(true);
    sim.set_one_conv_fold(false);
    assert.equal(sim.foldMode, 'two-conv');
    assert.deepEqual([sim.config.symmetric, sim.config.quant_delay], [[false, true], [5, 0]]);
    assert.throws(() => sim.apply('model.onnx' as never), TypeError);
    assert.throws(() => sim.convert({} as never), TypeError);
    const net = sim.apply(loadModel(CNN));
    assert.throws(() => sim.convert(net, 5 as never), TypeError);
    assert.throws(() => sim.convert(net, '/no/such.ckpt'), ValueError);
    net.dispose();
  });

  for (const [mode, config] of [
    ['no fusion', { quant_delay: [0, 0] }],
    ['fusion, BN not folded', { enable_fusion: true }],
    ['one-conv fold', { enable_fusion: true, bn_fold: true, one_conv_fold: true, per_channel: [false, true], symmetric: [false, true] }],
    ['two-conv fold, freeze_bn 10, quant_delay', { enable_fusion: true, bn_fold: true, one_conv_fold: false, freeze_bn: 10, quant_delay: [3, 3], narrow_range: [false, true] }],
  ] as const) {
    it(`${mode}: trains, and convert(net, ckpt) gives a QDQ model ORT scores like the network`, async () => {
      const dir = tempDir();
      const { train, test } = mnist();
      const sim = new SimulatedQuantizationAwareTraining(config as never);
      const net = sim.apply(loadModel(CNN));
      await fit(net, { train: { ...train, count: 1280 }, epochs: 1, batchSize: 64, learningRate: 1e-4, sampleShape: SAMPLE_SHAPE, checkpointDir: dir });
      const netAcc = await evaluate(net, test, { sampleShape: SAMPLE_SHAPE, limit: 1000 });
      // a fresh network from the checkpoint converts to the same numbers
      const fresh = sim.apply(loadModel(CNN));
      const model = sim.convert(fresh, path.join(dir, 'epoch-1.safetensors'));
      const ortAcc = await ortAccuracy(model.toBytes(), test, 1000);
      const bn = model.graph.nodes.filter((n) => n.op_type === 'BatchNormalization').length;
      console.log(`      ${mode}: network ${pct(netAcc)}, ORT ${pct(ortAcc)}, BatchNormalization nodes left ${bn}`);
      assertSameScoreOnOrt(ortAcc, netAcc, `${mode}: converted model on ORT vs the network`);
      assert.ok(netAcc > 0.95);
      assert.equal(bn, (config as unknown as { bn_fold?: boolean }).bn_fold ? 0 : 2);
      net.dispose();
      fresh.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    });
  }

  describe('each option by its effect', () => {
    const { train } = mnist();
    const batch = (i: number) => ({ x: { data: train.images.subarray(i * 32 * 784, (i + 1) * 32 * 784), dims: [32, 1, 28, 28] } });
    const output = (g: TrainableGraph, i: number, training: boolean) => tf.tidy(() => Float32Array.from(g.forward(batch(i), { training })[g.outputNames[0]].dataSync()));
    const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

    it('quant_delay (3, 3): the first 3 training steps compute exactly the float model, the 4th is quantized', () => {
      const net = new SimulatedQuantizationAwareTraining({ quant_delay: [3, 3] }).apply(loadModel(CNN));
      const float = TrainableGraph.fromModel(loadModel(CNN)); // same BN behaviour in training mode, no quantizers
      const diffs = [0, 1, 2, 3].map((i) => maxDiff(output(net.graph, i, true), output(float, i, true)));
      assert.deepEqual(diffs.slice(0, 3), [0, 0, 0], `steps 1–3 differ from float: ${diffs}`);
      assert.ok(diffs[3] > 1e-3, `step 4 is not quantized: ${diffs[3]}`);
      // without a delay the very first step is already quantized, on either side of the pair
      for (const quant_delay of [[0, 3], [3, 0]]) {
        const other = new SimulatedQuantizationAwareTraining({ quant_delay }).apply(loadModel(CNN));
        const fresh = TrainableGraph.fromModel(loadModel(CNN));
        assert.ok(maxDiff(output(other.graph, 0, true), output(fresh, 0, true)) > 1e-3, `quant_delay ${quant_delay}: step 1 is float`);
        other.dispose();
      }
      net.dispose();
    });

    it('freeze_bn 2 (two-conv fold): BN running statistics move on steps 1–2 and stay fixed from step 3, which computes the inference form', () => {
      const bns = loadModel(CNN).graph.nodes.filter((n) => n.op_type === 'BatchNormalization');
      assert.equal(bns.length, 2);
      const stats = (net: QatNetwork) => bns.flatMap((b) => [b.input[3], b.input[4]]).map((n) => Array.from(net.graph.variables.get(n)!.dataSync()));
      const run = (freeze_bn: number) => {
        const net = new SimulatedQuantizationAwareTraining({ enable_fusion: true, bn_fold: true, one_conv_fold: false, freeze_bn }).apply(loadModel(CNN));
        const rows: Array<{ moved: number; trainVsEval: number }> = [];
        let prev = stats(net);
        for (let i = 0; i < 3; i++) {
          const t = output(net.graph, i, true);
          const e = output(net.graph, i, false);
          const now = stats(net);
          rows.push({ moved: Math.max(...now.map((v, k) => maxDiff(v, prev[k]))), trainVsEval: maxDiff(t, e) });
          prev = now;
        }
        net.dispose();
        return rows;
      };
      const frozen = run(2);
      assert.ok(frozen[0].moved > 1e-4 && frozen[1].moved > 1e-4, `steps 1–2 must update the statistics: ${JSON.stringify(frozen)}`);
      assert.equal(frozen[2].moved, 0, 'step 3 changed the BN statistics');
      assert.equal(frozen[2].trainVsEval, 0, 'a frozen step computes what inference computes');
      assert.ok(frozen[1].trainVsEval > 1e-3, 'before freezing, training uses batch statistics');
      // control: with the default freeze_bn the third step still updates them
      const live = run(10000000);
      assert.ok(live[2].moved > 1e-4 && live[2].trainVsEval > 1e-3, JSON.stringify(live));
    });

    it('narrow_range: asymmetric int8 weights on the grid [-127, 127] (scale (max − min)/254), [-128, 127] without; uint8 activations [1, 255]', () => {
      const w = loadModel(CNN).graph.constantValue('conv1.weight')!;
      const data = w.data as Float32Array;
      const rne = (v: number) => { const f = Math.floor(v); const d = v - f; return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1; };
      const seen = new Map<boolean, { min: number; max: number }>();
      for (const narrow of [true, false]) {
        const net = new SimulatedQuantizationAwareTraining({ narrow_range: [narrow, narrow], symmetric: [false, false] }).apply(loadModel(CNN));
        const wq = net.weights.get('conv1')!;
        // the seed's formula: s = (max − min)/(qmax − qmin), zp = clamp(round(qmin − min/s))
        const [qmin, qmax] = narrow ? [-127, 127] : [-128, 127];
        const lo = Math.min(0, ...data);
        const hi = Math.max(0, ...data);
        const s = Math.fround((hi - lo) / (qmax - qmin));
        const z = Math.min(qmax, Math.max(qmin, rne(qmin - lo / s)));
        const y = tf.tidy(() => Float32Array.from(wq.apply(tf.tensor(data, w.dims), false).dataSync()));
        const levels = Array.from(y, (v) => v / s + z);
        levels.forEach((k, i) => assert.ok(Math.abs(k - Math.round(k)) < 1e-3, `weight ${i}: ${k} is not on the grid`));
        const ints = levels.map((k) => Math.round(k) || 0);
        const expected = Array.from(data, (v) => Math.min(qmax, Math.max(qmin, rne(v / s) + z)) || 0);
        assert.deepEqual(ints, expected);
        seen.set(narrow, { min: Math.min(...ints), max: Math.max(...ints) });
        // one training step fixes the activation ranges; the exported int8 weights use the same grid
        output(net.graph, 0, true);
        for (const q of net.activations.values()) assert.deepEqual([q.qparams().qmin, q.qparams().qmax], narrow ? [1, 255] : [0, 255]);
        const model = net.toQdqModel().model;
        const dq = model.graph.nodes.find((n) => n.op_type === 'DequantizeLinear' && n.input[0].startsWith('conv1.weight'))!;
        const stored = Array.from(model.graph.constantValue(dq.input[0])!.data as Int8Array);
        assert.equal(Math.min(...stored), qmin, `exported conv1 weights reach ${Math.min(...stored)}`);
        net.dispose();
      }
      assert.deepEqual(seen.get(true), { min: -127, max: 127 });
      assert.deepEqual(seen.get(false), { min: -128, max: 127 });
    });
  });

  it('QatNetwork refuses to export before any training step', () => {
    const net = new SimulatedQuantizationAwareTraining().apply(loadModel(CNN));
    assert.throws(() => net.toQdqModel(), /no training step has run/);
    assert.ok(net instanceof QatNetwork);
    net.dispose();
  });
});
