/**
 * Quantizing a decoder without holding its fp32 weights (issue 26): loaded with
 * `loadExternalData: false`, each weight is read from the data file when the quantizer reaches
 * it, its int8 form goes to a spill file as it is made (onnx/spill.ts), and what is saved
 * (ONNX with external data, msModelSlim shards) is byte for byte what the in-memory run saves.
 * Peak memory is measured in `npm run bench -- llm`, not here.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { Model, loadModel, metrics, quantizeW8A8, quantizeW8A8Dynamic, runSession, session } from '../../sdk';
import { allInitializers } from '../../sdk/onnx/model-io';
import { ModelProto } from '../../sdk/onnx/proto';
import { SPILL_THRESHOLD } from '../../sdk/onnx/spill';
import { tempDir } from '../helpers';
import { DecoderShape, SHAPES, generateDecoder, prefillFeeds } from './decoder';

describe('quantizing a decoder from its external data (issue 26)', function () {
  const dir = tempDir('quantbook-stream-');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('W8A8_DYNAMIC of a model loaded without its data writes the same files as the in-memory run; the fp32 weights are never all in memory', () => {
    const { modelPath, dataBytes } = generateDecoder(dir, { shape: { ...SHAPES.tiny, layers: 3 }, seed: 4 });
    const lazy = loadModel(modelPath, { loadExternalData: false });
    const held = () => lazy.proto.graph!.initializer.filter((t) => t.data_location !== 1).reduce((a, t) => a + (t.raw_data?.byteLength ?? 0), 0);
    assert.ok(held() < 0.01 * dataBytes, 'loaded lazily: the weights stay on disk');
    const streamed = quantizeW8A8Dynamic(lazy);
    // what the quantized model holds in memory: int8 weights (¼ of their fp32 bytes); the float ones it keeps stay references
    // the quantized model holds no weight in memory: the int8 ones are spilled as they are made, the float ones stay references
    assert.ok(largestHeld(streamed.qdq.proto) < SPILL_THRESHOLD, `a tensor of ${largestHeld(streamed.qdq.proto)} bytes held`);
    const whole = quantizeW8A8Dynamic(loadModel(modelPath));
    assert.ok(largestHeld(whole.qdq.proto) > 10 * SPILL_THRESHOLD, 'the in-memory run holds its int8 weights (the comparison above can fail)');
    // records read their integers back from the spill: the same values as the in-memory run's
    assert.equal(streamed.layers.length, whole.layers.length);
    streamed.layers.forEach((l, i) => assert.deepEqual(l.weight?.int8, whole.layers[i].weight?.int8, l.name));
    assert.ok(streamed.layers.filter((l) => l.weight).length >= 7 * 3, "every projection has a weight record");
    // the fake-quant model is made when asked, with its float weights spilled too
    assert.ok(largestHeld(streamed.fakeQuant.proto) < SPILL_THRESHOLD, 'fake-quant weights spilled');
    for (const [name, m] of [['fq-streamed', streamed.fakeQuant], ['fq-whole', whole.fakeQuant]] as const) {
      fs.mkdirSync(path.join(dir, name));
      m.save(path.join(dir, name, 'model.onnx'), { externalData: true });
    }
    assertSameBytes(path.join(dir, 'fq-streamed'), path.join(dir, 'fq-whole'), ['model.onnx', 'model.onnx.data']);
    for (const [name, r] of [['streamed', streamed], ['whole', whole]] as const) {
      fs.mkdirSync(path.join(dir, name));
      r.qdq.save(path.join(dir, name, 'model.onnx'), { externalData: true });
    }
    const files = fs.readdirSync(path.join(dir, 'whole')).sort();
    assert.deepEqual(files, ['model.onnx', 'model.onnx.data']);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'streamed')).sort(), files);
    assertSameBytes(path.join(dir, 'streamed'), path.join(dir, 'whole'), files);
  });

  it('a session on a model held by reference saves the same msModelSlim shards and description as the in-memory session, and the same QDQ weights', async () => {
    const { modelPath } = generateDecoder(path.join(dir, 'session-model'), { shape: { ...SHAPES.tiny, layers: 2 }, seed: 6 });
    const save = { saveType: ['safe_tensor', 'onnx'] as Array<'safe_tensor' | 'onnx'>, partFileSize: 0.00005 }; // 50 kB parts: several shards
    const lazyOut = path.join(dir, 'session-lazy');
    const wholeOut = path.join(dir, 'session-whole');
    const lazy = await session(loadModel(modelPath, { loadExternalData: false })).w8a8Dynamic().run();
    assert.ok(largestHeld(lazy.qdq.proto) < SPILL_THRESHOLD, 'the session held no weights');
    lazy.save(lazyOut, save);
    (await session(loadModel(modelPath)).w8a8Dynamic().run()).save(wholeOut, save);
    const shards = fs.readdirSync(wholeOut).filter((f) => f.startsWith('quant_model_')).sort();
    assert.ok(shards.filter((f) => f.endsWith('.safetensors')).length >= 3, `sharded: ${shards.join(', ')}`);
    assert.deepEqual(fs.readdirSync(lazyOut).filter((f) => f.startsWith('quant_model_')).sort(), shards);
    assertSameBytes(lazyOut, wholeOut, shards);
    // the ONNX file: external data for the model held by reference, inline for the other; the same tensors
    const values = (file: string) => new Map([...allInitializers(loadModel(file).proto.graph!)].map((t) => [t.name!, Buffer.from(t.raw_data ?? [])]));
    const [a, b] = [values(path.join(lazyOut, 'model_w8a8_dynamic.onnx')), values(path.join(wholeOut, 'model_w8a8_dynamic.onnx'))];
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    for (const [name, bytes] of a) assert.ok(bytes.equals(b.get(name)!), `${name} differs`);
  });

  it('static W8A8 of a model held by reference calibrates block by block and quantizes as the in-memory run does', async () => {
    const shape = { ...SHAPES.tiny, layers: 3 };
    const { modelPath } = generateDecoder(path.join(dir, 'static-model'), { shape, seed: 8 });
    const batch = promptBatches(shape, 5);
    const calib = [batch(), batch()];
    const lazy = await quantizeW8A8(loadModel(modelPath, { loadExternalData: false }), calib);
    const whole = await quantizeW8A8(loadModel(modelPath), calib);
    assert.match(String(lazy.calibration.metadata.collection), /block by block \(4 stages\)/);
    assert.doesNotMatch(String(whole.calibration.metadata.collection), /block/);
    assert.ok(largestHeld(lazy.qdq.proto) < SPILL_THRESHOLD, 'int8 weights spilled');
    assert.deepEqual([...lazy.activations.keys()].sort(), [...whole.activations.keys()].sort());
    for (const [t, qp] of lazy.activations) {
      const other = whole.activations.get(t)!;
      assert.ok(Math.abs(qp.scale[0] - other.scale[0]) <= 1e-5 * other.scale[0], `${t}: scale ${qp.scale[0]} vs ${other.scale[0]}`);
    }
    lazy.layers.forEach((l, i) => assert.deepEqual(l.weight?.int8, whole.layers[i].weight?.int8, l.name));
    const held = batch();
    const run = async (m: Model) => {
      const out = path.join(dir, `static-${Math.random().toString(36).slice(2)}`);
      fs.mkdirSync(out);
      m.save(path.join(out, 'model.onnx'), { externalData: true });
      const s = await ort.InferenceSession.create(path.join(out, 'model.onnx'));
      return (await s.run(held)).logits.data as Float32Array;
    };
    const acc = new metrics.OutputErrorAccumulator();
    acc.add(await run(whole.qdq), await run(lazy.qdq));
    assert.ok(acc.result().sqnrDb > 50, `the two int8 models agree: ${acc.result().sqnrDb.toFixed(1)} dB`);
  });

  it('m6 + W8A8 of a model held by reference: statistics block by block, smoothed weights spilled, the same msModelSlim files as the in-memory session', async () => {
    const shape = { ...SHAPES.tiny, layers: 2 };
    const { modelPath } = generateDecoder(path.join(dir, 'm6-model'), { shape, seed: 9 });
    const batch = promptBatches(shape, 11);
    const calibData = [batch(), batch()];
    const save = { saveType: ['safe_tensor'] as Array<'safe_tensor'> };
    const lazy = await session(loadModel(modelPath, { loadExternalData: false }), { calibData }).withM6().w8a8({ opSet: 'msmodelslim' }).run();
    const whole = await session(loadModel(modelPath), { calibData }).withM6().w8a8({ opSet: 'msmodelslim' }).run();
    assert.ok(lazy.smoothing.length >= 4 * shape.layers, `${lazy.smoothing.length} groups smoothed`);
    assert.deepEqual(lazy.smoothing.map((g) => [g.input, g.alpha, g.beta]), whole.smoothing.map((g) => [g.input, g.alpha, g.beta]));
    assert.ok(largestHeld(lazy.float.proto) < SPILL_THRESHOLD, 'the smoothed float weights are spilled');
    assert.ok(largestHeld(lazy.qdq.proto) < SPILL_THRESHOLD, 'the int8 weights are spilled');
    lazy.save(path.join(dir, 'm6-lazy'), save);
    whole.save(path.join(dir, 'm6-whole'), save);
    const files = fs.readdirSync(path.join(dir, 'm6-whole')).filter((f) => f.startsWith('quant_model_'));
    assert.equal(files.length, 2);
    assertSameBytes(path.join(dir, 'm6-lazy'), path.join(dir, 'm6-whole'), files);
  });

  it('fa3 + W8A8_DYNAMIC of a model held by reference: per-head Q/K/V calibrated block by block, the same msModelSlim files as the in-memory session', async () => {
    const shape = { ...SHAPES.tiny, layers: 2 };
    const { modelPath } = generateDecoder(path.join(dir, 'fa3-model'), { shape, seed: 12 });
    const batch = promptBatches(shape, 13);
    const calibData = [batch(), batch()];
    const lazy = await session(loadModel(modelPath, { loadExternalData: false }), { calibData }).fa3().w8a8Dynamic().run();
    const whole = await session(loadModel(modelPath), { calibData }).fa3().w8a8Dynamic().run();
    assert.equal(lazy.attention.length, shape.layers);
    assert.ok(largestHeld(lazy.qdq.proto) < SPILL_THRESHOLD, 'the int8 weights are spilled');
    assert.ok(largestHeld(lazy.fakeQuant.proto) < SPILL_THRESHOLD, 'the fake-quant weights are spilled');
    for (const [name, r] of [['fa3-lazy', lazy], ['fa3-whole', whole]] as const) r.save(path.join(dir, name), { saveType: ['safe_tensor'] });
    const files = fs.readdirSync(path.join(dir, 'fa3-whole')).filter((f) => f.startsWith('quant_model_'));
    assert.ok(JSON.parse(fs.readFileSync(path.join(dir, 'fa3-whole', files.find((f) => f.endsWith('.json'))!), 'utf8')).fa_quant_type, 'fa3 tensors described');
    assertSameBytes(path.join(dir, 'fa3-lazy'), path.join(dir, 'fa3-whole'), files);
  });

  it('a SessionConfig (m6 + W8A8 on the Linear layers, saved in parts) runs on a model held by reference: QDQ ONNX with external data, msModelSlim shards and description', async () => {
    const shape = { ...SHAPES.tiny, layers: 2 };
    const { modelPath } = generateDecoder(path.join(dir, 'json-model'), { shape, seed: 14 });
    const batch = promptBatches(shape, 15);
    const out = path.join(dir, 'json-out');
    // the snake_case SessionConfig a JSON file holds (loadSessionConfig parses the file into this), with feeds as calib_data
    const config = {
      processor_cfg_map: {
        m6: { cfg: {} },
        w8a8: { cfg: { act_method: 'minmax', op_set: 'msmodelslim' } },
        save: { output_path: out, save_type: ['onnx', 'safe_tensor'], part_file_size: 0.00005 },
      },
      calib_data: [batch(), batch()],
    };
    const r = await runSession(loadModel(modelPath, { loadExternalData: false }), config);
    assert.ok(r.smoothing.length >= 4 * shape.layers);
    assert.ok(largestHeld(r.qdq.proto) < SPILL_THRESHOLD);
    const files = fs.readdirSync(out);
    assert.ok(files.includes('model_w8a8.onnx') && files.includes('model_w8a8.onnx.data'), files.join(', '));
    assert.ok(files.filter((f) => /^quant_model_weight_w8a8-\d{5}-of-\d{5}\.safetensors$/.test(f)).length >= 2, files.join(', '));
    const description = JSON.parse(fs.readFileSync(path.join(out, 'quant_model_description_w8a8.json'), 'utf8'));
    assert.equal(description.model_quant_type, 'W8A8');
    // the int8 model runs in ORT from its folder
    const s = await ort.InferenceSession.create(path.join(out, 'model_w8a8.onnx'));
    const logits = (await s.run(prefillFeeds(shape, [[1, 2, 3, 4]]))).logits;
    assert.deepEqual(logits.dims, [1, 4, shape.vocab]);
  });

  it('a spill reference is honoured only for this process\'s own spill: one read from a file is refused by name', () => {
    const { modelPath } = generateDecoder(path.join(dir, 'forged'), { shape: { ...SHAPES.tiny, layers: 1 }, seed: 7 });
    const m = loadModel(modelPath, { loadExternalData: false });
    const t = m.proto.graph!.initializer.find((x) => x.data_location === 1)!;
    t.external_data.push({ key: 'quantbook_spill', value: 'feedfacefeedfacefeedface' });
    const forged = path.join(dir, 'forged', 'forged.onnx');
    fs.writeFileSync(forged, Buffer.from(require('../../sdk/onnx/proto').encodeModel(m.proto)));
    assert.throws(() => loadModel(forged), (e: Error & { code?: string }) => e.code === 'INVALID_MODEL' && /temporary tensor file .*feedface.* this process does not hold/.test(e.message));
  });
});

/** The largest matrix (≥ 2 dims: a weight, not a per-channel scale) a model holds in memory, in bytes; references to files do not count. */
function largestHeld(proto: ModelProto): number {
  return Math.max(0, ...[...allInitializers(proto.graph!)].filter((t) => t.data_location !== 1 && t.dims.length >= 2).map((t) => t.raw_data?.byteLength ?? 0));
}

/** A stream of prefill batches (2 rows of 12 tokens each), the same for the same seed. */
function promptBatches(shape: DecoderShape, seed: number): () => ReturnType<typeof prefillFeeds> {
  let state = seed;
  const token = () => (state = (state * 16807) % 2147483647) % shape.vocab;
  return () => prefillFeeds(shape, [0, 1].map(() => Array.from({ length: 12 }, token)));
}

/** Each named file is byte for byte the same in both folders. */
function assertSameBytes(a: string, b: string, files: string[]): void {
  for (const f of files) assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), `${f} differs`);
}
