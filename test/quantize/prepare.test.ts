import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType, QuantbookError, foldAffineIntoConvs, foldBatchNorms, foldIntoConvTransposes, loadModel, prepareFloat, selectLayers, upgradeOpset } from '../../sdk';
import { encodeModel } from '../../sdk/onnx/proto';
import { GraphBuilder } from '../corpus/builder';
import { detPages } from '../../sdk/eval/ocr-data';
import { makeAttribute } from '../../sdk/onnx/graph';
import { FEEDS, MODELS, onnxCheck, randomFloats, requireChecker, runModel, sameBytes, tempDir } from '../helpers';
import { tinyModel } from '../build';

describe('preparing float models for quantization', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const key of ['rec', 'cls', 'det'] as const) {
    it(`upgrades ${key} to opset 13 (Clip/Slice/Squeeze/Softmax rewritten) with bit-identical outputs`, async function () {
      const m = loadModel(MODELS[key]);
      upgradeOpset(m, 13);
      assert.equal(m.opsetVersion(), 13);
      assert.ok(m.graph.nodes.every((n) => n.op_type !== 'Clip' || !n.attribute.some((a) => a.name === 'min' || a.name === 'max')));
      const feeds = FEEDS[key]();
      const [a, b] = [await runModel(MODELS[key], feeds), await runModel(m.toBytes(), feeds)];
      for (const k of Object.keys(a)) assert.ok(sameBytes(a[k], b[k]), `${key} output ${k}`);
      requireChecker(this);
      const file = path.join(dir, `${key}-13.onnx`);
      m.save(file);
      onnxCheck(file);
    });
  }

  it('keeps the pre-13 meaning of Softmax over a middle axis', async () => {
    const bytes = tinyModel({ opset: 11, inputs: [{ name: 'x', shape: [2, 3, 4] }], outputs: ['y'], nodes: [{ op: 'Softmax', inputs: ['x'], outputs: ['y'], attrs: [] }] });
    const m = loadModel(bytes);
    upgradeOpset(m, 13);
    const ort = await import('onnxruntime-node');
    const x = new ort.Tensor('float32', Float32Array.from({ length: 24 }, (_, i) => Math.sin(i)), [2, 3, 4]);
    const [a, b] = [await runModel(bytes, { x }), await runModel(m.toBytes(), { x })];
    assert.deepEqual(b.y.dims, [2, 3, 4]);
    for (let i = 0; i < 24; i++) assert.ok(Math.abs((a.y.data as Float32Array)[i] - (b.y.data as Float32Array)[i]) < 1e-6);
  });

  it('refuses what it cannot convert, naming the node, operator and opsets', () => {
    const m = loadModel(tinyModel({ opset: 9, inputs: [{ name: 'x', shape: [1, 1, 2, 2] }], outputs: ['y'], nodes: [{ op: 'Upsample', inputs: ['x', 's'], outputs: ['y'], attrs: [makeAttribute('mode', 'cubic')] }], initializers: [{ name: 's', type: DataType.FLOAT, dims: [4], data: Float32Array.of(1, 1, 2, 2) }] }));
    assert.throws(() => upgradeOpset(m, 13), (e: QuantbookError) => e.code === 'UNSUPPORTED' && /node "n0" \(Upsample, mode "cubic"\): cannot convert from opset 9 to 13/.test(e.message));
  });

  it('folds every BatchNormalization after a Conv in PP-OCR cls; outputs stay within 1e-5', async () => {
    const m = loadModel(MODELS.cls);
    upgradeOpset(m, 13);
    const before = m.graph.nodes.filter((n) => n.op_type === 'BatchNormalization').length;
    const { folded } = foldBatchNorms(m);
    assert.equal(before, 35);
    assert.equal(folded.length, 35);
    assert.equal(m.graph.nodes.filter((n) => n.op_type === 'BatchNormalization').length, 0);
    const feeds = FEEDS.cls();
    const [a, b] = [await runModel(MODELS.cls, feeds), await runModel(m.toBytes(), feeds)];
    const x = a['softmax_0.tmp_0'].data as Float32Array;
    const y = b['softmax_0.tmp_0'].data as Float32Array;
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) < 1e-5, `${x[i]} vs ${y[i]}`);
  });

  it("PP-OCRv4 det's head: the bias Add and BatchNormalization after each ConvTranspose fold into it; probabilities within 1e-4", async () => {
    const m = loadModel(MODELS.det);
    upgradeOpset(m, 13);
    const batchNorms = () => m.graph.nodes.filter((n) => n.op_type === 'BatchNormalization').length;
    const before = batchNorms();
    const { folded } = foldIntoConvTransposes(m);
    assert.deepEqual(folded.map((f) => f.nodes.length), [2, 1]); // Add + BN into the first, Add into the second
    assert.equal(batchNorms(), before - 1);
    for (const ct of m.graph.nodes.filter((n) => n.op_type === 'ConvTranspose')) assert.notEqual(m.graph.consumers(ct.output[0])[0]?.op_type, 'Add');
    for (const feeds of [FEEDS.det(), { x: detPages()[0].x }]) {
      const [a, b] = [await runModel(MODELS.det, feeds), await runModel(m.toBytes(), feeds)];
      for (const k of Object.keys(a)) {
        const [x, y] = [a[k].data as Float32Array, b[k].data as Float32Array];
        const diff = x.reduce((d, v, i) => Math.max(d, Math.abs(v - y[i])), 0);
        assert.ok(diff < 1e-4, `${k}: ${diff}`);
      }
    }
  });

  describe('constant affine steps folded into Convs', () => {
    const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

    it('PP-OCRv4 rec: the 56 learnable affine blocks (93 Mul/Add passes) go, outputs within 1e-5', async () => {
      const m = loadModel(MODELS.rec);
      upgradeOpset(m, 13);
      const count = (op: string) => m.graph.nodes.filter((n) => n.op_type === op).length;
      const [mul, add] = [count('Mul'), count('Add')];
      const { folded } = foldAffineIntoConvs(m);
      const removed = folded.reduce((s, f) => s + f.nodes.length, 0);
      assert.equal(removed, mul - count('Mul') + add - count('Add'));
      assert.equal(mul - count('Mul'), 53); // 28 after a Conv, 25 before one (3 hard-swish outputs feed a SE block, not a Conv)
      assert.equal(add - count('Add'), 40); // after every Conv's Mul; before the Convs without padding
      const feeds = FEEDS.rec();
      const [a, b] = [await runModel(MODELS.rec, feeds), await runModel(m.toBytes(), feeds)];
      for (const k of Object.keys(a)) assert.ok(maxDiff(a[k].data as Float32Array, b[k].data as Float32Array) < 1e-5, k);
    });

    it('folds per-channel steps after, scalar steps before (padded: the Add stays as b/a), leaves shape-changing ones', async () => {
      const f = (name: string, dims: number[], values: number[]) => ({ name, type: DataType.FLOAT, dims, data: Float32Array.from(values) });
      const w1 = Array.from({ length: 3 * 2 * 9 }, (_, i) => Math.sin(i));
      const w2 = Array.from({ length: 2 * 3 }, (_, i) => Math.cos(i));
      const grid = Array.from({ length: 50 }, (_, i) => 1 + (i % 7) / 10);
      const bytes = tinyModel({
        inputs: [{ name: 'x', shape: [1, 2, 5, 5] }],
        outputs: ['y'],
        nodes: [
          { op: 'Mul', inputs: ['s', 'x'], outputs: ['a'] }, { op: 'Add', inputs: ['a', 't'], outputs: ['b'] },
          { op: 'Conv', inputs: ['b', 'w1', 'b1'], outputs: ['c'], attrs: [makeAttribute('pads', [1, 1, 1, 1])] },
          { op: 'Mul', inputs: ['c', 'pc'], outputs: ['d'] }, { op: 'Add', inputs: ['pd', 'd'], outputs: ['e'] },
          { op: 'Relu', inputs: ['e'], outputs: ['r'] }, { op: 'Add', inputs: ['r', 'u'], outputs: ['g'] },
          { op: 'Conv', inputs: ['g', 'w2'], outputs: ['h'] },
          { op: 'Mul', inputs: ['h', 'grid'], outputs: ['y'] },
        ],
        initializers: [f('s', [1], [0.5]), f('t', [1], [0.3]), f('w1', [3, 2, 3, 3], w1), f('b1', [3], [0.1, -0.2, 0.3]),
          f('pc', [1, 3, 1, 1], [2, -1, 0.5]), f('pd', [3, 1, 1], [0.1, 0.2, 0.3]), f('u', [], [0.25]), f('w2', [2, 3, 1, 1], w2), f('grid', [1, 2, 5, 5], grid)],
      });
      const m = loadModel(bytes);
      const { folded } = foldAffineIntoConvs(m);
      assert.deepEqual(folded.map((x) => x.nodes.length), [3, 1]);
      assert.deepEqual(m.graph.nodes.map((n) => n.op_type), ['Add', 'Conv', 'Relu', 'Conv', 'Mul']);
      const ort = await import('onnxruntime-node');
      const x = new ort.Tensor('float32', Float32Array.from({ length: 50 }, (_, i) => Math.sin(3 * i)), [1, 2, 5, 5]);
      const [a, b] = [await runModel(bytes, { x }), await runModel(m.toBytes(), { x })];
      assert.ok(maxDiff(a.y.data as Float32Array, b.y.data as Float32Array) < 1e-5);
    });
  });

  describe('layer selection', () => {
    const det = loadModel(MODELS.det);

    it('finds the AMCT layer set: Conv, ConvTranspose, GlobalAveragePool on det', () => {
      const { layers } = selectLayers(det);
      const counts: Record<string, number> = {};
      for (const l of layers) counts[l.opType] = (counts[l.opType] ?? 0) + 1;
      assert.deepEqual(counts, { Conv: 62, GlobalAveragePool: 10, ConvTranspose: 2 });
      assert.ok(layers.filter((l) => l.opType === 'ConvTranspose').every((l) => l.weightAxis === 1));
    });

    it('disable_names takes exact names and globs; a pattern matching nothing is an error listing layers', () => {
      const { layers, skipped } = selectLayers(det, ['p2o.Conv.0', 'p2o.ConvTranspose.*']);
      assert.equal(layers.length, 71);
      assert.deepEqual(skipped.map((s) => s.name).sort(), ['p2o.Conv.0', 'p2o.ConvTranspose.0', 'p2o.ConvTranspose.2'].sort());
      assert.throws(() => selectLayers(det, ['p2o.Conv.999', 'conv*']), /disable_names: "p2o.Conv.999", "conv\*" match no quantizable layer; quantizable layers are "p2o.Conv.0"/);
    });

    it('leaves layers that share a weight in float', () => {
      const m = loadModel(tinyModel({
        inputs: [{ name: 'x', shape: [2, 4] }],
        outputs: ['z'],
        nodes: [{ op: 'MatMul', inputs: ['x', 'w'], outputs: ['y'] }, { op: 'MatMul', inputs: ['y', 'w'], outputs: ['z'] }],
        initializers: [{ name: 'w', type: DataType.FLOAT, dims: [4, 4], data: new Float32Array(16).fill(0.5) }],
      }));
      const { layers, skipped } = selectLayers(m);
      assert.equal(layers.length, 0);
      assert.deepEqual(skipped.map((s) => s.reason), ['weight shared with another layer', 'weight shared with another layer']);
    });
  });

  it('a zero bias made by ConstantOfShape (TF/Keras exporters) becomes an initializer: the Conv is selected and its BatchNorm folds; a ConstantOfShape feeding data stays a node', async () => {
    const g = new GraphBuilder('cos-bias', 7);
    g.input('x', DataType.FLOAT, [1, 4, 8, 8]);
    g.gaussian('w', [6, 4, 3, 3], 0.3);
    g.constant('bias_shape', DataType.INT64, [1], BigInt64Array.of(6n));
    g.node('ConstantOfShape', ['bias_shape'], {}, { outputs: ['zero_bias'], name: 'zeros' });
    g.node('Conv', ['x', 'w', 'zero_bias'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { outputs: ['c'], name: 'conv' });
    g.gaussian('gamma', [6], 0.2, 1);
    g.gaussian('beta', [6], 0.1);
    g.gaussian('mean', [6], 0.1);
    g.constant('var', DataType.FLOAT, [6], Float32Array.from({ length: 6 }, (_, i) => 0.5 + i / 10));
    g.node('BatchNormalization', ['c', 'gamma', 'beta', 'mean', 'var'], {}, { outputs: ['b'], name: 'bn' });
    g.constant('act_shape', DataType.INT64, [4], BigInt64Array.of(1n, 6n, 8n, 8n));
    g.node('ConstantOfShape', ['act_shape'], {}, { outputs: ['offset'], name: 'offset_zeros' });
    g.node('Add', ['b', 'offset'], {}, { outputs: ['y'], name: 'add' });
    g.output('y', DataType.FLOAT, [1, 6, 8, 8]);
    const model = loadModel(encodeModel(g.model({ opset: 13, irVersion: 7 })));
    assert.equal(selectLayers(model, []).layers.length, 0, 'before: the bias is not a constant the quantizer reads');
    const prepared = prepareFloat(model);
    const ops = prepared.graph.nodes.map((n) => n.op_type);
    assert.deepEqual(ops.filter((o) => o === 'ConstantOfShape').length, 1, 'the activation-shaped ConstantOfShape stays');
    assert.ok(!ops.includes('BatchNormalization'), 'the BatchNorm folded into the Conv');
    assert.deepEqual(selectLayers(prepared, []).layers.map((l) => l.name), ['conv']);
    const x = { x: new ort.Tensor('float32', randomFloats(256, 3), [1, 4, 8, 8]) };
    const [a, b] = [(await runModel(model.toBytes(), x)).y.data as Float32Array, (await runModel(prepared.toBytes(), x)).y.data as Float32Array];
    assert.ok(Math.max(...a.map((v, i) => Math.abs(v - b[i]))) < 1e-4, 'outputs unchanged');
  });
});
