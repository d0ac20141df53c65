import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType, Graph, QuantbookError, loadModel, proto } from '../../sdk';
import { FEEDS, MODELS, onnxCheck, requireChecker, runModel, sameBytes, tempDir } from '../helpers';
import { tinyModel } from '../build';

/** Every node's inputs are available before it: graph inputs, initializers, outer scope, or earlier outputs. */
function assertTopological(g: Graph, outer: Set<string> = new Set()): void {
  const seen = new Set<string>([...g.proto.input.map((v) => v.name!), ...g.initializerNames, ...outer, '']);
  for (const n of g.nodes) {
    for (const i of n.input) assert.ok(seen.has(i), `node ${n.name} reads ${i} before it is produced`);
    for (const o of n.output) seen.add(o);
  }
  for (const s of g.subgraphs()) assertTopological(s.graph, seen);
}

function countNodes(g: proto.GraphProto): number {
  return g.node.reduce((acc, n) => acc + 1 + n.attribute.reduce((a, at) => a + (at.g ? countNodes(at.g) : 0) + at.graphs.reduce((b, sg) => b + countNodes(sg), 0), 0), 0);
}

describe('Graph API', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lists nodes in topological order even when the file order is shuffled', () => {
    for (const key of ['rec', 'det', 'cls', 'vad'] as const) assertTopological(loadModel(MODELS[key]).graph);
    const m = loadModel(MODELS.cls);
    m.proto.graph!.node.reverse();
    m.graph.invalidate();
    assertTopological(m.graph);
  });

  it('producer and consumers agree on every tensor of PP-OCRv4 rec', () => {
    const g = loadModel(MODELS.rec).graph;
    let edges = 0;
    for (const n of g.nodes) {
      for (const o of n.output) assert.equal(g.producer(o), n);
      for (const i of n.input) {
        if (!i) continue;
        assert.ok(g.consumers(i).includes(n));
        edges++;
      }
    }
    assert.equal(edges, 827, 'every input edge of the 765 nodes was visited');
  });

  it('reads weights held in Constant nodes as initializers, with shapes', () => {
    const g = loadModel(MODELS.rec).graph;
    assert.equal(g.initializerNames.length, 0, 'Paddle exports keep weights in Constant nodes');
    const convs = g.nodes.filter((n) => n.op_type === 'Conv');
    assert.equal(convs.length, 38);
    for (const c of convs) {
      assert.ok(g.isConstant(c.input[1]));
      const w = g.constantValue(c.input[1])!;
      assert.equal(w.type, DataType.FLOAT);
      assert.equal(w.dims.length, 4);
      assert.equal((w.data as Float32Array).length, w.dims.reduce((a, b) => a * b));
      assert.deepEqual(g.valueType(c.input[1])!.shape, w.dims);
    }
    assert.equal(g.isConstant('x'), false);
    assert.deepEqual(g.valueType('x'), { elemType: DataType.FLOAT, shape: ['p2o.DynamicDimension.0', 3, 48, 'p2o.DynamicDimension.1'] });
  });

  it('visits If bodies and counts a node reading outer tensors from its body as their consumer', () => {
    const g = loadModel(MODELS.vad).graph;
    let visited = 0;
    g.walk(() => visited++);
    assert.equal(visited, countNodes(g.proto));
    assert.equal(g.subgraphs().length, 2);
    const ifNode = g.nodes.find((n) => n.op_type === 'If')!;
    assert.ok(g.consumers('h').includes(ifNode));
    assert.ok(g.consumers('model.first_layer.0.dw_conv.0.weight').includes(ifNode));
    const bodyTensor = g.subgraphs()[0].graph.nodes.find((n) => n.op_type === 'Conv')!.output[0];
    assert.throws(() => g.requireTensor(bodyTensor), /exists only inside the If body/);
  });

  it('renaming a tensor read inside If bodies keeps the model valid and its outputs identical', async function () {
    const m = loadModel(MODELS.vad);
    m.graph.renameTensor('model.first_layer.0.dw_conv.0.weight', 'renamed_weight');
    m.graph.renameTensor('h', 'state_h');
    const file = path.join(dir, 'vad-renamed.onnx');
    m.save(file);
    const feeds = FEEDS.vad();
    const before = await runModel(MODELS.vad, feeds);
    const { h, ...rest } = feeds;
    const after = await runModel(file, { ...rest, state_h: h });
    for (const k of Object.keys(before)) assert.ok(sameBytes(before[k], after[k]), `output ${k}`);
    assert.throws(() => m.graph.renameTensor('c', 'state_h'), /already names a tensor/);
    requireChecker(this);
    onnxCheck(file);
  });

  it('inserting a node after a tensor rewires every reader (If bodies too) and keeps outputs', async () => {
    const m = loadModel(MODELS.vad);
    const ifNode = m.graph.nodes.find((n) => n.op_type === 'If')!;
    const node = m.graph.insertNodeAfter('model.first_layer.0.dw_conv.0.weight', { opType: 'Identity' });
    assert.deepEqual(m.graph.consumers('model.first_layer.0.dw_conv.0.weight'), [node]);
    assert.ok(m.graph.consumers(node.output[0]).includes(ifNode));
    const file = path.join(dir, 'vad-inserted.onnx');
    m.save(file);
    const feeds = FEEDS.vad();
    const [a, b] = [await runModel(MODELS.vad, feeds), await runModel(file, feeds)];
    for (const k of Object.keys(a)) assert.ok(sameBytes(a[k], b[k]));
  });

  it('an inserted node changes what readers see; graph outputs are rewired only when asked', async () => {
    const bytes = tinyModel({
      inputs: [{ name: 'x', shape: [4] }],
      outputs: ['r', 'y'],
      nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['r'] }, { op: 'Add', inputs: ['r', 'r'], outputs: ['y'] }],
    });
    const x = new ort.Tensor('float32', Float32Array.of(-1, 2, -3, 4), [4]);
    const m1 = loadModel(bytes);
    m1.graph.insertNodeAfter('r', { opType: 'Neg' });
    const o1 = await runModel(m1.toBytes(), { x });
    assert.deepEqual([...(o1.r.data as Float32Array)], [0, 2, 0, 4]);
    assert.deepEqual([...(o1.y.data as Float32Array)], [-0, -4, -0, -8]);
    const m2 = loadModel(bytes);
    m2.graph.insertNodeAfter('r', { opType: 'Neg' }, { rewireGraphOutputs: true });
    const o2 = await runModel(m2.toBytes(), { x });
    assert.deepEqual([...(o2.r.data as Float32Array)], [-0, -2, -0, -4]);
    assert.deepEqual([...(o2.y.data as Float32Array)], [-0, -4, -0, -8]);
  });

  it('replaces a Constant-held weight; the model computes with the new value', async () => {
    const m = loadModel(MODELS.cls);
    const conv = m.graph.nodes.find((n) => n.op_type === 'Conv')!;
    const w = m.graph.constantValue(conv.input[1])!;
    const feeds = FEEDS.cls();
    const base = await runModel(MODELS.cls, feeds);
    m.graph.replaceInitializer(conv.input[1], { type: w.type, dims: w.dims, data: w.data });
    const same = await runModel(m.toBytes(), feeds);
    assert.ok(sameBytes(base['softmax_0.tmp_0'], same['softmax_0.tmp_0']));
    m.graph.replaceInitializer(conv.input[1], { type: DataType.FLOAT, dims: w.dims, data: new Float32Array((w.data as Float32Array).length) });
    assert.ok((m.graph.constantValue(conv.input[1])!.data as Float32Array).every((v) => v === 0));
    const changed = await runModel(m.toBytes(), feeds);
    assert.ok(!sameBytes(base['softmax_0.tmp_0'], changed['softmax_0.tmp_0']));
    assert.throws(() => m.graph.replaceInitializer('x', { type: DataType.FLOAT, dims: [1], data: Float32Array.of(0) }), /not a constant/);
  });

  it('records and reads value types; refuses to remove a node that is still read', () => {
    const g = loadModel(MODELS.cls).graph;
    const conv = g.nodes.find((n) => n.op_type === 'Conv')!;
    g.setValueType(conv.output[0], { elemType: DataType.FLOAT, shape: ['N', 8, 24, 96] });
    assert.deepEqual(g.valueType(conv.output[0]), { elemType: DataType.FLOAT, shape: ['N', 8, 24, 96] });
    assert.throws(() => g.removeNode(conv), (e: QuantbookError) => e.code === 'INVALID_ARGUMENT' && /still read/.test(e.message));
  });
});
