import * as assert from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { loadModel, runSession, session } from '../../sdk';
import { loadSafetensors, StoredTensor } from '../../sdk/export/safetensors';
import { unpackDeqScale } from '../../sdk/export/msmodelslim';
import { readTensor } from '../../sdk/onnx/tensor';
import { Runner } from '../../sdk/runtime/runner';
import { roundHalfEven } from '../../sdk/kernels/quant';
import { MODELS, requireChecker, tempDir } from '../helpers';
import { DATA, clsBatch, recBatches } from '../ocr-fixtures';
import { pythonRead } from './safetensors.test';

describe('msModelSlim export (safetensors + description)', function () {
  const dir = tempDir();
  const calib = recBatches(path.join(DATA, 'rec', 'calib')).slice(0, 1);
  let files: string[];

  before(async () => {
    fs.writeFileSync(path.join(dir, 'session.json'), JSON.stringify({ processor_cfg_map: { w8a8: { cfg: { act_method: 'minmax' } }, save: { output_path: path.join(dir, 'w8a8') } } }));
    await runSession(MODELS.rec, { ...JSON.parse(fs.readFileSync(path.join(dir, 'session.json'), 'utf8')), calib_data: calib });
    files = fs.readdirSync(path.join(dir, 'w8a8')).sort();
  });

  it("save_type defaults to ['safe_tensor']: msModelSlim's default names, every tensor described", function () {
    requireChecker(this);
    assert.deepEqual(files, ['ch_PP-OCRv4_rec_infer_w8a8.manifest.json', 'ch_PP-OCRv4_rec_infer_w8a8_summary.json', 'quant_model_description_w8a8.json', 'quant_model_weight_w8a8.safetensors']);
    const desc = JSON.parse(fs.readFileSync(path.join(dir, 'w8a8', 'quant_model_description_w8a8.json'), 'utf8'));
    assert.equal(desc.model_quant_type, 'W8A8');
    const file = path.join(dir, 'w8a8', 'quant_model_weight_w8a8.safetensors');
    const ours = loadSafetensors(file).tensors;
    const py = pythonRead([file]);
    const described = Object.keys(desc).filter((k) => k !== 'model_quant_type').sort();
    assert.deepEqual(described, [...ours.keys()].sort());
    assert.deepEqual(described, Object.keys(py).sort());
    const quantized = described.filter((k) => desc[k] === 'W8A8');
    const weights = quantized.filter((k) => k.endsWith('.weight'));
    assert.ok(weights.length > 40, `${weights.length} quantized weights`);
    for (const w of weights) {
      const p = w.slice(0, -'.weight'.length);
      assert.equal(ours.get(w)!.dtype, 'I8');
      assert.equal(py[w].dtype, 'I8');
      for (const [suffix, dtype] of [['input_scale', 'F32'], ['input_offset', 'F32'], ['quant_bias', 'I32'], ['deq_scale', 'F32']]) {
        assert.equal(ours.get(`${p}.${suffix}`)?.dtype, dtype, `${p}.${suffix}`);
      }
      const offset = (ours.get(`${p}.input_offset`)!.data as Float32Array)[0];
      assert.ok(Number.isInteger(offset) && offset >= -128 && offset <= 127, `${p} offset ${offset}`);
    }
    // float tensors are the float model's, byte for byte
    const floats = described.filter((k) => desc[k] === 'FLOAT');
    assert.ok(floats.length > 0);
    const model = loadModel(MODELS.rec);
    for (const name of floats.slice(0, 20)) {
      const init = model.graph.proto.initializer.find((t) => t.name === name);
      if (!init) continue; // created by BatchNorm folding
      const a = readTensor(init).data as ArrayLike<number>;
      assert.deepEqual(Array.from(ours.get(name)!.data as ArrayLike<number>), Array.from(a), name);
    }
  });

  it('weight, input_scale/offset, quant_bias and deq_scale reproduce the QDQ model layer by layer', async () => {
    const r = await session(MODELS.rec, { calibData: calib }).w8a8().run();
    const tensors = loadSafetensors(path.join(dir, 'w8a8', 'quant_model_weight_w8a8.safetensors')).tensors;
    const layers = r.layers.filter((l) => l.opType === 'MatMul' && l.weight && l.input).slice(0, 3);
    assert.equal(layers.length, 3);
    const nodes = layers.map((l) => r.qdq.graph.node(l.name)!);
    const runner = await Runner.create(r.qdq, { expose: nodes.flatMap((n) => [n.input[0], n.output[0]]), sessionOptions: { graphOptimizationLevel: 'disabled' } });
    const { exposed } = await runner.run(calib[0]);
    for (const [i, l] of layers.entries()) {
      const get = (s: string): StoredTensor => tensors.get(`${l.name}.${s}`)!;
      const w = get('weight').data as Int8Array;
      const [k, n] = get('weight').shape;
      const s = (get('input_scale').data as Float32Array)[0];
      const o = (get('input_offset').data as Float32Array)[0];
      const qb = get('quant_bias').data as Int32Array;
      const deq = unpackDeqScale(get('deq_scale'));
      const x = exposed[nodes[i].input[0]].data as Float32Array;
      const y = exposed[nodes[i].output[0]].data as Float32Array;
      const rows = x.length / k;
      let maxErr = 0;
      let maxY = 0;
      for (let row = 0; row < rows; row++) {
        const xq = Array.from({ length: k }, (_, j) => Math.max(-128, Math.min(127, roundHalfEven(x[row * k + j] / s) + o)));
        for (let c = 0; c < n; c++) {
          let acc = qb[c];
          for (let j = 0; j < k; j++) acc += xq[j] * w[j * n + c];
          maxErr = Math.max(maxErr, Math.abs(acc * deq[c] - y[row * n + c]));
          maxY = Math.max(maxY, Math.abs(y[row * n + c]));
        }
      }
      assert.ok(maxErr <= 1e-5 * maxY + 1e-6, `${l.name}: max error ${maxErr} of max |y| ${maxY}`);
    }
    await runner.session.release();
  });

  it('dynamic: weight × weight_scale is the fake-quant model’s weight; int64 deq_scale and shards round-trip', async function () {
    requireChecker(this);
    const out = path.join(dir, 'dynamic');
    const r = await session(MODELS.cls).w8a8Dynamic().run();
    const saved = r.save(out, { saveType: ['safe_tensor'], partFileSize: 0.00005 }).files.map((f) => path.basename(f));
    assert.ok(saved.includes('quant_model_weight_w8a8_dynamic.safetensors.index.json'), saved.join(', '));
    assert.ok(saved.filter((f) => /^quant_model_weight_w8a8_dynamic-\d{5}-of-\d{5}\.safetensors$/.test(f)).length > 1);
    const desc = JSON.parse(fs.readFileSync(path.join(out, 'quant_model_description_w8a8_dynamic.json'), 'utf8'));
    assert.equal(desc.model_quant_type, 'W8A8_DYNAMIC');
    const set = loadSafetensors(path.join(out, 'quant_model_weight_w8a8_dynamic.safetensors.index.json')).tensors;
    assert.deepEqual(Object.keys(desc).filter((k) => k !== 'model_quant_type').sort(), [...set.keys()].sort());
    const shards = saved.filter((f) => f.endsWith('.safetensors')).map((f) => path.join(out, f));
    assert.equal(Object.keys(pythonRead(shards)).length, set.size);
    const fq = r.fakeQuant.graph;
    for (const l of r.layers.filter((x) => x.weight)) {
      const w = set.get(`${l.name}.weight`)!.data as Int8Array;
      const scale = set.get(`${l.name}.weight_scale`)!.data as Float32Array;
      assert.ok((set.get(`${l.name}.weight_offset`)!.data as Float32Array).every((v) => v === 0));
      const fqNode = fq.node(l.name)!;
      const fqWeight = fq.constantValue(fqNode.input[1])!.data as Float32Array;
      const { dims, axis } = l.weight!;
      const inner = dims.slice(axis + 1).reduce((x, y) => x * y, 1);
      for (let i = 0; i < w.length; i++) assert.equal(Math.fround(w[i] * scale[Math.floor(i / inner) % dims[axis]]), fqWeight[i], `${l.name}[${i}]`);
    }
    // int64 deq_scale: float32 bits in the low half
    const st = await session(MODELS.cls, { calibData: [{ x: clsBatch().x }] }).w8a8().run();
    const a = st.save(path.join(dir, 'f32'), ['safe_tensor']);
    const b = st.save(path.join(dir, 'i64'), { saveType: ['safe_tensor'], deqScale: 'int64', safetensorsName: 'w.safetensors', jsonName: 'd.json' });
    assert.deepEqual(b.files.map((f) => path.basename(f)).slice(0, 2), ['w.safetensors', 'd.json']);
    const f32 = loadSafetensors(a.files[0]).tensors;
    const i64 = loadSafetensors(b.files[0]).tensors;
    const name = [...f32.keys()].find((k) => k.endsWith('.deq_scale'))!;
    assert.equal(i64.get(name)!.dtype, 'I64');
    assert.deepEqual(Array.from(unpackDeqScale(i64.get(name)!)), Array.from(f32.get(name)!.data as Float32Array));
  });

  it('refuses bad save options naming the allowed values', async () => {
    const r = await session(MODELS.cls).w8a8Dynamic().run();
    assert.throws(() => r.save(path.join(dir, 'bad'), { saveType: ['safetensors' as never] }), /save.save_type: .*'safe_tensor', 'onnx', 'fake_quant_onnx', 'stats'/);
    assert.throws(() => r.save(path.join(dir, 'bad'), { partFileSize: -1 }), /save.part_file_size: got -1; expected a positive size in GB/);
    assert.throws(() => r.save(path.join(dir, 'bad'), { safetensorsName: 'a/b.safetensors' }), /save.safetensors_name: .*no folders/);
  });
});
