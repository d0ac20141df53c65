import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError, loadModel, loadSafetensors, normalizeSessionConfig, runSession, session, verifyFileSet } from '../../sdk';
import { MODELS, onnxCheck, requireChecker, tempDir } from '../helpers';
import { clsBatch, runAll } from '../ocr-fixtures';

const rejects = (config: unknown, pattern: RegExp) => assert.throws(() => normalizeSessionConfig(config), (e: QuantbookError) => pattern.test(e.message));

describe('session API and SessionConfig', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const calib = [{ x: clsBatch().x }];

  describe('SessionConfig validation (msModelSlim rules)', () => {
    it('refuses a map with only "save"', () => rejects({ processor_cfg_map: { save: { output_path: 'o' } } }, /at least one quantization processor.*'save' cannot be used alone/));
    it('refuses unknown processors, listing the allowed ones', () => rejects({ processor_cfg_map: { w4a16: {} } }, /unknown processor 'w4a16'; allowed: 'm3', 'm4', 'm6', 'w8a8', 'w8a8_dynamic', 'w8a8_timestep', 'fa3', 'save'/));
    it("refuses 'fa3' without 'w8a8_dynamic'", () => rejects({ processor_cfg_map: { w8a8: {}, fa3: {} } }, /'fa3' must be used together with 'w8a8_dynamic'/));
    it('refuses an act_method outside the list', () => rejects({ processor_cfg_map: { w8a8: { cfg: { act_method: 'kl' } } }, calib_data: [] }, /w8a8.cfg.act_method: got "kl"; expected one of 'minmax', 'histogram', 'mixed'/));
    it('refuses unknown keys, naming the allowed ones', () => rejects({ processor_cfg_map: { w8a8: { cfg: {}, disabled: [] } }, calib_data: [] }, /unknown key "disabled"; allowed: cfg, disable_names/));
    it("refuses an op_set outside 'amct', 'extended', 'msmodelslim'", () => rejects({ processor_cfg_map: { w8a8: { cfg: { op_set: 'all' } } }, calib_data: [] }, /w8a8.cfg.op_set: got "all"; expected one of 'amct', 'extended', 'msmodelslim'/));
    it('refuses a speed_fallback that is not true or false; the fluent speedFallback is the same setting', () => {
      rejects({ processor_cfg_map: { w8a8: { cfg: { speed_fallback: 'yes' } } }, calib_data: [] }, /w8a8.cfg.speed_fallback: got "yes"; expected true or false/);
      const config = session(MODELS.cls, { calibData: [] }).w8a8({ speedFallback: true }).config();
      assert.equal(config.processorCfgMap.w8a8!.cfg.speedFallback, true);
      assert.equal(normalizeSessionConfig({ processor_cfg_map: { w8a8: {} }, calib_data: [] }).processorCfgMap.w8a8!.cfg.speedFallback, false);
    });
    it('refuses one key in both spellings (act_method and actMethod), naming both', () => rejects({ processor_cfg_map: { w8a8: { cfg: { act_method: 'minmax', actMethod: 'histogram' } } }, calib_data: [] }, /w8a8.cfg: "act_method" and "actMethod" are one setting given twice; keep one spelling/));
    it('static w8a8 without calib_data is Data-Free: accepted (it calibrates on virtual inputs, session-seed.test.ts)', () => assert.equal(normalizeSessionConfig({ processor_cfg_map: { w8a8: {} } }).calibData, undefined));
    it('refuses two processors that both quantize every layer', () => assert.throws(() => normalizeSessionConfig({ processor_cfg_map: { w8a8: {}, w8a8_timestep: { timestep_sep: 25 } }, calib_data: [] }), (e: QuantbookError) => /'w8a8' and 'w8a8_timestep' each quantize every layer; choose one/.test(e.message)));
    it('accepts camelCase and snake_case alike', () => {
      const a = normalizeSessionConfig({ processor_cfg_map: { w8a8: { cfg: { act_method: 'mixed' }, disable_names: ['a'] } }, calib_data: [] });
      const b = normalizeSessionConfig({ processorCfgMap: { w8a8: { cfg: { actMethod: 'mixed' }, disableNames: ['a'] } }, calibData: [] });
      assert.deepEqual(a, b);
    });
    it("device 'npu' without a CANN build of ONNX Runtime fails saying what is missing", async () => {
      await assert.rejects(session(MODELS.cls, { calibData: calib, device: 'npu' }).w8a8().run(), (e: QuantbookError) => e.code === 'UNSUPPORTED' && /device 'npu': missing an ONNX Runtime build with the CANN \(Ascend\) execution provider/.test(e.message));
    });
  });

  it('the fluent form and a snake_case JSON config file give the same quantized model', async function () {
    const fluent = await session(MODELS.cls, { calibData: calib }).w8a8('histogram').disable('p2o.Conv.0').run();
    const file = path.join(dir, 'session.json');
    fs.writeFileSync(file, JSON.stringify({ processor_cfg_map: { w8a8: { cfg: { act_method: 'histogram' }, disable_names: ['p2o.Conv.0'] }, save: { output_path: path.join(dir, 'from-json'), save_type: ['safe_tensor', 'onnx', 'fake_quant_onnx', 'stats'] } } }));
    const fromJson = await runSession(MODELS.cls, { ...JSON.parse(fs.readFileSync(file, 'utf8')), calib_data: calib });
    assert.ok(Buffer.compare(Buffer.from(fluent.qdq.toBytes()), Buffer.from(fromJson.qdq.toBytes())) === 0);
    assert.deepEqual(fluent.selection.skipped.map((s) => s.name), ['p2o.Conv.0']);
    const saved = fs.readdirSync(path.join(dir, 'from-json')).sort();
    assert.deepEqual(saved, ['ch_ppocr_mobile_v2.0_cls_infer_w8a8.manifest.json', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8.onnx', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8_calibration.arrow', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8_fake_quant.onnx', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8_summary.json', 'quant_model_description_w8a8.json', 'quant_model_weight_w8a8.safetensors']);
    requireChecker(this);
    onnxCheck(path.join(dir, 'from-json', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8.onnx'));
  });

  it('save() writes a model ORT runs with the result the session reported', async () => {
    const s = session(loadModel(MODELS.cls), { calibData: calib }).w8a8();
    const { files } = await s.save(path.join(dir, 'out'));
    const model = files.find((f) => f.endsWith('_w8a8.onnx'))!;
    const [fromFile] = await runAll(model, calib);
    const [inMemory] = await runAll((await s.run()).qdq.toBytes(), calib);
    assert.deepEqual(fromFile, inMemory);
  });

  it('compare(): per-layer SQNR, cosine and max error of fp32 vs int8, and the model output', async () => {
    const result = await session(MODELS.cls, { calibData: calib }).w8a8().run();
    const rows = await result.compare(calib);
    const layers = rows.filter((r) => r.opType !== 'output');
    assert.ok(layers.length >= 40);
    for (const r of layers) assert.ok(Number.isFinite(r.sqnrDb) && r.cosine > 0.9, `${r.layer}: ${r.sqnrDb} dB, cos ${r.cosine}`);
    const out = rows.find((r) => r.opType === 'output')!;
    // 120 two-class softmaxes: one image near the boundary (fp32 p = 0.64) dominates both numbers
    assert.ok(out.cosine > 0.998 && out.sqnrDb > 20, `output ${out.sqnrDb} dB, cosine ${out.cosine}`);
  });

  it('a re-save without sharding removes the earlier shards and index; files that are not the set\'s stay', async () => {
    const result = await session(MODELS.cls, { calibData: calib }).w8a8().run();
    const out = path.join(dir, 'resave');
    const sharded = result.save(out, { saveType: ['safe_tensor'], partFileSize: 0.00005 });
    const index = sharded.files.find((f) => f.endsWith('.index.json'))!;
    assert.ok(index && sharded.files.filter((f) => /-\d{5}-of-\d{5}\.safetensors$/.test(f)).length > 1);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    result.save(out, { saveType: ['safe_tensor'] });
    const left = fs.readdirSync(out).sort();
    assert.deepEqual(left, ['ch_ppocr_mobile_v2.0_cls_infer_w8a8.manifest.json', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8_summary.json', 'notes.txt', 'quant_model_description_w8a8.json', 'quant_model_weight_w8a8.safetensors']);
    assert.throws(() => loadSafetensors(index), (e: QuantbookError) => e.code === 'FILE_NOT_FOUND');
    assert.ok(loadSafetensors(path.join(out, 'quant_model_weight_w8a8.safetensors')).tensors.size > 0);
    assert.ok(verifyFileSet(out, 'ch_ppocr_mobile_v2.0_cls_infer_w8a8').ok);
  });

  it('a session without a processor says what to do', async () => {
    await assert.rejects(session(MODELS.cls).run(), /choose a quantization processor first/);
  });
});
