import { strict as assert } from 'assert';
import * as ort from 'onnxruntime-node';
import { DataType, Model, loadModel, metrics, qparamsFromRange, quantizeW8A8 } from '../../sdk';
import { consumerDomain } from '../../sdk/quantize/consumer-domain';
import { applyQdq } from '../../sdk/quantize/qdq';
import { selectLayers } from '../../sdk/quantize/layers';
import { GraphBuilder } from '../corpus/builder';
import { MODELS, randomFloats } from '../helpers';
import { detPages } from '../ocr-fixtures';

const F = DataType.FLOAT;

/** x → Conv (wide output range) → HardSwish written out as x·Clip(x + 3, 0, 6)/6 → Conv. */
function convHardSwishConv(): Model {
  const b = new GraphBuilder('conv-hardswish', 7);
  const x = b.input('x', F, [1, 4, 8, 8]);
  const w1 = randomFloats(8 * 4 * 9, 8, -1, 1);
  // a channel with a large negative bias: the Conv output spans far below −3, where HardSwish is 0
  const c1 = b.op('Conv', [x, b.constant('w1', F, [8, 4, 3, 3], w1), b.constant('b1', F, [8], [0, 0, 0, 0, 0, 0, -60, -25])], { pads: [1, 1, 1, 1] }, 'conv1');
  const add = b.op('Add', [c1, b.constant('three', F, [], [3])]);
  const clip = b.op('Clip', [add, b.constant('zero', F, [], [0]), b.constant('six', F, [], [6])]);
  const hs = b.op('Div', [b.op('Mul', [c1, clip]), b.constant('six_d', F, [], [6])], {}, 'hardswish');
  const c2 = b.op('Conv', [hs, b.constant('w2', F, [4, 8, 1, 1], randomFloats(32, 9, -1, 1)), b.constant('b2', F, [4], [0, 0, 0, 0])], {}, 'conv2');
  b.output(c2, F, [1, 4, 8, 8]);
  return new Model(b.model({ opset: 13, irVersion: 7 }));
}

