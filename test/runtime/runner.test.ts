import { strict as assert } from 'assert';
import { QuantbookError, Runner, loadModel } from '../../sdk';
import { FEEDS, MODELS, sameBytes } from '../helpers';

describe('Runner (ONNX Runtime)', () => {
  it('instrumented PP-OCRv4 rec returns every Conv/MatMul input, and its own output is unchanged', async () => {
    const model = loadModel(MODELS.rec);
    const g = model.graph;
    const wanted = new Set<string>();
    for (const n of g.nodes) {
      if (n.op_type === 'Conv') wanted.add(n.input[0]);
      if (n.op_type === 'MatMul') for (const i of n.input) if (!g.isConstant(i)) wanted.add(i);
    }
    assert.ok(wanted.size >= 50, `${wanted.size} activation inputs`);
    const outputsBefore = g.outputNames.length;
    const plain = await Runner.create(model);
    const instrumented = await Runner.create(model, { expose: [...wanted] });
    assert.equal(model.graph.outputNames.length, outputsBefore, "the caller's model is not modified");
    const feeds = FEEDS.rec();
    const a = await plain.run(feeds);
    const b = await instrumented.run(feeds);
    assert.deepEqual(Object.keys(b.outputs), ['softmax_11.tmp_0']);
    assert.ok(sameBytes(a.outputs['softmax_11.tmp_0'], b.outputs['softmax_11.tmp_0']), 'model output changed by instrumentation');
    assert.deepEqual(Object.keys(b.exposed).sort(), [...wanted].sort());
    for (const [name, t] of Object.entries(b.exposed)) {
      assert.equal(t.type, 'float32', name);
      assert.equal(t.dims[0], 2, `${name} keeps the batch dimension`);
      assert.ok((t.data as Float32Array).some((v) => v !== 0), `${name} has values`);
    }
    // the model input itself is a Conv input and comes back as fed
    assert.ok(sameBytes(b.exposed.x, feeds.x));
    await plain.dispose();
    await instrumented.dispose();
  });

  it('runs a sequence of batches and yields one result per batch', async () => {
    const r = await Runner.create(MODELS.cls);
    const batches = [FEEDS.cls(), FEEDS.cls(), FEEDS.cls()];
    let count = 0;
    for await (const res of r.runBatches(batches)) {
      assert.deepEqual(res.outputs['softmax_0.tmp_0'].dims, [2, 2]);
      count++;
    }
    assert.equal(count, 3);
  });

  it('names an unknown tensor and suggests close names', async () => {
    await assert.rejects(Runner.create(MODELS.rec, { expose: ['conv2d_1.tmp_O'] }), (e: QuantbookError) =>
      e.code === 'UNKNOWN_TENSOR' && /exposed tensor "conv2d_1.tmp_O" is not in graph/.test(e.message) && /did you mean/.test(e.message));
  });

  it('refuses to expose a tensor that lives only inside an If body, saying where it is', async () => {
    const g = loadModel(MODELS.vad).graph;
    const inner = g.subgraphs()[0].graph.nodes[3].output[0];
    await assert.rejects(Runner.create(MODELS.vad, { expose: [inner] }), /only inside the If body/);
  });

  it('checks feeds by name before running', async () => {
    const r = await Runner.create(MODELS.vad);
    const { sr: _sr, ...feeds } = FEEDS.vad();
    await assert.rejects(r.run(feeds), /missing inputs "sr"; the model's inputs are "input", "sr", "h", "c"/);
    await assert.rejects(r.run({ ...FEEDS.vad(), bogus: FEEDS.vad().sr }), /unknown inputs "bogus"/);
  });
});
