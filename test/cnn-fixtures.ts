/** The MNIST CNN (data/mnist-cnn, made by `npm run make-mnist-cnn`) and helpers to score it on ORT. */
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { MnistSet } from '../sdk/eval/mnist';
import { mnist } from './transformer-fixtures';

export const CNN = path.join(__dirname, '..', '..', 'data', 'mnist-cnn', 'mnist-cnn.onnx');
export const SAMPLE_SHAPE = [1, 28, 28];
export { mnist };

export function cnnBatch(set: MnistSet, start: number, n: number): { x: ort.Tensor } {
  return { x: new ort.Tensor('float32', set.images.slice(start * 784, (start + n) * 784), [n, 1, 28, 28]) };
}

export const cnnCalib = () => [0, 1, 2, 3, 4, 5, 6, 7].map((i) => cnnBatch(mnist().train, i * 32, 32));

/** Top-1 accuracy of a model (file or bytes) on ORT CPU over `set`. */
export async function ortAccuracy(model: string | Uint8Array, set: MnistSet, limit = set.count): Promise<number> {
  const s = await ort.InferenceSession.create(model as string);
  let correct = 0;
  try {
    for (let i = 0; i < limit; i += 500) {
      const n = Math.min(500, limit - i);
      const out = (await s.run(cnnBatch(set, i, n)))[s.outputNames[0]].data as Float32Array;
      for (let j = 0; j < n; j++) {
        let best = 0;
        for (let c = 1; c < 10; c++) if (out[j * 10 + c] > out[j * 10 + best]) best = c;
        if (best === set.labels[i + j]) correct++;
      }
    }
  } finally {
    await s.release();
  }
  return correct / limit;
}