describe('activation ranges cut to what their readers can tell apart', () => {
  it('consumerDomain: ReLU [0, ∞), Clip [a, b], HardSwish and its written-out form [−3, ∞), HardSigmoid [−β/α, (1−β)/α]; a linear reader or a graph output keeps everything', () => {
    const b = new GraphBuilder('readers');
    const x = b.input('x', F, [1, 4]);
    const t = (name: string) => b.op('Identity', [x], {}, name);
    const relu = t('relu_in');
    b.op('Relu', [relu]);
    const clip = t('clip_in');
    b.op('Clip', [clip, b.constant('lo', F, [], [-1]), b.constant('hi', F, [], [6])]);
    const hs = t('hs_in');
    b.op('HardSwish', [hs]);
    const hsig = t('hsig_in');
    b.op('HardSigmoid', [hsig]);
    const mixed = t('mixed_in');
    b.op('Relu', [mixed]);
    b.op('Sigmoid', [mixed]);
    const written = t('written_in');
    const add = b.op('Add', [written, b.constant('k', F, [], [3])]);
    b.op('Mul', [written, b.op('Clip', [add, b.constant('z', F, [], [0]), b.constant('s', F, [], [6])])]);
    // the same pattern with Clip's lower bound 1: the product is not constant below −2, so no cut
    const shifted = t('shifted_in');
    const add2 = b.op('Add', [shifted, b.constant('k2', F, [], [3])]);
    b.op('Mul', [shifted, b.op('Clip', [add2, b.constant('one', F, [], [1]), b.constant('s2', F, [], [6])])]);
    const out = t('out');
    b.op('Relu', [out]);
    b.output(out, F, [1, 4]);
    const g = new Model(b.model({ opset: 14, irVersion: 7 })).graph;
    const d = (name: string) => consumerDomain(g, g.node(name)!.output[0]);
    assert.deepEqual(d('relu_in'), [0, Infinity]);
    assert.deepEqual(d('clip_in'), [-1, 6]);
    assert.deepEqual(d('hs_in'), [-3, Infinity]);
    assert.deepEqual(d('hsig_in').map((v) => Math.round(v * 1e6) / 1e6), [-2.5, 2.5]);
    assert.deepEqual(d('mixed_in'), [-Infinity, Infinity]);
    assert.deepEqual(d('written_in'), [-3, Infinity]);
    assert.deepEqual(d('shifted_in'), [-Infinity, Infinity]);
    assert.deepEqual(d('out'), [-Infinity, Infinity]);
  });

  it('a Conv output read by HardSwish gets the range [−3, max]: the HardSwish output error drops, since the cut is exact', async () => {
    const float = convHardSwishConv();
    const feeds = [0, 1, 2, 3].map((s) => ({ x: new ort.Tensor('float32', randomFloats(256, 20 + s, -1, 1), [1, 4, 8, 8]) }));
    const r = await quantizeW8A8(float, feeds);
    const cut = r.narrowed.find((n) => n.tensor === r.float.graph.node('conv1')!.output[0]);
    assert.ok(cut, `conv1's output narrowed (narrowed: ${r.narrowed.map((n) => n.tensor).join(', ')})`);
    assert.ok(cut!.from[0] < -20, `calibrated range starts at ${cut!.from[0]}`);
    assert.ok(Math.abs(cut!.to[0] + 3) < 0.05, `cut range starts at ${cut!.to[0]} (−3 on the uint8 grid)`);
    assert.equal(cut!.to[1], cut!.from[1]);
    // the same model with the uncut range, for comparison
    const uncut = r.float.clone();
    const activations = new Map(r.activations);
    activations.set(cut!.tensor, qparamsFromRange([cut!.from[0]], [cut!.from[1]], { numBits: 8, signed: false, symmetric: false, narrowRange: false, perChannel: false, channelAxis: 1 }));
    applyQdq(uncut, selectLayers(uncut, []).layers, { activations });
    const hsOf = async (m: Model) => {
      const s = await ort.InferenceSession.create(m.toBytes());
      const out: Float32Array[] = [];
      for (const f of feeds) out.push(Object.values(await s.run(f))[0].data as Float32Array);
      await s.release();
      return out;
    };
    const [ref, narrowed, wide] = [await hsOf(r.float), await hsOf(r.qdq), await hsOf(uncut)];
    const sqnr = (q: Float32Array[]) => {
      const acc = new metrics.OutputErrorAccumulator();
      ref.forEach((v, i) => acc.add(v, q[i]));
      return acc.result().sqnrDb;
    };
    const [a, b] = [sqnr(wide), sqnr(narrowed)];
    console.log(`      output SQNR: full calibrated range ${a.toFixed(2)} dB, cut to HardSwish's domain ${b.toFixed(2)} dB`);
    assert.ok(b > a + 3, `narrowed ${b.toFixed(2)} dB vs full range ${a.toFixed(2)} dB`);
  });

  it('a Conv whose output reaches the next layer only through Log gets no output Q (a log-magnitude front end keeps its small values); through ReLU it does', async () => {
    const build = (op: 'Log' | 'Relu') => {
      const b = new GraphBuilder(`requant-${op}`, 9);
      const x = b.input('x', F, [1, 2, 8, 8]);
      const c1 = b.op('Conv', [x, b.constant('w1', F, [4, 2, 3, 3], randomFloats(72, 10, -0.5, 0.5)), b.constant('b1', F, [4], [0, 0, 0, 0])], { pads: [1, 1, 1, 1] }, 'conv1');
      const mid = op === 'Log' ? b.op('Log', [b.op('Add', [b.op('Mul', [c1, c1]), b.constant('one', F, [], [1e-3])])]) : b.op('Relu', [c1]);
      b.output(b.op('Conv', [mid, b.constant('w2', F, [2, 4, 1, 1], randomFloats(8, 11, -0.5, 0.5))], {}, 'conv2'), F, [1, 2, 8, 8]);
      return new Model(b.model({ opset: 13, irVersion: 7 }));
    };
    const feeds = [0, 1].map((s) => ({ x: new ort.Tensor('float32', randomFloats(128, 30 + s, -1, 1), [1, 2, 8, 8]) }));
    for (const op of ['Log', 'Relu'] as const) {
      const r = await quantizeW8A8(build(op), feeds);
      const g = r.qdq.graph;
      const out = r.float.graph.node('conv1')!.output[0];
      const requantized = g.consumers(out).some((n) => n.op_type === 'QuantizeLinear');
      assert.equal(requantized, op === 'Relu', `${op}: conv1's output ${requantized ? 'has' : 'has no'} Q`);
      // conv2's input (after Log or ReLU) is quantized either way
      assert.ok(g.consumers(r.float.graph.node('conv2')!.input[0]).some((n) => n.op_type === 'QuantizeLinear'));
    }
  });

  it('PP-OCRv4 det: Conv outputs read by HardSwish are cut to [−3, max] (p2o.Add.11: [−265, 198] before)', async () => {
    const r = await quantizeW8A8(loadModel(MODELS.det), detPages().slice(0, 1));
    const cut = r.narrowed.find((n) => n.tensor === 'p2o.Add.11');
    assert.ok(cut, 'p2o.Add.11 narrowed');
    assert.ok(cut!.from[0] < -100 && Math.abs(cut!.to[0] + 3) < 0.05, JSON.stringify(cut));
    assert.ok(r.narrowed.length >= 20, `${r.narrowed.length} tensors narrowed`);
  });
});
