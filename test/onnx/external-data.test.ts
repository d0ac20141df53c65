import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { DataType, QuantbookError, loadModel, readTensor } from '../../sdk';
import { FEEDS, MODELS, onnxCheck, requireChecker, runModel, sameBytes, tempDir } from '../helpers';
import { tinyModel } from '../build';

describe('ONNX model IO: external data', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('saves Silero VAD with its initializers in a data file; ORT outputs stay bit-identical; checker accepts', async function () {
    const model = loadModel(MODELS.vad);
    const file = path.join(dir, 'vad.onnx');
    const res = model.save(file, { externalData: { location: 'vad.weights', sizeThreshold: 256 } });
    assert.equal(res.externalDataPath, path.join(dir, 'vad.weights'));
    assert.ok(fs.statSync(file).size < fs.statSync(MODELS.vad).size / 2, 'the model file no longer holds the weights');
    assert.ok(fs.statSync(res.externalDataPath!).size > 1_000_000);
    // the in-memory model is not changed by saving
    assert.ok(model.proto.graph!.initializer.every((t) => t.data_location !== 1));

    const feeds = FEEDS.vad();
    const before = await runModel(MODELS.vad, feeds);
    const after = await runModel(file, feeds);
    for (const k of Object.keys(before)) assert.ok(sameBytes(before[k], after[k]), `output ${k} differs`);

    const reloaded = loadModel(file);
    for (const t of model.proto.graph!.initializer) {
      const a = readTensor(t).data as Float32Array;
      const b = readTensor(reloaded.graph.initializer(t.name!)!).data as Float32Array;
      assert.deepEqual(Buffer.from(b.buffer), Buffer.from(a.buffer), `initializer ${t.name}`);
    }
    requireChecker(this);
    onnxCheck(file);
  });

  it('keeps external references when asked, and re-reads them when saving elsewhere', async () => {
    const first = path.join(dir, 'vad-ext.onnx');
    loadModel(MODELS.vad).save(first, { externalData: true });
    const lazy = loadModel(first, { loadExternalData: false });
    assert.ok(lazy.proto.graph!.initializer.some((t) => t.data_location === 1));
    const otherDir = fs.mkdtempSync(path.join(dir, 'other-'));
    const second = path.join(otherDir, 'copy.onnx');
    lazy.save(second);
    assert.ok(fs.existsSync(path.join(otherDir, 'copy.onnx.data')));
    const feeds = FEEDS.vad();
    const a = await runModel(MODELS.vad, feeds);
    const b = await runModel(second, feeds);
    for (const k of Object.keys(a)) assert.ok(sameBytes(a[k], b[k]));
  });

  it('a model loaded from bytes with external data needs baseDir, and says so', () => {
    const file = path.join(dir, 'vad-bytes.onnx');
    loadModel(MODELS.vad).save(file, { externalData: true });
    const bytes = fs.readFileSync(file);
    assert.throws(() => loadModel(bytes), (e: QuantbookError) => /external file.*baseDir/.test(e.message));
    assert.ok(loadModel(bytes, { baseDir: dir }).graph.initializerNames.length > 0);
  });

  it('writes models over 2 GB (tensor data goes to a data file automatically)', function () {
    this.timeout(600_000);
    // three 720 MB initializers: 2.16 GB, over protobuf's 2 GB message limit
    const n = 180_000_000;
    const weights = [0, 1, 2].map((k) => {
      const data = new Float32Array(n);
      data[0] = k + 0.5;
      data[n - 1] = -k - 0.25;
      return { name: `w${k}`, type: DataType.FLOAT, dims: [n], data };
    });
    const big = loadModel(tinyModel({
      inputs: [{ name: 'x', shape: [1] }],
      outputs: ['y'],
      nodes: [{ op: 'Identity', inputs: ['x'], outputs: ['y'] }],
      initializers: weights,
    }));
    assert.throws(() => big.toBytes(), /over protobuf's 2 GB limit/);
    const file = path.join(dir, 'big.onnx');
    const res = big.save(file);
    assert.equal(res.externalDataPath, `${file}.data`);
    assert.ok(fs.statSync(file).size < 10_000);
    assert.ok(fs.statSync(res.externalDataPath!).size >= 3 * n * 4);
    weights.length = 0;
    const back = loadModel(file);
    for (let k = 0; k < 3; k++) {
      const d = back.graph.constantValue(`w${k}`)!.data as Float32Array;
      assert.equal(d.length, n);
      assert.equal(d[0], k + 0.5);
      assert.equal(d[n - 1], -k - 0.25);
    }
    fs.rmSync(res.externalDataPath!);
  });
});
