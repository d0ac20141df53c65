import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType, loadModel, quantizeW8A8 } from '../../sdk';
import { tinyModel } from '../build';
import { makeAttribute } from '../../sdk/onnx/graph';
import { randomFloats, tempDir } from '../helpers';
import { optimizedOpCounts, runAll } from '../ocr-fixtures';

/**
 * Conv → hard-swish as paddle2onnx writes it (Add 3 → Clip 0..6 → Mul by the Conv output →
 * Div 6) → Conv: the chain the 'extended' op set quantizes and then simplifies.
 */
function hardSwishModel(): Uint8Array {
  const f = (name: string, dims: number[], data: Float32Array) => ({ name, type: DataType.FLOAT, dims, data });
  return tinyModel({
    inputs: [{ name: 'x', shape: [1, 4, 12, 12] }],
    outputs: ['out'],
    nodes: [
      { op: 'Conv', inputs: ['x', 'w1', 'b1'], outputs: ['c1'] },
      { op: 'Add', inputs: ['c1', 'three'], outputs: ['a'] },
      { op: 'Clip', inputs: ['a', 'zero', 'six'], outputs: ['clipped'] },
      { op: 'Mul', inputs: ['c1', 'clipped'], outputs: ['m'] },
      { op: 'Div', inputs: ['m', 'six'], outputs: ['hs'] },
      { op: 'Conv', inputs: ['hs', 'w2', 'b2'], outputs: ['out'] },
    ],
    initializers: [
      f('w1', [8, 4, 1, 1], randomFloats(32, 1)), f('b1', [8], randomFloats(8, 2)),
      f('w2', [4, 8, 1, 1], randomFloats(32, 3)), f('b2', [4], randomFloats(4, 4)),
      f('three', [], Float32Array.of(3)), f('six', [], Float32Array.of(6)), f('zero', [], Float32Array.of(0)),
    ],
  });
}

describe("'extended' op set: Clip parameters shared, constant multipliers folded into DequantizeLinear", () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const batches = [1, 2, 3].map((s) => ({ x: new ort.Tensor('float32', randomFloats(4 * 144, 10 + s, -4, 4), [1, 4, 12, 12]) }));

  it('the Clip input is quantized with the Clip output\'s parameters; the Div by 6 is a DequantizeLinear with scale/6', async () => {
    const r = await quantizeW8A8(loadModel(hardSwishModel()), batches, { opSet: 'extended' });
    const g = r.qdq.graph;
    assert.deepEqual(r.activations.get('a'), r.activations.get('clipped'));
    assert.ok(!g.nodes.some((n) => (n.op_type === 'Mul' || n.op_type === 'Div') && n.input.some((t) => t === 'six' || /reciprocal/.test(t))), 'no Mul/Div by a constant left');
    // hs is read through a DQ of m's integers with m's scale divided by 6
    const hsDq = g.producer(g.producer('out')!.input[0])!;
    assert.equal(hsDq.op_type, 'DequantizeLinear');
    const mQ = g.producer(hsDq.input[0])!;
    assert.equal(mQ.op_type, 'QuantizeLinear');
    assert.equal(mQ.input[0], 'm');
    const sM = (g.constantValue(mQ.input[1])!.data as Float32Array)[0];
    const sHs = (g.constantValue(hsDq.input[1])!.data as Float32Array)[0];
    assert.equal(sHs, Math.fround(sM * Math.fround(1 / 6)));
    // the Conv reading hs records (and scales its int32 bias by) the scale the model uses
    assert.equal(r.layers.find((l) => l.input?.tensor === 'hs')?.input?.scale, sHs);
    assert.equal(r.activations.get('hs')!.scale[0], sHs);
    // ORT keeps the block in integers: no float Clip or Mul by a constant, one QLinearMul (x · clip)
    const counts = await optimizedOpCounts(r.qdq.toBytes(), path.join(dir, 'opt.onnx'));
    assert.equal(counts.Clip ?? 0, 0, JSON.stringify(counts));
    assert.equal(counts.QLinearMul, 1, JSON.stringify(counts));
    assert.equal(counts.QLinearConv, 1, JSON.stringify(counts)); // the last Conv writes the float graph output
  });

  it('the fake-quant model computes what the QDQ model means, and both stay close to fp32', async () => {
    const r = await quantizeW8A8(loadModel(hardSwishModel()), batches, { opSet: 'extended' });
    const literal = await runAll(r.qdq.toBytes(), batches, 'disabled');
    const simulated = await runAll(r.fakeQuant.toBytes(), batches, 'disabled');
    const fused = await runAll(r.qdq.toBytes(), batches);
    const float = await runAll(r.float.toBytes(), batches);
    let maxSim = 0;
    let maxFused = 0;
    let errQ = 0;
    let power = 0;
    literal.forEach((l, i) => l.forEach((v, j) => {
      maxSim = Math.max(maxSim, Math.abs(v - simulated[i][j]));
      maxFused = Math.max(maxFused, Math.abs(v - fused[i][j]));
      errQ += (v - float[i][j]) ** 2;
      power += float[i][j] ** 2;
    }));
    const sqnr = 10 * Math.log10(power / errQ);
    console.log(`      hard-swish block: literal vs fake-quant max ${maxSim.toExponential(1)}, vs fused ${maxFused.toExponential(1)}, SQNR vs fp32 ${sqnr.toFixed(1)} dB`);
    assert.ok(maxSim <= 1e-5, `literal vs simulated ${maxSim}`);
    assert.ok(maxFused <= 0.05, `fused ${maxFused}`);
    assert.ok(sqnr > 25, `SQNR ${sqnr}`);
  });
});

