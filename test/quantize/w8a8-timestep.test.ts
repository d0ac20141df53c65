/**
 * w8a8_timestep on the project's diffusion denoiser: one ONNX model that quantizes statically
 * for t ≥ timestep_sep and dynamically below (an If on the timestep), statistics per timestep in
 * Arrow, and the error of each side against fp32.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as arrow from 'apache-arrow';
import * as ort from 'onnxruntime-node';
import { QuantbookError, normalizeSessionConfig, session } from '../../sdk';
import { compareOutputs } from '../../sdk/eval/metrics';
import { onnxCheck, requireChecker, tempDir } from '../helpers';
import { DENOISER, denoiserCalib, noisyBatch } from '../denoiser-fixtures';

async function eps(model: string | Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(model as string);
  try {
    return (await s.run(feeds)).eps.data as Float32Array;
  } finally {
    await s.release();
  }
}

describe('w8a8_timestep (diffusion denoiser)', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const calib = denoiserCalib();
  let result: Awaited<ReturnType<ReturnType<typeof session>['run']>>;
  before(async () => {
    result = await session(DENOISER, { calibData: calib }).w8a8Timestep(25).run();
  });

  it('one model: bit-identical to the static W8A8 model for t ≥ 25 and to the dynamic one below; SQNR vs fp32 stated', async () => {
    const { quantizeW8A8Dynamic, quantizeW8A8, loadModel } = await import('../../sdk');
    const staticModel = (await quantizeW8A8(loadModel(DENOISER), calib.filter((b) => (b.t.data as Float32Array)[0] >= 25))).qdq.toBytes();
    const dynamicModel = quantizeW8A8Dynamic(loadModel(DENOISER)).qdq.toBytes();
    for (const t of [0, 12, 24, 25, 37, 49]) {
      const feeds = noisyBatch('test', 0, 64, t, 99);
      const combined = await eps(result.qdq.toBytes(), feeds);
      const expected = await eps(t >= 25 ? staticModel : dynamicModel, feeds);
      assert.deepEqual(Array.from(combined), Array.from(expected), `t = ${t}`);
      const { sqnrDb } = compareOutputs(await eps(DENOISER, feeds), combined);
      console.log(`      t = ${t} (${t >= 25 ? 'static' : 'dynamic'}): noise-prediction SQNR vs fp32 ${sqnrDb.toFixed(2)} dB`);
      assert.ok(sqnrDb > 15, `t = ${t}: ${sqnrDb} dB`);
    }
  });

  it('statistics per timestep land in the Arrow file, each marked with its side', () => {
    const { files } = result.save(dir, ['stats', 'onnx']);
    const file = files.find((f) => f.endsWith('_timesteps.arrow'))!;
    const table = arrow.tableFromIPC(fs.readFileSync(file));
    const steps = [...new Set(table.getChild('timestep')!.toArray() as Int32Array)];
    assert.deepEqual(steps, [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]);
    for (let i = 0; i < table.numRows; i++) {
      const row = table.get(i)!;
      assert.equal(row.side, row.timestep >= 25 ? 'static' : 'dynamic');
      assert.ok(row.max >= row.min);
    }
    // activation ranges do change with the timestep (why the processor exists)
    const fc1 = (t: number) => [...Array(table.numRows).keys()].map((i) => table.get(i)!).find((r) => r.tensor === 'x_t_emb' && r.timestep === t)!;
    assert.notEqual(fc1(0).max, fc1(45).max);
  });

  it('the combined model passes onnx.checker (If with both branches)', function () {
    requireChecker(this);
    const file = path.join(dir, 'combined.onnx');
    result.qdq.save(file);
    onnxCheck(file);
  });

  it('refuses batches that mix timesteps, and configs without an integer timestep_sep', async () => {
    const a = noisyBatch('train', 0, 4, 3);
    const b = noisyBatch('train', 0, 4, 40);
    const mixed = { x: new ort.Tensor('float32', Float32Array.from([...(a.x.data as Float32Array), ...(b.x.data as Float32Array)]), [8, 196]), t: new ort.Tensor('float32', Float32Array.of(3, 3, 3, 3, 40, 40, 40, 40), [8]) };
    await assert.rejects(session(DENOISER, { calibData: [mixed] }).w8a8Timestep(25).run(), /batch 0 mixes timesteps \(3, 40\); give each batch a single timestep/);
    await assert.rejects(session(DENOISER, { calibData: [a] }).w8a8Timestep(25).run(), /no calibration batch has t ≥ timestep_sep \(25\); timesteps seen: 3/);
    assert.throws(() => normalizeSessionConfig({ processor_cfg_map: { w8a8_timestep: { cfg: { act_method: 'minmax' }, disable_names: [] } }, calib_data: [] }), (e: QuantbookError) => /w8a8_timestep.timestep_sep: got undefined; expected an integer/.test(e.message));
    assert.throws(() => normalizeSessionConfig({ processor_cfg_map: { w8a8_timestep: { timestep_sep: 25 } } }), /'w8a8_timestep' calibrates per timestep and needs calibration data/);
  });
});
