/**
 * The trainable executor: forward passes equal ONNX Runtime's on the PP-OCR direction
 * classifier (MobileNetV3: depthwise Conv, HardSigmoid, pooling, opset 9 Clip/Slice/Reshape)
 * and on the MNIST CNN; convolution gradients are right on the backend in use (wasm here,
 * whose missing Conv2DBackpropFilter kernel the executor replaces); training learns.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { QuantbookError, TrainableGraph, bundledModelPath, evaluate, fit, initBackend, loadModel, readCheckpoint } from '../../sdk';
import { conv2d } from '../../sdk/train/conv';
import { ocrData } from '../../sdk';
import { CNN, SAMPLE_SHAPE, cnnBatch, mnist } from '../cnn-fixtures';
import { MODELS, tempDir } from '../helpers';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function compareWithOrt(file: string, feeds: Record<string, ort.Tensor>): Promise<number> {
  const s = await ort.InferenceSession.create(file);
  const ref = await s.run(feeds);
  await s.release();
  const exec = TrainableGraph.fromModel(loadModel(file));
  const got = await exec.run(Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, { data: t.data as Float32Array, dims: t.dims }])));
  exec.dispose();
  return Math.max(...Object.keys(ref).map((k) => maxAbsDiff(ref[k].data as Float32Array, got[k].data)));
}

describe('trainable executor', () => {
  before(() => initBackend());

  it('equals ONNX Runtime on PP-OCR cls (16 text lines)', async () => {
    const { x } = ocrData.clsSet();
    const n = 16;
    const per = x.dims.slice(1).reduce((a, b) => a * b, 1);
    const feeds = { x: new ort.Tensor('float32', (x.data as Float32Array).slice(0, n * per), [n, ...x.dims.slice(1)]) };
    const diff = await compareWithOrt(bundledModelPath('cls'), feeds);
    console.log(`      cls: max |executor − ORT| = ${diff.toExponential(2)} (probabilities)`);
    assert.ok(diff < 1e-4, `max abs diff ${diff}`);
  });

  it('equals ONNX Runtime on the MNIST CNN (256 digits)', async () => {
    const diff = await compareWithOrt(CNN, cnnBatch(mnist().test, 0, 256));
    console.log(`      MNIST CNN: max |executor − ORT| = ${diff.toExponential(2)} (logits)`);
    assert.ok(diff < 1e-4, `max abs diff ${diff}`);
  });

  it('refuses a model with unsupported ops, listing them and what is supported', () => {
    assert.throws(() => TrainableGraph.fromModel(loadModel(MODELS.det)), (e: QuantbookError) =>
      e.code === 'UNSUPPORTED' && /Resize \(6 nodes\)/.test(e.message) && /ConvTranspose \(2 nodes\)/.test(e.message) && /supports .*BatchNormalization/.test(e.message));
  });

  it('computes exact convolution gradients (strided, dilated, grouped, depthwise) on this backend', () => {
    // a loss linear in x and w: central differences are exact up to float rounding
    const cases: Array<[number, number, number, number, number]> = [[1, 3, 4, 2, 1], [1, 3, 4, 1, 2], [3, 3, 6, 2, 1], [3, 3, 3, 1, 1], [2, 4, 6, 1, 1]];
    for (const [group, cin, cout, stride, dilation] of cases) {
      const x = tf.variable(tf.randomNormal([2, cin, 9, 8], 0, 1, 'float32', 1));
      const w = tf.variable(tf.randomNormal([cout, cin / group, 3, 3], 0, 1, 'float32', 2));
      const attrs = { strides: [stride, stride] as [number, number], dilations: [dilation, dilation] as [number, number], pads: [1, 0, 1, 2] as [number, number, number, number], group };
      const r = tf.tidy(() => tf.randomNormal(conv2d(x as tf.Tensor4D, w as tf.Tensor4D, undefined, attrs).shape, 0, 1, 'float32', 3));
      const loss = () => conv2d(x as tf.Tensor4D, w as tf.Tensor4D, undefined, attrs).mul(r).sum() as tf.Scalar;
      const { grads } = tf.variableGrads(loss);
      for (const v of [x, w]) {
        const base = v.dataSync().slice();
        const g = grads[v.name].dataSync();
        for (const i of [0, 7, base.length - 1]) {
          const at = (d: number) => { const p = base.slice(); p[i] += d; v.assign(tf.tensor(p, v.shape)); return loss().dataSync()[0]; };
          const numeric = (at(0.5) - at(-0.5)) / 1;
          v.assign(tf.tensor(base, v.shape));
          assert.ok(Math.abs(numeric - g[i]) <= 2e-3 * Math.max(1, Math.abs(numeric)), `group ${group} stride ${stride} dilation ${dilation} ${v === x ? 'x' : 'w'}[${i}]: autodiff ${g[i]} vs numeric ${numeric}`);
        }
      }
      tf.dispose([x, w, r, ...Object.values(grads)]);
    }
  });

  it('trains: the CNN from its seeded init goes from chance to > 80% in one epoch on 2,000 digits; history and checkpoints', async function () {
    const dir = tempDir();
    const { buildCnn } = await import('../../data/make-mnist-cnn');
    const graph = TrainableGraph.fromModel(buildCnn());
    const { train, test } = mnist();
    const small = { images: train.images.subarray(0, 2000 * 784), labels: train.labels.subarray(0, 2000), count: 2000 };
    const before = await evaluate(graph, test, { sampleShape: SAMPLE_SHAPE, limit: 500 });
    const result = await fit(graph, { train: small, test: { ...test, count: 500 }, epochs: 1, batchSize: 32, learningRate: 2e-3, sampleShape: SAMPLE_SHAPE, checkpointDir: dir });
    const row = result.history[0];
    console.log(`      from scratch: test accuracy ${(100 * before).toFixed(1)}% → ${(100 * row.testAccuracy).toFixed(1)}% (train loss ${row.trainLoss.toFixed(3)}, ${row.seconds.toFixed(1)} s)`);
    assert.ok(before < 0.3 && row.testAccuracy > 0.8, `accuracy ${before} → ${row.testAccuracy}`);
    // Arrow history
    const file = path.join(dir, 'history.arrow');
    result.writeHistory(file);
    const { tableFromIPC } = await import('apache-arrow');
    const table = tableFromIPC(fs.readFileSync(file));
    assert.deepEqual(table.schema.fields.map((f) => f.name), ['epoch', 'steps', 'train_loss', 'train_accuracy', 'test_accuracy', 'seconds', 'checkpoint']);
    assert.equal(table.get(0)!.steps, 62);
    // the checkpoint restores the trained model exactly (BN running statistics included)
    const ckpt = readCheckpoint(row.checkpoint!);
    assert.ok(ckpt.values.has('bn1.running_mean') && ckpt.values.has('conv2.weight'));
    const fresh = TrainableGraph.fromModel(buildCnn());
    fresh.restore(ckpt.values);
    const x = cnnBatch(test, 0, 64).x;
    const a = await graph.run({ x: { data: x.data as Float32Array, dims: x.dims } });
    const b = await fresh.run({ x: { data: x.data as Float32Array, dims: x.dims } });
    assert.equal(maxAbsDiff(a.logits.data, b.logits.data), 0);
    // and toModel() writes them into ONNX that ORT runs identically
    const s = await ort.InferenceSession.create(graph.toModel().toBytes());
    const viaOrt = (await s.run({ x })).logits.data as Float32Array;
    await s.release();
    assert.ok(maxAbsDiff(viaOrt, a.logits.data) < 1e-4);
    graph.dispose();
    fresh.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