describe("'extended' op set: glue that reaches no quantized layer stays float", () => {
  // x → ConvA → MaxPool → Add → ConvB → ConvC → MaxPool → out, with ConvA and ConvB disabled:
  // the first MaxPool/Add island sits between float layers, the second MaxPool reads ConvC
  const f = (name: string, dims: number[], data: Float32Array) => ({ name, type: DataType.FLOAT, dims, data });
  const model = tinyModel({
    inputs: [{ name: 'x', shape: [1, 4, 12, 12] }],
    outputs: ['out'],
    nodes: [
      { op: 'Conv', name: 'convA', inputs: ['x', 'w1', 'b1'], outputs: ['a'] },
      { op: 'MaxPool', name: 'pool1', inputs: ['a'], outputs: ['p1'], attrs: [makeAttribute('kernel_shape', [2, 2])] },
      { op: 'Add', name: 'add1', inputs: ['p1', 'bias'], outputs: ['s1'] },
      { op: 'Conv', name: 'convB', inputs: ['s1', 'w2', 'b2'], outputs: ['b'] },
      { op: 'Conv', name: 'convC', inputs: ['b', 'w3', 'b3'], outputs: ['c'] },
      { op: 'MaxPool', name: 'pool2', inputs: ['c'], outputs: ['out'], attrs: [makeAttribute('kernel_shape', [2, 2])] },
    ],
    initializers: [
      f('w1', [4, 4, 1, 1], randomFloats(16, 1)), f('b1', [4], randomFloats(4, 2)), f('bias', [1, 4, 1, 1], randomFloats(4, 9)),
      f('w2', [4, 4, 1, 1], randomFloats(16, 3)), f('b2', [4], randomFloats(4, 4)),
      f('w3', [4, 4, 1, 1], randomFloats(16, 5)), f('b3', [4], randomFloats(4, 6)),
    ],
  });
  const batches = [1, 2].map((s) => ({ x: new ort.Tensor('float32', randomFloats(4 * 144, 20 + s, -4, 4), [1, 4, 12, 12]) }));

  it('an island between disabled layers gets no Q/DQ; glue next to a quantized layer does', async () => {
    const r = await quantizeW8A8(loadModel(model), batches, { opSet: 'extended', disableNames: ['convA', 'convB'] });
    const g = r.qdq.graph;
    const readsDq = (name: string) => g.producer(g.node(name)!.input[0])?.op_type === 'DequantizeLinear';
    assert.deepEqual(r.layers.map((l) => l.name), ['convC']);
    assert.equal(readsDq('pool1'), false, 'pool1 (between float layers) reads a DequantizeLinear');
    assert.equal(readsDq('add1'), false, 'add1 (between float layers) reads a DequantizeLinear');
    assert.equal(readsDq('pool2'), true, 'pool2 (after the quantized convC) is not quantized');
    // with every layer quantized, the first island is quantized too
    const all = await quantizeW8A8(loadModel(model), batches, { opSet: 'extended' });
    assert.equal(all.qdq.graph.producer(all.qdq.graph.node('pool1')!.input[0])?.op_type, 'DequantizeLinear');
  });
});
