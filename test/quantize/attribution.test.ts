import { strict as assert } from 'assert';
import { LayerComparison, Model, Runner, compareModels, loadModel, metrics, quantizeW8A8 } from '../../sdk';
import { localErrorModel, worstFirst } from '../../sdk/quantize/attribution';
import { consumerDomain } from '../../sdk/quantize/consumer-domain';
import { MODELS } from '../helpers';
import { clsBatch } from '../ocr-fixtures';

/** The DequantizeLinear that gives `layer` its integer weight, in a QDQ model. */
function weightDq(m: Model, layer: string) {
  const g = m.graph;
  const dq = g.producer(g.node(layer)!.input[1]);
  assert.equal(dq?.op_type, 'DequantizeLinear');
  return dq!;
}

describe('per-layer error attribution (the error each layer adds on its own)', () => {
  let float: Model;
  let qdq: Model;
  let layers: Array<{ layer: string; opType: string; tensor: string }>;
  let rows: LayerComparison[];
  const data = () => {
    const { x } = clsBatch();
    return [{ x }];
  };

  before(async () => {
    const r = await quantizeW8A8(loadModel(MODELS.cls), data());
    float = r.float;
    qdq = r.qdq;
    layers = r.layers.map((l) => ({ layer: l.name, opType: l.opType, tensor: float.graph.node(l.name)!.output[0] }));
    rows = await compareModels(float, qdq, layers, data());
  });

  it('measures every main-graph layer; the first layer (fed the model input) has the own error the quantized model shows at its requantized output', async () => {
    const measured = rows.filter((r) => r.opType !== 'output');
    assert.equal(measured.length, layers.length);
    assert.ok(measured.every((r) => Number.isFinite(r.localSqnrDb)), 'every layer has a local SQNR');
    // the first layer's input is the model input itself: its quantized copy computes what the quantized model does,
    // up to the DequantizeLinear after its output Q (read here straight from the quantized model)
    const first = measured[0];
    const g = qdq.graph;
    const q = g.consumers(first.tensor).find((n) => n.op_type === 'QuantizeLinear')!;
    const dq = g.consumers(q.output[0])[0];
    const exposed = await Runner.create(qdq, { expose: [dq.output[0]] });
    const reference = await Runner.create(float, { expose: [first.tensor] });
    const acc = new metrics.OutputErrorAccumulator();
    // values the layer's readers cannot tell apart (below HardSwish's −3) count as equal: the reference is clamped to that domain
    const [lo, hi] = consumerDomain(float.graph, first.tensor);
    for (const f of data()) {
      const ref = ((await reference.run(f)).exposed[first.tensor].data as Float32Array).map((v) => Math.min(hi, Math.max(lo, v)));
      acc.add(ref, (await exposed.run(f)).exposed[dq.output[0]].data as Float32Array);
    }
    await exposed.dispose();
    await reference.dispose();
    const own = acc.result().sqnrDb;
    assert.ok(Math.abs(first.localSqnrDb - own) < 0.05, `${first.layer}: own ${first.localSqnrDb} vs the quantized model's requantized output ${own}`);
    assert.ok(first.localSqnrDb < first.sqnrDb, 'the output quantization adds to the error measured before it');
    // downstream, error carried from upstream makes the accumulated error larger than the layer's own
    const later = measured.slice(5);
    assert.ok(later.filter((r) => r.sqnrDb < r.localSqnrDb).length > later.length / 2, 'accumulated SQNR is below local SQNR for most later layers');
  });

  it('finds a layer whose weight scale was deliberately broken; the layers downstream carry its error but their own error does not move', async () => {
    // break an early layer: its weights dequantize 1.15× too large (a wrong scale, as a buggy exporter would write)
    const target = layers.filter((l) => l.opType === 'Conv')[3].layer;
    const broken = qdq.clone();
    const dq = weightDq(broken, target);
    const g = broken.graph;
    const scale = g.constantValue(dq.input[1])!;
    g.replaceInitializer(dq.input[1], { type: scale.type, dims: scale.dims, data: Float32Array.from(scale.data as Float32Array, (s) => s * 1.15) });
    const b = await compareModels(float, broken, layers, data());
    const worst = worstFirst(b.filter((r) => r.opType !== 'output'));
    assert.equal(worst[0].layer, target, `worst local layer: ${worst[0].layer} (${worst[0].localSqnrDb.toFixed(1)} dB)`);
    const before = new Map(rows.map((r) => [r.layer, r.localSqnrDb]));
    assert.ok(worst[0].localSqnrDb < before.get(target)! - 8, `broken layer own SQNR ${worst[0].localSqnrDb} (was ${before.get(target)})`);
    // downstream, the accumulated error carries the break (it drops) while each layer's own error does not move
    const accBefore = new Map(rows.map((r) => [r.layer, r.sqnrDb]));
    const carried = b.filter((r) => r.opType !== 'output' && r.layer !== target && r.sqnrDb < accBefore.get(r.layer)! - 1);
    console.log(`      broken ${target}: own ${worst[0].localSqnrDb.toFixed(1)} dB (next worst ${worst[1].layer} ${worst[1].localSqnrDb.toFixed(1)}); ${carried.length} downstream layers' accumulated SQNR dropped > 1 dB`);
    assert.ok(carried.length >= 5, `${carried.length} layers carry the break`);
    // every other layer's own error is what it was before the break (its input is the float one)
    for (const r of b) if (r.opType !== 'output' && r.layer !== target) assert.ok(Math.abs(r.localSqnrDb - before.get(r.layer)!) < 1e-6, `${r.layer} local changed`);
  });

  it('the local model is the float model plus one quantized copy per layer; attribution: false skips it', async () => {
    const local = localErrorModel(float, qdq, layers);
    assert.equal(local.localOutputs.size, layers.length);
    assert.deepEqual(local.skipped, []);
    const copies = local.model.graph.nodes.filter((n) => n.name?.endsWith('/local_node'));
    assert.equal(copies.length, layers.length);
    const plain = await compareModels(float, qdq, layers, data(), { attribution: false });
    assert.ok(plain.every((r) => Number.isNaN(r.localSqnrDb)));
    assert.deepEqual(plain.map((r) => r.sqnrDb), rows.map((r) => r.sqnrDb), 'the accumulated error does not depend on attribution');
  });
});
