import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import {
  BIAS_LIMIT, DataType, Model, WEIGHT_SCALE_FLOOR, auditQuantizedModel, loadModel, makeTensor, quantizeW8A8,
} from '../../sdk';
import { makeAttribute } from '../../sdk/onnx/graph';
import { newNode } from '../../sdk/onnx/proto';
import { settleWeightScales } from '../../sdk/quantize/int32-bias';
import { quantizeWeight } from '../../sdk/quantize/qdq';
import { GraphBuilder } from '../corpus/builder';
import { MODELS, randomFloats, tempDir } from '../helpers';
import { DATA, detPages, recBatches } from '../ocr-fixtures';
import { UNAUDITED } from '../audit-hook';

/** The int32 bias constants a saved QDQ model gives each layer: integers and their scales, read back from the file. */
function writtenBiases(model: Model): Map<string, { int32: Int32Array; scale: Float32Array }> {
  const g = model.graph;
  const out = new Map<string, { int32: Int32Array; scale: Float32Array }>();
  for (const n of g.nodes) {
    if (!['Conv', 'ConvTranspose', 'Gemm'].includes(n.op_type ?? '') || !n.input[2]) continue;
    const dq = g.producer(n.input[2]);
    if (dq?.op_type !== 'DequantizeLinear') continue;
    const int32 = g.constantValue(dq.input[0])!;
    assert.equal(int32.type, DataType.INT32);
    out.set(n.name!, { int32: int32.data as Int32Array, scale: g.constantValue(dq.input[1])!.data as Float32Array });
  }
  return out;
}

/**
 * What the issue asks of every written bias: not at the int32 limits, and equal to the float
 * bias within half a step (float64 arithmetic on what was stored).
 */
function assertBiasesExact(float: Model, written: Model, label: string): number {
  const biases = writtenBiases(written);
  assert.ok(biases.size > 0, `${label}: no int32 bias found`);
  let checked = 0;
  for (const [layer, { int32, scale }] of biases) {
    const node = float.graph.node(layer)!;
    const b = float.graph.constantValue(node.input[2])!.data as Float32Array;
    for (let c = 0; c < b.length; c++) {
      const s = scale.length > 1 ? scale[c] : scale[0];
      assert.ok(Math.abs(int32[c]) < BIAS_LIMIT + 1, `${label} ${layer}[${c}]: int32 bias ${int32[c]} beyond ±2^30`);
      assert.ok(Math.abs(int32[c] * s - b[c]) <= s / 2 * (1 + 1e-6), `${label} ${layer}[${c}]: bias ${int32[c]}·${s} = ${int32[c] * s}, float ${b[c]}`);
      checked++;
    }
  }
  return checked;
}

/** One Conv whose channel 1 is dead (weights ~1e-40, as BN folding with γ ≈ 0 leaves) and channel 2 carries a bias far beyond its weight range. */
function deadChannelConv(): Model {
  const b = new GraphBuilder('dead-channel', 3);
  const x = b.input('x', DataType.FLOAT, [1, 2, 8, 8]);
  const w = randomFloats(3 * 2 * 3 * 3, 5, -0.5, 0.5);
  for (let i = 18; i < 36; i++) w[i] = 1e-40 * (i % 2 ? 1 : -1);
  for (let i = 36; i < 54; i++) w[i] *= 1e-6;
  const conv = b.op('Conv', [x, b.constant('w', DataType.FLOAT, [3, 2, 3, 3], w), b.constant('b', DataType.FLOAT, [3], [0.1, -0.45, 2.5])], { pads: [1, 1, 1, 1] }, 'conv');
  b.output(b.op('Relu', [conv]), DataType.FLOAT, [1, 3, 8, 8]);
  return new Model(b.model({ opset: 13, irVersion: 7 }));
}

