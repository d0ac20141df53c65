/**
 * Every entry that takes calibration data takes the same CalibrationSource: a folder of batch
 * files gives the same result as the feeds it holds (and labels.json beside them is not a batch).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { calibrate, collectBatches, compareModels, layerSensitivity, loadModel, prepareFloat, QuantbookError, sampleLayerInputs, selectLayers, session, writeNpy } from '../../sdk';
import { MODELS, tempDir } from '../helpers';
import { clsBatch } from '../ocr-fixtures';

describe('CalibrationSource: a folder and the feeds it holds give one result', () => {
  const dir = tempDir();
  const folder = path.join(dir, 'calib');
  let feeds: Array<{ x: ort.Tensor }>;
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  before(() => {
    const { x } = clsBatch();
    const per = x.dims.slice(1).reduce((a, b) => a * b, 1);
    const rows = 4;
    feeds = [0, 1].map((b) => ({ x: new ort.Tensor('float32', (x.data as Float32Array).slice(b * rows * per, (b + 1) * rows * per), [rows, ...x.dims.slice(1)]) }));
    fs.mkdirSync(folder);
    feeds.forEach((f, b) => writeNpy(path.join(folder, `batch${b}.npy`), f.x.data as Float32Array, f.x.dims));
    fs.writeFileSync(path.join(folder, 'labels.json'), JSON.stringify({ 'batch0.npy': '0', 'batch1.npy': '180' }));
  });

  it('collectBatches reads the folder (not its name, character by character) and leaves labels.json out', async () => {
    const read = await collectBatches(`${folder}/`, ['x']);
    assert.equal(read.length, 2);
    assert.deepEqual(Array.from(read[1].x.data as Float32Array), Array.from(feeds[1].x.data as Float32Array));
    await assert.rejects(collectBatches(path.join(dir, 'nope/'), ['x']), (e: QuantbookError) => e.code === 'FILE_NOT_FOUND');
  });

  it('result.compare and compareModels, sensitivity, layer samples and calibrate accept the folder', async () => {
    const result = await session(MODELS.cls, { calibData: folder }).w8a8().run();
    const fromFeeds = await result.compare(feeds);
    assert.deepEqual(await result.compare(`${folder}/`), fromFeeds);
    const layers = result.layerOutputs().slice(0, 3);
    assert.deepEqual(await compareModels(result.float, result.qdq, layers, folder, { attribution: false }), await compareModels(result.float, result.qdq, layers, feeds, { attribution: false }));

    const float = prepareFloat(loadModel(MODELS.cls));
    const first = selectLayers(float).layers.filter((l) => l.weight).slice(0, 1);
    const build = (keep: unknown[]) => (keep.length ? result.qdq : float);
    const a = await layerSensitivity(float, first, build, { data: folder });
    const b = await layerSensitivity(float, first, build, { data: feeds });
    assert.ok(Number.isFinite(a.all.sqnrDb));
    assert.deepEqual(a.rows, b.rows);
    assert.deepEqual(a.all, b.all);

    const s = await sampleLayerInputs(float, first, folder, { samples: 2, crop: 8 });
    const t = await sampleLayerInputs(float, first, feeds, { samples: 2, crop: 8 });
    assert.ok(s.size === 1);
    assert.deepEqual(s, t);

    const c = await calibrate(float, folder, { maxBatches: 2 });
    const d = await calibrate(float, feeds, { maxBatches: 2 });
    assert.deepEqual(c.rows(), d.rows());
    assert.equal(c.metadata.batches, '2');
  });
});
