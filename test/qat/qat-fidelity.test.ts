/**
 * Seed fidelity of the QAT APIs on small models (seconds each): Golden Stick's fusion patterns
 * (Conv/Dense + BatchNorm + ReLU quantized at the ReLU output), the fused Dense + BN forward,
 * and msModelSlim QatConfig's is_forward, has_init_quant and quant_mode.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import {
  DataType, Model, QatConfig, QatNetwork, SimulatedQuantizationAwareTraining, TrainableGraph, TensorData, initBackend, loadModel,
  qsinQat, quantizeW8A8, saveQsinQatModel,
} from '../../sdk';
import { makeAttribute } from '../../sdk/onnx/graph';
import { foldDenseBatchNorms } from '../../sdk/quantize/fold-batchnorm';
import { tinyModel } from '../build';
import { CNN, cnnCalib, mnist } from '../cnn-fixtures';
import { randomFloats, tempDir } from '../helpers';

const BATCH = 8;
const X_DIMS = [BATCH, 2, 5, 5];

/**
 * Every fusion pattern Golden Stick lists, in one chain:
 * Conv+BN+ReLU → Conv+ReLU → Flatten → Gemm(transB)+BN+ReLU → MatMul+BN → Gemm+ReLU → Gemm.
 */
function patternsModel(): Model {
  let seed = 1;
  const t = (name: string, dims: number[], lo = -0.5, hi = 0.5): TensorData => ({ name, type: DataType.FLOAT, dims, data: randomFloats(dims.reduce((a, b) => a * b, 1), seed++, lo, hi) });
  const bn = (p: string, c: number): TensorData[] => [t(`${p}.gamma`, [c], 0.5, 1.5), t(`${p}.beta`, [c]), t(`${p}.mean`, [c], -0.3, 0.3), t(`${p}.var`, [c], 0.3, 2)];
  const bnNode = (p: string, x: string) => ({ op: 'BatchNormalization', name: p, inputs: [x, `${p}.gamma`, `${p}.beta`, `${p}.mean`, `${p}.var`], outputs: [p] });
  const pads = [makeAttribute('pads', [1, 1, 1, 1]), makeAttribute('kernel_shape', [3, 3])];
  return loadModel(tinyModel({
    inputs: [{ name: 'x', shape: X_DIMS }],
    outputs: ['y'],
    nodes: [
      { op: 'Conv', name: 'c1', inputs: ['x', 'c1.w', 'c1.b'], outputs: ['c1'], attrs: pads },
      bnNode('bn_c1', 'c1'),
      { op: 'Relu', name: 'relu_c1', inputs: ['bn_c1'], outputs: ['relu_c1'] },
      { op: 'Conv', name: 'c2', inputs: ['relu_c1', 'c2.w', 'c2.b'], outputs: ['c2'], attrs: pads },
      { op: 'Relu', name: 'relu_c2', inputs: ['c2'], outputs: ['relu_c2'] },
      { op: 'Flatten', name: 'flatten', inputs: ['relu_c2'], outputs: ['flat'] },
      { op: 'Gemm', name: 'fc1', inputs: ['flat', 'fc1.w', 'fc1.b'], outputs: ['fc1'], attrs: [makeAttribute('transB', 1)] },
      bnNode('bn_fc1', 'fc1'),
      { op: 'Relu', name: 'relu_fc1', inputs: ['bn_fc1'], outputs: ['relu_fc1'] },
      { op: 'MatMul', name: 'fc2', inputs: ['relu_fc1', 'fc2.w'], outputs: ['fc2'] },
      bnNode('bn_fc2', 'fc2'),
      { op: 'Gemm', name: 'fc3', inputs: ['bn_fc2', 'fc3.w', 'fc3.b'], outputs: ['fc3'] },
      { op: 'Relu', name: 'relu_fc3', inputs: ['fc3'], outputs: ['relu_fc3'] },
      { op: 'Gemm', name: 'fc4', inputs: ['relu_fc3', 'fc4.w', 'fc4.b'], outputs: ['y'], attrs: [makeAttribute('transB', 1)] },
    ],
    initializers: [
      t('c1.w', [3, 2, 3, 3]), t('c1.b', [3]), ...bn('bn_c1', 3), t('c2.w', [3, 3, 3, 3]), t('c2.b', [3]),
      t('fc1.w', [6, 75], -0.2, 0.2), t('fc1.b', [6]), ...bn('bn_fc1', 6), t('fc2.w', [6, 5]), ...bn('bn_fc2', 5),
      t('fc3.w', [5, 4]), t('fc3.b', [4]), t('fc4.w', [3, 4]), t('fc4.b', [3]),
    ],
  }));
}

