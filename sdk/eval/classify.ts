/** Top-1 accuracy of a classifier ONNX model on ONNX Runtime over a labelled set. */
import * as ort from 'onnxruntime-node';
import { LabeledSet } from '../train/fit';

export interface OrtAccuracyOptions {
  /** samples per run (default 500) */
  batchSize?: number;
  /** score the first `limit` samples only */
  limit?: number;
  /** input to feed and logits to read (default: the model's first of each) */
  input?: string;
  output?: string;
}

export async function ortAccuracy(model: string | Uint8Array, set: LabeledSet, sampleShape: number[], options: OrtAccuracyOptions = {}): Promise<number> {
  const s = await ort.InferenceSession.create(model as string);
  const input = options.input ?? s.inputNames[0];
  const output = options.output ?? s.outputNames[0];
  const per = sampleShape.reduce((a, b) => a * b, 1);
  const n = Math.min(set.count, options.limit ?? set.count);
  const step = options.batchSize ?? 500;
  let correct = 0;
  try {
    for (let start = 0; start < n; start += step) {
      const k = Math.min(step, n - start);
      const x = new ort.Tensor('float32', set.images.slice(start * per, (start + k) * per), [k, ...sampleShape]);
      const out = (await s.run({ [input]: x }))[output];
      const classes = out.dims[out.dims.length - 1];
      const logits = out.data as Float32Array;
      for (let j = 0; j < k; j++) {
        let best = 0;
        for (let c = 1; c < classes; c++) if (logits[j * classes + c] > logits[j * classes + best]) best = c;
        if (best === set.labels[start + j]) correct++;
      }
    }
  } finally {
    await s.release();
  }
  return correct / n;
}
