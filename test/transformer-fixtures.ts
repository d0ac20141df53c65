/** The project's MNIST transformer (data/make-transformer.ts) and its fixed data split. */
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { mnistSplit, MnistSet } from '../sdk/eval/mnist';

export const TRANSFORMER = path.join(__dirname, '..', '..', 'data', 'transformer', 'mnist-transformer.onnx');

let split: { train: MnistSet; test: MnistSet } | undefined;
export const mnist = () => (split ??= mnistSplit());

export function mnistBatch(set: MnistSet, start: number, n: number): { x: ort.Tensor } {
  return { x: new ort.Tensor('float32', set.images.slice(start * 784, (start + n) * 784), [n, 28, 28]) };
}

/** Four training batches of 64: the calibration data of the outlier tests. */
export const transformerCalib = () => [0, 1, 2, 3].map((i) => mnistBatch(mnist().train, i * 64, 64));

export async function logits(model: string | Uint8Array, feeds: { x: ort.Tensor }, level?: ort.InferenceSession.SessionOptions['graphOptimizationLevel']): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(model as string, level ? { graphOptimizationLevel: level } : {});
  try {
    return (await s.run(feeds)).logits.data as Float32Array;
  } finally {
    await s.release();
  }
}

export function accuracy(out: Float32Array, labels: Int32Array): number {
  let ok = 0;
  for (let i = 0; i < labels.length; i++) {
    let best = 0;
    for (let j = 1; j < 10; j++) if (out[i * 10 + j] > out[i * 10 + best]) best = j;
    if (best === labels[i]) ok++;
  }
  return ok / labels.length;
}