const feeds = (seed: number) => ({ x: { data: randomFloats(X_DIMS.reduce((a, b) => a * b, 1), seed, -2, 2), dims: X_DIMS } });

/**
 * The fake-quant points Golden Stick's rules give, from the graph alone: each quantized layer's
 * input, and each layer output that another layer reads downstream, taken (when fused) after the
 * BatchNormalization that alone reads it and then after the ReLU that alone reads that.
 */
function expectedQuantPoints(model: Model, fused: boolean): string[] {
  const g = model.graph;
  const layers = g.nodes.filter((n) => ['Conv', 'Gemm', 'MatMul'].includes(n.op_type!));
  const soleReader = (t: string) => (g.consumers(t).length === 1 && !g.outputNames.includes(t) ? g.consumers(t)[0] : undefined);
  const reachesLayer = (t: string): boolean => g.consumers(t).some((n) => layers.includes(n) || n.output.some(reachesLayer));
  const points = new Set<string>();
  for (const l of layers) {
    points.add(l.input[0]);
    let out = l.output[0];
    if (fused && soleReader(out)?.op_type === 'BatchNormalization') out = soleReader(out)!.output[0];
    if (fused && soleReader(out)?.op_type === 'Relu') out = soleReader(out)!.output[0];
    if (reachesLayer(out)) points.add(out);
  }
  return [...points].sort();
}

const maxRelDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  const scale = Math.max(...Array.from(b, Math.abs));
  return Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0) / scale;
};

describe('SimQAT fusion patterns (Golden Stick)', () => {
  before(() => initBackend());

  it('the fake-quant points are the graph-derived list: none between BN and ReLU, Dense+BN fused like Conv+BN', () => {
    const model = patternsModel();
    for (const fusion of [true, false]) {
      const net = new SimulatedQuantizationAwareTraining({ enable_fusion: fusion, bn_fold: true }).apply(model);
      const got = [...net.activations.keys()].sort();
      const expected = expectedQuantPoints(model, fusion);
      assert.deepEqual(got, expected, `enable_fusion ${fusion}`);
      if (fusion) {
        // spelled out: outputs of BN nodes that feed a ReLU, and of Dense layers that feed a BN, carry none
        for (const t of ['bn_c1', 'bn_fc1', 'c1', 'c2', 'fc1', 'fc2', 'fc3']) assert.ok(!got.includes(t), `a quantizer on "${t}" with fusion`);
        assert.deepEqual(expected, ['bn_fc2', 'flat', 'relu_c1', 'relu_c2', 'relu_fc1', 'relu_fc3', 'x']);
      }
      net.dispose();
    }
  });

  it('fused Dense+BN computes Dense→BN in float (one- and two-conv fold, eval and training), and exports one Gemm per pair', () => {
    const model = patternsModel();
    for (const one_conv_fold of [true, false]) {
      // quantizers off for the first 1000 steps: the fused network is float
      const net = new SimulatedQuantizationAwareTraining({ enable_fusion: true, bn_fold: true, one_conv_fold, quant_delay: [1000, 1000] }).apply(model);
      const float = TrainableGraph.fromModel(model);
      const run = (g: TrainableGraph, training: boolean, seed: number, out: string) => tf.tidy(() => Float32Array.from(g.forward(feeds(seed), { training, outputs: [out] })[out].dataSync()));
      for (const out of ['bn_fc1', 'bn_fc2', 'y']) {
        const d = maxRelDiff(run(net.graph, false, 3, out), run(float, false, 3, out));
        assert.ok(d < 1e-5, `one_conv_fold ${one_conv_fold}, eval, "${out}": relative difference ${d}`);
      }
      // a training step: batch statistics, and the running statistics move the same way
      const dTrain = maxRelDiff(run(net.graph, true, 4, 'y'), run(float, true, 4, 'y'));
      assert.ok(dTrain < 1e-4, `one_conv_fold ${one_conv_fold}, training: relative difference ${dTrain}`);
      for (const stat of ['bn_fc1.mean', 'bn_fc1.var', 'bn_fc2.mean', 'bn_fc2.var']) {
        const moved = maxRelDiff(net.graph.variables.get(stat)!.dataSync(), float.variables.get(stat)!.dataSync());
        assert.ok(moved < 1e-4, `${stat}: ${moved}`);
      }
      // the export folds both Dense pairs: no BatchNormalization, fc2 became a Gemm with a bias
      const exported = net.toQdqModel(13).model;
      assert.equal(exported.graph.nodes.filter((n) => n.op_type === 'BatchNormalization').length, 0);
      const fc2 = exported.graph.nodes.find((n) => n.name === 'fc2')!;
      assert.equal(fc2.op_type, 'Gemm');
      assert.equal(fc2.input.length, 3);
      net.dispose();
      float.dispose();
    }
  });

  it('the exported Dense+BN fold (foldDenseBatchNorms) computes what Dense→BN computes, on ORT', async () => {
    const model = patternsModel();
    const folded = model.clone();
    const { folded: pairs } = foldDenseBatchNorms(folded);
    assert.deepEqual(pairs.map((p) => [p.conv, p.batchNorm]), [['fc1', 'bn_fc1'], ['fc2', 'bn_fc2']]);
    assert.deepEqual(folded.graph.nodes.filter((n) => n.op_type === 'BatchNormalization').map((n) => n.name), ['bn_c1'], 'Conv+BN is foldBatchNorms\' job');
    const f = feeds(9).x;
    const run = async (m: Model) => {
      const session = await ort.InferenceSession.create(m.toBytes());
      const out = (await session.run({ x: new ort.Tensor('float32', Float32Array.from(f.data), f.dims) })).y.data as Float32Array;
      await session.release();
      return out;
    };
    const [a, b] = [await run(model), await run(folded)];
    const d = maxRelDiff(b, a);
    assert.ok(d < 1e-5, `relative difference ${d}`);
  });
});

