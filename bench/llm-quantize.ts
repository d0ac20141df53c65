/**
 * Child process of `npm run bench -- llm`: W8A8_DYNAMIC of a decoder loaded without its external
 * data (weights read as the quantizer reaches them), saved with external data to <out>. Prints one
 * JSON line: wall time and the process's peak RSS (VmHWM), so the parent reads this step alone.
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadModel, quantizeW8A8Dynamic } from '../sdk';
import { peakRssBytes } from '../test/llm/make-decoder';

const [modelPath, out] = process.argv.slice(2);
const started = Date.now();
const r = quantizeW8A8Dynamic(loadModel(modelPath, { loadExternalData: false }));
fs.mkdirSync(out, { recursive: true });
r.qdq.save(path.join(out, 'model.onnx'), { externalData: true });
console.log(JSON.stringify({ seconds: (Date.now() - started) / 1000, peakRss: peakRssBytes(), layers: r.layers.length }));
