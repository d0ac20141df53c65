import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { loadModel } from '../../sdk';
import { FEEDS, MODELS, onnxCheck, requireChecker, runModel, sameBytes, tempDir } from '../helpers';

describe('ONNX model IO: round trip of the real models', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const key of Object.keys(MODELS) as Array<keyof typeof MODELS>) {
    describe(key, () => {
      const saved = path.join(dir, `${key}.onnx`);

      it('load → save writes a model whose ORT outputs are bit-identical to the original', async () => {
        const model = loadModel(MODELS[key]);
        const result = model.save(saved);
        assert.equal(result.externalDataPath, undefined);
        const feeds = FEEDS[key]();
        const before = await runModel(MODELS[key], feeds);
        const after = await runModel(saved, feeds);
        assert.deepEqual(Object.keys(after).sort(), Object.keys(before).sort());
        for (const name of Object.keys(before)) assert.ok(sameBytes(before[name], after[name]), `output ${name} differs`);
      });

      it('the saved file is the same bytes as the original (nothing lost or reordered)', () => {
        assert.ok(Buffer.compare(fs.readFileSync(saved), fs.readFileSync(MODELS[key])) === 0);
      });

      it('onnx.checker accepts the saved file', function () {
        requireChecker(this);
        onnxCheck(saved);
      });

      it('loads from a Buffer and saves to a Buffer identically', () => {
        const bytes = fs.readFileSync(MODELS[key]);
        assert.ok(Buffer.compare(Buffer.from(loadModel(bytes).toBytes()), bytes) === 0);
      });
    });
  }
});