describe('QatConfig is_forward, has_init_quant, quant_mode', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  before(() => initBackend());

  it('is_forward: amp_num data are mmdetection batches { img: [tensor], img_metas } (feeds by input name without it)', () => {
    const model = patternsModel();
    const batches = [5, 6].map(feeds);
    const falls = (isForward: boolean, data: unknown[]) => {
      const config = new QatConfig({ amp_num: 2, is_forward: isForward, opset_version: 13, save_onnx_name: path.join(dir, `fwd-${isForward}.onnx`) });
      const net = qsinQat(model, config);
      tf.tidy(() => { net.graph.forward(batches[0], { training: true }); });
      try {
        return saveQsinQatModel(net, config, { data: data as never }).fallback;
      } finally {
        net.dispose();
      }
    };
    const mmdet = batches.map((b) => ({ img: [b.x], img_metas: [[{ ori_shape: [5, 5, 2], scale_factor: 1 }]] }));
    const plain = falls(false, batches);
    assert.equal(plain.length, 2);
    assert.deepEqual(falls(true, mmdet), plain, 'the mmdetection batches measure what the plain feeds measure');
    assert.throws(() => falls(true, batches), /data\[0\].*mmdetection batch \{ img, img_metas \}.*unexpected key "x"/);
    assert.throws(() => falls(false, mmdet), /missing input "x"/);
  });

  it('has_init_quant: QAT of a QDQ model starts from its activation scales and zero points', async () => {
    const ptq = (await quantizeW8A8(loadModel(CNN), cnnCalib(), { weightPerChannel: false })).qdq;
    const g = ptq.graph;
    const ptqParams = new Map(g.nodes.filter((n) => n.op_type === 'QuantizeLinear').map((n) => [n.input[0], { scale: Number(g.constantValue(n.input[1])!.data[0]), zeroPoint: Number(g.constantValue(n.input[2])!.data[0]) }]));
    assert.throws(() => qsinQat(ptq, new QatConfig()), /has_init_quant: false, but the model already has QuantizeLinear/);
    assert.throws(() => qsinQat(loadModel(CNN), new QatConfig({ has_init_quant: true })), /no QuantizeLinear → DequantizeLinear pair/);
    const net = qsinQat(ptq, new QatConfig({ has_init_quant: true }));
    const fresh = qsinQat(loadModel(CNN), new QatConfig());
    assert.ok(net.activations.size >= 4 && net.graph.model.graph.nodes.every((n) => n.op_type !== 'QuantizeLinear' && n.op_type !== 'DequantizeLinear'));
    // before any training step: the ranges are PTQ's (same scale and zero point), so it can export
    for (const [t, q] of net.activations) {
      const p = ptqParams.get(t);
      assert.ok(p, `quantizer on "${t}" has no PTQ counterpart`);
      const got = q.qparams();
      assert.ok(Math.abs(got.scale[0] - p.scale) <= 1e-6 * p.scale && got.zeroPoint[0] === p.zeroPoint, `"${t}": ${got.scale[0]}/${got.zeroPoint[0]} vs PTQ ${p.scale}/${p.zeroPoint}`);
    }
    assert.doesNotThrow(() => net.toQdqModel());
    assert.throws(() => fresh.toQdqModel(), /no training step has run/);
    // the first training step continues the initial range (EMA 0.99) instead of starting from the batch
    const { train } = mnist();
    const batch = { x: { data: train.images.subarray(0, 32 * 784), dims: [32, 1, 28, 28] } };
    // (the input, scaled ×3 so the batch range [0, 3] differs from the calibrated one, is the
    // tensor both networks observe unchanged)
    const [lo, hi] = [net.activations.get('x')!.min!, net.activations.get('x')!.max!];
    const scaled = { x: { data: batch.x.data.map((v) => 3 * v), dims: batch.x.dims } };
    tf.tidy(() => { net.graph.forward(scaled, { training: true }); fresh.graph.forward(scaled, { training: true }); });
    const [bLo, bHi] = [fresh.activations.get('x')!.min!, fresh.activations.get('x')!.max!];
    assert.ok(bHi > 2.5 && hi < 1.5, `batch max ${bHi}, initial max ${hi}`);
    const x = net.activations.get('x')!;
    assert.ok(Math.abs(x.min! - (0.99 * lo + 0.01 * bLo)) < 1e-6 && Math.abs(x.max! - (0.99 * hi + 0.01 * bHi)) < 1e-6, `[${x.min}, ${x.max}] vs [${0.99 * lo + 0.01 * bLo}, ${0.99 * hi + 0.01 * bHi}]`);
    net.dispose();
    fresh.dispose();
  });

  it('quant_mode false: training is float and the written file is the float model (no QuantizeLinear/DequantizeLinear)', async () => {
    const model = patternsModel();
    const written = async (quant_mode: boolean) => {
      const config = new QatConfig({ quant_mode, opset_version: 13, save_params: true, save_onnx_name: path.join(dir, `mode-${quant_mode}`, 'm.onnx') });
      const net: QatNetwork = qsinQat(model, config);
      const float = TrainableGraph.fromModel(model);
      const training = maxRelDiff(tf.tidy(() => net.graph.forward(feeds(7), { training: true }).y.dataSync()), tf.tidy(() => float.forward(feeds(7), { training: true }).y.dataSync()));
      const expected = tf.tidy(() => Float32Array.from(net.graph.forward(feeds(8)).y.dataSync()));
      const saved = saveQsinQatModel(net, config);
      const file = loadModel(saved.qdq);
      const ops = file.graph.nodes.map((n) => n.op_type!);
      const session = await ort.InferenceSession.create(saved.qdq);
      const f = feeds(8).x;
      const got = (await session.run({ x: new ort.Tensor('float32', f.data, f.dims) })).y.data as Float32Array;
      await session.release();
      net.dispose();
      float.dispose();
      return { saved, ops, training, ortDiff: maxRelDiff(got, expected), files: fs.readdirSync(path.dirname(saved.qdq)).sort() };
    };
    const off = await written(false);
    assert.ok(off.training < 1e-5, `quant_mode false trains the float network: ${off.training}`);
    assert.ok(!off.ops.includes('QuantizeLinear') && !off.ops.includes('DequantizeLinear'), `float export has ${off.ops.join(', ')}`);
    assert.equal(off.ops.filter((o) => o === 'BatchNormalization').length, 3, 'the float model as trained');
    assert.ok(off.ortDiff < 1e-5, `ORT on the written file vs the network: ${off.ortDiff}`);
    assert.deepEqual([off.saved.quantized, off.saved.fakeQuant, off.saved.records, off.files], [false, undefined, [], ['m.onnx']]);
    // control: quant_mode true writes Q/DQ, the fake-quant file and the parameters
    const on = await written(true);
    assert.ok(on.training > 1e-3);
    assert.ok(on.ops.includes('QuantizeLinear') && on.ops.includes('DequantizeLinear'));
    assert.deepEqual(on.files, ['m.onnx', 'm_fake_quant.onnx', 'm_params']);
  });
});
