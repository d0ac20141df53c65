/** The shipped OCR data (data/) for the PP-OCR models, and evaluation helpers for tests. */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { bundledModelPath, loadModel, ppocr } from '../sdk';
import { clsSet } from '../sdk/eval/ocr-data';

export { DATA_DIR as DATA, recBatches, detPages } from '../sdk/eval/ocr-data';

export function labels(dir: string): Record<string, string> {
  return JSON.parse(fs.readFileSync(path.join(dir, 'labels.json'), 'utf8'));
}

export const clsBatch = () => clsSet();

export const recKeys = () => ppocr.loadRecKeys(bundledModelPath('recKeys'));

function createSession(model: Uint8Array | string, options: ort.InferenceSession.SessionOptions = {}): Promise<ort.InferenceSession> {
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options);
}

export async function recognise(model: Uint8Array | string, batches: Array<{ x: ort.Tensor }>): Promise<{ texts: string[]; probs: Float32Array[] }> {
  const s = await createSession(model);
  const keys = recKeys();
  const texts: string[] = [];
  const probs: Float32Array[] = [];
  for (const b of batches) {
    const out = Object.values(await s.run(b))[0];
    texts.push(...ppocr.ctcDecode(out, keys));
    probs.push(out.data as Float32Array);
  }
  await s.release();
  return { texts, probs };
}

/** First output of each batch; `level` sets ORT's graph optimisation (e.g. 'disabled': no fusion). */
export async function runAll(model: Uint8Array | string, batches: Array<Record<string, ort.Tensor>>, level?: ort.InferenceSession.SessionOptions['graphOptimizationLevel']): Promise<Float32Array[]> {
  const s = await createSession(model, level ? { graphOptimizationLevel: level } : {});
  const out: Float32Array[] = [];
  for (const b of batches) out.push(Object.values(await s.run(b))[0].data as Float32Array);
  await s.release();
  return out;
}

export function diffStats(a: Float32Array[], b: Float32Array[]): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  let n = 0;
  a.forEach((x, i) => x.forEach((v, j) => {
    const d = Math.abs(v - b[i][j]);
    if (d > max) max = d;
    sum += d;
    n++;
  }));
  return { max, mean: n ? sum / n : 0 };
}

export const maxAbsDiff = (a: Float32Array[], b: Float32Array[]): number => diffStats(a, b).max;

/** Op types ORT runs after optimisation (what actually fused). */
export async function optimizedOpCounts(model: Uint8Array, file: string): Promise<Record<string, number>> {
  const s = await ort.InferenceSession.create(model, { optimizedModelFilePath: file, graphOptimizationLevel: 'extended' });
  await s.release();
  const counts: Record<string, number> = {};
  for (const n of loadModel(file).graph.nodes) counts[n.op_type!] = (counts[n.op_type!] ?? 0) + 1;
  return counts;
}