describe('int32 biases and weight scales (no saturation, no denormals)', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('settleWeightScales: a dead channel goes to the floor or its bias range (weights 0), a large bias raises only its channel, per-tensor raises all', () => {
    const dims = [3, 4];
    const data = Float32Array.of(0.5, -0.25, 0.1, 0.3, 1e-40, -1e-40, 0, 1e-41, 1e-3, -2e-3, 5e-4, 0);
    const q = quantizeWeight(data, dims, 0);
    assert.ok(q.scale[1] < 1e-40, 'precondition: the dead channel gets a denormal scale');
    const before = Float32Array.from(q.scale);
    const inputScale = 0.02;
    const bias = Float32Array.of(0.1, 0, 3e4);
    const raised = settleWeightScales({ data, dims, axis: 0 }, q, { qmin: -128, qmax: 127, symmetric: true }, { bias, inputScale });
    assert.deepEqual(raised.map((r) => [r.channel, r.reason]), [[1, 'scale floor'], [2, 'bias range']]);
    assert.equal(q.scale[0], before[0], 'channel 0 untouched');
    assert.equal(q.scale[1], WEIGHT_SCALE_FLOOR);
    assert.deepEqual([...q.int8.subarray(4, 8)], [0, 0, 0, 0]);
    // channel 2: the bias needs s_w ≥ |b| / (s_x · 2^30); its weights are requantized on that grid
    const need = 3e4 / (inputScale * BIAS_LIMIT);
    assert.ok(q.scale[2] >= need && q.scale[2] < need * 1.001, `scale ${q.scale[2]} vs needed ${need}`);
    assert.ok(Math.abs(3e4 / Math.fround(q.scale[2] * inputScale)) <= BIAS_LIMIT);
    for (let i = 8; i < 12; i++) assert.equal(q.int8[i], Math.max(-128, Math.min(127, Math.round(data[i] / q.scale[2]))));
    const t = quantizeWeight(data, dims, 0, { perChannel: false });
    settleWeightScales({ data, dims, axis: 0 }, t, { qmin: -128, qmax: 127, symmetric: true }, { bias, inputScale, perTensor: true });
    assert.ok(t.scale.every((s) => s === t.scale[2]) && t.scale[0] >= need, 'per tensor: one scale, raised for all');
  });

  it('unsigned symmetric weights (uint8, zero point 128): a raised channel keeps the grid middle as its zero point', () => {
    const data = Float32Array.of(0.5, -0.25, 1e-3, -2e-3);
    const q = quantizeWeight(data, [2, 2], 0, { signed: false });
    assert.ok(q.int8 instanceof Uint8Array && q.zeroPoint.every((z) => z === 128), 'precondition: uint8 grid, zero point 128');
    const raised = settleWeightScales({ data, dims: [2, 2], axis: 0 }, q, { qmin: 0, qmax: 255, symmetric: true }, { bias: Float32Array.of(0, 3e4), inputScale: 0.02 });
    assert.deepEqual(raised.map((r) => r.channel), [1]);
    assert.deepEqual(Array.from(q.zeroPoint), [128, 128]);
    for (let i = 2; i < 4; i++) assert.equal(q.int8[i], Math.round(data[i] / q.scale[1]) + 128);
  });

  it('asymmetric weights: a raised channel gets the zero point of its range on the new grid', () => {
    const data = Float32Array.of(0.2, 0.4, 0.6, 0.8);
    const q = { int8: new Int8Array(4), scale: Float32Array.of(1e-35), zeroPoint: Int32Array.of(-128) };
    settleWeightScales({ data, dims: [1, 4], axis: 0 }, q, { qmin: -128, qmax: 127, symmetric: false }, { bias: Float32Array.of(1e3), inputScale: 1e-3 });
    assert.equal(q.zeroPoint[0], -128, 'range [0, 0.8] starts at qmin');
    for (let i = 0; i < 4; i++) assert.equal(q.int8[i], Math.min(127, Math.round(data[i] / q.scale[0]) - 128));
  });

  it('a Conv with a dead channel and a large bias: written biases exact, ORT output = float output within one activation step', async () => {
    const float = deadChannelConv();
    const feeds = [0, 1, 2, 3].map((s) => ({ x: new ort.Tensor('float32', randomFloats(128, 10 + s, 0, 1), [1, 2, 8, 8]) }));
    const r = await quantizeW8A8(float, feeds);
    const file = path.join(dir, 'dead.onnx');
    r.qdq.save(file);
    const written = loadModel(file);
    assert.deepEqual(auditQuantizedModel(written), []);
    assert.equal(assertBiasesExact(r.float, written, 'dead-channel conv'), 3);
    assert.deepEqual(r.layers[0].raisedScales?.map((c) => c.channel), [1, 2]);
    // the dead channel computes its bias −0.45 → ReLU 0; channel 2 computes 2.5 + ε (it saturated to ~0 before)
    const s = await ort.InferenceSession.create(file);
    const f = await ort.InferenceSession.create(r.float.toBytes());
    const y = (await s.run(feeds[0])).y ?? Object.values(await s.run(feeds[0]))[0];
    const yf = Object.values(await f.run(feeds[0]))[0];
    const outStep = 2.6 / 255;
    const err = Math.max(...Array.from(y.data as Float32Array, (v, i) => Math.abs(v - (yf.data as Float32Array)[i])));
    assert.ok(err < 2 * outStep, `max |int8 − fp32| = ${err}`);
  });

  it('the audit names saturated biases and scales below the floor in a model written without the fix', () => {
    const float = deadChannelConv();
    const m = float.clone();
    const g = m.graph;
    // what quantizers without the fix write: scale ~2.5e-42 for the dead channel, bias pinned at the int32 limits
    g.proto.initializer.push(
      makeTensor('w_int8', DataType.INT8, [3, 2, 3, 3], new Int8Array(54)),
      makeTensor('w_scale', DataType.FLOAT, [3], Float32Array.of(0.004, 2.5e-42, 1e-8)),
      makeTensor('zp8', DataType.INT8, [3], new Int8Array(3)),
      makeTensor('b_int32', DataType.INT32, [3], Int32Array.of(5, -(2 ** 31), 2 ** 31 - 1)),
      makeTensor('b_scale', DataType.FLOAT, [3], Float32Array.of(1e-4, 5e-44, 1e-10)),
      makeTensor('zp32', DataType.INT32, [3], new Int32Array(3)),
    );
    const axis0 = [makeAttribute('axis', 0)];
    g.proto.node.unshift(
      newNode({ op_type: 'DequantizeLinear', name: 'dq_w', input: ['w_int8', 'w_scale', 'zp8'], output: ['w_dq'], attribute: axis0 }),
      newNode({ op_type: 'DequantizeLinear', name: 'dq_b', input: ['b_int32', 'b_scale', 'zp32'], output: ['b_dq'], attribute: axis0 }),
    );
    const conv = g.node('conv')!;
    conv.input[1] = 'w_dq';
    conv.input[2] = 'b_dq';
    g.invalidate();
    UNAUDITED.add(m.proto);
    const kinds = auditQuantizedModel(m).map((f) => `${f.kind} ${f.node} ${f.count}`).sort();
    assert.deepEqual(kinds, ['denormal bias scale dq_b 1', 'saturated bias dq_b 2', 'weight scale below floor dq_w 1']);
  });

  for (const which of ['rec', 'det'] as const) {
    it(`PP-OCRv4 ${which} default W8A8: no saturated bias, no scale below ${WEIGHT_SCALE_FLOOR} in the saved file, every bias within half a step`, async () => {
      const calib = which === 'rec' ? recBatches(path.join(DATA, 'rec', 'calib')).slice(0, 4) : detPages().slice(0, 1);
      const r = await quantizeW8A8(loadModel(MODELS[which]), calib);
      const file = path.join(dir, `${which}.onnx`);
      r.qdq.save(file);
      const written = loadModel(file);
      assert.deepEqual(auditQuantizedModel(written), []);
      const raised = r.layers.flatMap((l) => l.raisedScales ?? []);
      const checked = assertBiasesExact(r.float, written, which);
      console.log(`      ${which}: ${checked} biases exact; ${raised.length} channel scales raised (${raised.filter((c) => c.reason === 'scale floor').length} to the floor)`);
      assert.ok(raised.length > 0, 'the shipped models have dead channels: some scales must have been raised');
    });
  }
});
