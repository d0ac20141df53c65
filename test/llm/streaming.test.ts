/**
 * Quantizing a decoder without holding its fp32 weights (issue 26): loaded with
 * `loadExternalData: false`, each weight is read from the data file when the quantizer reaches
 * it, and what is saved is byte for byte what the in-memory run saves.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { loadModel, quantizeW8A8Dynamic } from '../../sdk';
import { tempDir } from '../helpers';
import { SHAPES, generateDecoder } from './decoder';

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
    const inMemory = streamed.qdq.proto.graph!.initializer.filter((t) => t.data_location !== 1).reduce((a, t) => a + (t.raw_data?.byteLength ?? 0), 0);
    assert.ok(inMemory < 0.3 * dataBytes, `${inMemory} bytes held of ${dataBytes}`);
    const whole = quantizeW8A8Dynamic(loadModel(modelPath));
    for (const [name, r] of [['streamed', streamed], ['whole', whole]] as const) {
      fs.mkdirSync(path.join(dir, name));
      r.qdq.save(path.join(dir, name, 'model.onnx'), { externalData: true });
    }
    const files = fs.readdirSync(path.join(dir, 'whole')).sort();
    assert.deepEqual(files, ['model.onnx', 'model.onnx.data']);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'streamed')).sort(), files);
    for (const f of files) assert.ok(fs.readFileSync(path.join(dir, 'streamed', f)).equals(fs.readFileSync(path.join(dir, 'whole', f))), `${f} differs`);
  });
});
