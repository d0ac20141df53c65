import { strict as assert } from 'assert';
import { LayerComparison, Model, compareModels, loadModel, quantizeW8A8 } from '../../sdk';
import { localErrorModel, worstFirst } from '../../sdk/quantize/attribution';
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

  it('measures every main-graph layer; the first layer (fed the model input) has local error = accumulated error', () => {
    const measured = rows.filter((r) => r.opType !== 'output');
    assert.equal(measured.length, layers.length);
    assert.ok(measured.every((r) => Number.isFinite(r.localSqnrDb)), 'every layer has a local SQNR');
    // the first layer's input is the model input itself: its quantized copy computes exactly what the quantized model does
    const first = measured[0];
    assert.ok(Math.abs(first.localSqnrDb - first.sqnrDb) < 1e-6, `${first.layer}: local ${first.localSqnrDb} vs accumulated ${first.sqnrDb}`);
    // downstream, error carried from upstream makes the accumulated error larger than the layer's own
    const later = measured.slice(5);
    assert.ok(later.filter((r) => r.sqnrDb < r.localSqnrDb).length > later.length / 2, 'accumulated SQNR is below local SQNR for most later layers');
  });

  it('finds a layer whose weight scale was deliberately broken, though the accumulated error is worst elsewhere', async () => {
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
    assert.ok(worst[0].localSqnrDb < 20, `broken layer local SQNR ${worst[0].localSqnrDb}`);
    const byAccumulated = [...b].filter((r) => r.opType !== 'output').sort((x, y) => x.sqnrDb - y.sqnrDb);
    console.log(`      broken ${target}: local ${worst[0].localSqnrDb.toFixed(1)} dB (next worst ${worst[1].layer} ${worst[1].localSqnrDb.toFixed(1)}); worst accumulated ${byAccumulated[0].layer} ${byAccumulated[0].sqnrDb.toFixed(1)} dB`);
    assert.notEqual(byAccumulated[0].layer, target, 'the accumulated error alone points elsewhere (downstream): attribution is what names the culprit');
    // every other layer's own error is what it was before the break (its input is the float one)
    const before = new Map(rows.map((r) => [r.layer, r.localSqnrDb]));
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
