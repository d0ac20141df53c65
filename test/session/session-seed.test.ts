/**
 * msModelSlim session fidelity (issue 24): fa3's per-head Q/K/V and both sides of w8a8_timestep in
 * the safetensors export, SessionConfig without calib_data (Data-Free), and the session's device on
 * every path that runs ONNX Runtime.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import {
  QuantbookError, QuantizationResult, loadModel, loadSafetensors, normalizeSessionConfig, quantizeW8A8, quantizeW8A8Dynamic, resolveDevice, runSession, session, virtualInputs,
} from '../../sdk';
import { MODELS, tempDir } from '../helpers';
import { CNN, cnnBatch, mnist, ortAccuracy } from '../cnn-fixtures';
import { TRANSFORMER, transformerCalib } from '../transformer-fixtures';
import { DENOISER, denoiserCalib } from '../denoiser-fixtures';

const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, string>;
const f32 = (x: ArrayLike<number>) => Array.from(Float32Array.from(x));

describe('msModelSlim session fidelity: fa3 and timestep export, Data-Free, device', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('fa3: every site\'s per-head Q/K/V scales and offsets are in the safetensors with the ONNX model\'s values, described "FAQuant"', async () => {
    const r = await session(TRANSFORMER, { calibData: transformerCalib() }).w8a8Dynamic().fa3().run();
    const { files } = r.save(path.join(dir, 'fa3'), ['safe_tensor', 'onnx']);
    const onnx = loadModel(files.find((f) => f.endsWith('.onnx'))!).graph;
    const weights = loadSafetensors(files.find((f) => f.endsWith('.safetensors'))!).tensors;
    const description = readJson(files.find((f) => f.endsWith('.json') && path.basename(f).startsWith('quant_model_description'))!);
    assert.equal(description.fa_quant_type, 'FAQuant');
    assert.ok(r.attention.length >= 1);
    let heads = 0;
    for (const site of r.attention) {
      for (const [which, tensor] of [['q', site.q], ['k', site.k], ['v', site.v]] as const) {
        // the values the ONNX model quantizes this tensor with: its QuantizeLinear's scale and zero point
        const q = onnx.consumers(tensor).find((n) => n.op_type === 'QuantizeLinear')!;
        assert.ok(q, `${tensor}: no QuantizeLinear in the saved ONNX`);
        const scale = Array.from(onnx.constantValue(q.input[1])!.data as Float32Array);
        const zeroPoint = Array.from(onnx.constantValue(q.input[2])!.data as ArrayLike<number>, Number);
        const [s, o] = [weights.get(`${site.scores}.fa_${which}.scale`), weights.get(`${site.scores}.fa_${which}.offset`)];
        assert.ok(s && o, `${site.scores}.fa_${which}.scale/offset missing`);
        assert.deepEqual([s!.dtype, s!.shape], ['F32', [scale.length, 1]]);
        assert.deepEqual(Array.from(s!.data as Float32Array), scale, `${site.scores}.fa_${which}.scale`);
        assert.deepEqual([o!.dtype, o!.shape], ['F32', [zeroPoint.length, 1]]);
        assert.deepEqual(Array.from(o!.data as Float32Array), zeroPoint, `${site.scores}.fa_${which}.offset`);
        assert.equal(description[`${site.scores}.fa_${which}.scale`], 'FAQuant');
        assert.equal(description[`${site.scores}.fa_${which}.offset`], 'FAQuant');
        heads += scale.length;
      }
    }
    assert.equal(heads, 12, 'the transformer: 4 heads each for Q, K and V');
  });

  it('w8a8_timestep: the safetensors hold the static side (W8A8) and the dynamic side (W8A8_DYNAMIC weight scales) with the in-memory values', async () => {
    const r = await session(DENOISER, { calibData: denoiserCalib() }).w8a8Timestep(25).run();
    const { files } = r.save(path.join(dir, 'timestep'), ['safe_tensor']);
    const file = loadSafetensors(files.find((f) => f.endsWith('.safetensors'))!);
    const description = readJson(files.find((f) => path.basename(f).startsWith('quant_model_description'))!);
    assert.equal(file.metadata?.timestep_sep, '25');
    // the dynamic side as quantizeW8A8Dynamic makes it on its own (what runs for t < 25)
    const dynamic = quantizeW8A8Dynamic(loadModel(DENOISER)).layers;
    assert.deepEqual(r.extras.dynamicLayers!.map((l) => l.name), dynamic.map((l) => l.name));
    assert.equal(r.layers.length, 3);
    for (const l of r.layers) {
      const d = dynamic.find((x) => x.name === l.name)!;
      const t = (suffix: string) => file.tensors.get(`${l.name}.${suffix}`)!;
      // static side, for t ≥ 25
      assert.deepEqual(Array.from(t('input_scale').data as Float32Array), f32([l.input!.scale]));
      assert.deepEqual(Array.from(t('deq_scale').data as Float32Array), f32(Array.from(l.weight!.scale, (s) => Math.fround(s * l.input!.scale))));
      for (const k of ['weight', 'input_scale', 'input_offset', 'quant_bias', 'deq_scale']) assert.equal(description[`${l.name}.${k}`], 'W8A8', k);
      // dynamic side, for t < 25
      assert.deepEqual(Array.from(t('weight_scale').data as Float32Array), Array.from(d.weight!.scale), `${l.name}.weight_scale`);
      assert.deepEqual(Array.from(t('weight_offset').data as Float32Array), new Array(d.weight!.scale.length).fill(0));
      assert.equal(description[`${l.name}.weight_scale`], 'W8A8_DYNAMIC');
      assert.equal(description[`${l.name}.weight_offset`], 'W8A8_DYNAMIC');
      // one int8 weight serves both sides
      assert.deepEqual(Array.from(t('weight').data as Int8Array), Array.from(d.weight!.int8));
      assert.deepEqual(Array.from(t('weight').data as Int8Array), Array.from(l.weight!.int8));
    }
  });

  describe('SessionConfig without calib_data (Data-Free)', () => {
    it('the processors that need activation data refuse, naming calib_data', () => {
      for (const [map, pattern] of [
        [{ m3: {}, w8a8_dynamic: {} }, /calib_data: 'm3' computes its scales from activations and needs calibration data/],
        [{ m4: {}, w8a8: {} }, /calib_data: 'm4' computes its scales/],
        [{ m6: { cfg: { alpha: 0.5, beta: 0.5 } }, w8a8_dynamic: {} }, /calib_data: 'm6' computes its scales/],
        [{ fa3: {}, w8a8_dynamic: {} }, /calib_data: 'fa3' calibrates per-head scales of Q, K and V and needs calibration data/],
        [{ w8a8_timestep: { timestep_sep: 25 } }, /calib_data: 'w8a8_timestep' calibrates per timestep and needs calibration data/],
      ] as Array<[Record<string, unknown>, RegExp]>) {
        assert.throws(() => normalizeSessionConfig({ processor_cfg_map: map }), (e: QuantbookError) => e.code === 'INVALID_ARGUMENT' && pattern.test(e.message), String(pattern));
      }
      assert.equal(normalizeSessionConfig({ processor_cfg_map: { w8a8: {} } }).calibData, undefined);
      assert.equal(normalizeSessionConfig({ processor_cfg_map: { w8a8_dynamic: {} } }).calibData, undefined);
    });

    it('w8a8_dynamic runs without data', async () => {
      const r = await session(TRANSFORMER).w8a8Dynamic().run();
      assert.ok(r.layers.length > 0 && r.calibration === undefined);
    });

    it('static w8a8 calibrates on seeded virtual inputs (a symbolic batch dimension of 8), and the model still classifies', async () => {
      const r = await runSession(CNN, { processor_cfg_map: { w8a8: {} } });
      assert.equal(r.calibration!.metadata.batches, '4');
      // the same as calibrating on the virtual inputs explicitly
      const expected = await quantizeW8A8(loadModel(CNN), virtualInputs(loadModel(CNN), [[8, 1, 28, 28]], 4));
      assert.equal(Buffer.compare(Buffer.from(r.qdq.toBytes()), Buffer.from(expected.qdq.toBytes())), 0);
      assert.match(r.reportInput({ title: 't', model: 'm' }).data!.description, /^Data-Free: 4 batches of seeded virtual inputs \(x \[8, 1, 28, 28\]\)/);
      const [fp32, int8] = [await ortAccuracy(CNN, mnist().test, 500), await ortAccuracy(r.qdq.toBytes(), mnist().test, 500)];
      console.log(`      Data-Free W8A8 on the MNIST CNN (500 test digits): fp32 ${fp32}, int8 ${int8}`);
      assert.ok(int8 >= fp32 - 0.05, `Data-Free int8 ${int8} vs fp32 ${fp32}`);
    });

    it('static w8a8 on a model whose spatial dimensions are dynamic refuses, naming calib_data', async () => {
      await assert.rejects(session(MODELS.cls).w8a8().run(), (e: QuantbookError) => e.code === 'INVALID_ARGUMENT' && /^calib_data: none given \(Data-Free\), but input "x" has the dynamic dimension 2 .*; pass calib_data$/.test(e.message));
    });
  });

  describe("the session's device on every path that runs ONNX Runtime", () => {
    const seen: Array<ort.InferenceSession.SessionOptions | undefined> = [];
    const original = ort.InferenceSession.create;
    before(() => {
      (ort.InferenceSession as unknown as { create: unknown }).create = function (this: unknown, ...args: unknown[]) {
        seen.push(args.find((a, i) => i > 0 && a && typeof a === 'object' && !ArrayBuffer.isView(a)) as ort.InferenceSession.SessionOptions | undefined);
        return (original as (...a: unknown[]) => unknown).apply(this, args);
      };
    });
    after(() => {
      (ort.InferenceSession as unknown as { create: unknown }).create = original;
    });

    const paths: Array<[string, (device: 'cpu' | 'cuda') => Promise<QuantizationResult>]> = [
      ['w8a8', (device) => session(CNN, { calibData: [cnnBatch(mnist().train, 0, 32)], device }).w8a8().run()],
      ['w8a8 Data-Free', (device) => runSession(CNN, { processor_cfg_map: { w8a8: {} }, device })],
      ['w8a8_dynamic + fa3', (device) => session(TRANSFORMER, { calibData: transformerCalib(), device }).w8a8Dynamic().fa3().run()],
      ['w8a8_timestep', (device) => session(DENOISER, { calibData: denoiserCalib(), device }).w8a8Timestep(25).run()],
      ['m3', (device) => session(TRANSFORMER, { calibData: transformerCalib(), device }).withM3().w8a8Dynamic().run()],
      ['m4', (device) => session(TRANSFORMER, { calibData: transformerCalib().slice(0, 1), device }).withM4().w8a8Dynamic().run()],
      ['m6', (device) => session(TRANSFORMER, { calibData: transformerCalib(), device }).withM6(0.8, 0.2).w8a8Dynamic().run()],
    ];

    it("'cuda' (missing here) refuses on every path, compare() included, before any ONNX Runtime session starts", async function () {
      if (!resolveDevice('cuda', { allowFallback: true }).fellBackFrom) this.skip(); // a machine with ORT's CUDA provider runs instead
      const refused = (e: QuantbookError) => e.code === 'UNSUPPORTED' && /^device 'cuda': /.test(e.message);
      for (const [name, run] of paths) {
        seen.length = 0;
        await assert.rejects(run('cuda'), refused, name);
        assert.equal(seen.length, 0, `${name}: ${seen.length} ORT sessions started before the refusal`);
      }
      // a result whose config names cuda (the session device) compares on cuda too: refused
      const r = await session(CNN, { calibData: [cnnBatch(mnist().train, 0, 32)] }).w8a8().run();
      const onCuda = new QuantizationResult(r.kind, r.baseName, r.float, r.qdq, r.fakeQuant, r.layers, r.selection, { ...r.config, device: 'cuda' });
      seen.length = 0;
      await assert.rejects(onCuda.compare([cnnBatch(mnist().test, 0, 8)]), refused, 'compare');
      assert.equal(seen.length, 0);
    });

    it("'cpu': every ONNX Runtime session of every path, compare() included, gets the device's execution providers", async () => {
      const providers = resolveDevice('cpu').executionProviders;
      for (const [name, run] of paths) {
        seen.length = 0;
        const r = await run('cpu');
        assert.ok(seen.length > 0, `${name}: no ORT session`);
        seen.forEach((o, i) => assert.equal(o?.executionProviders, providers, `${name}: ORT session ${i} of ${seen.length} did not get the device's providers`));
        if (name === 'w8a8') {
          seen.length = 0;
          await r.compare([cnnBatch(mnist().test, 0, 8)]);
          assert.equal(seen.length, 2);
          seen.forEach((o) => assert.equal(o?.executionProviders, providers, 'compare'));
        }
      }
    });
  });
});
