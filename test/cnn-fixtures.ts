/** The MNIST CNN (data/mnist-cnn, made by `npm run make-mnist-cnn`) and helpers to score it on ORT. */
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { MnistSet } from '../sdk/eval/mnist';
import { ortAccuracy as scoreOnOrt } from '../sdk/eval/classify';
import { mnist } from './transformer-fixtures';

export const CNN = path.join(__dirname, '..', '..', 'data', 'mnist-cnn', 'mnist-cnn.onnx');
export const SAMPLE_SHAPE = [1, 28, 28];
export { mnist };

export function cnnBatch(set: MnistSet, start: number, n: number): { x: ort.Tensor } {
  return { x: new ort.Tensor('float32', set.images.slice(start * 784, (start + n) * 784), [n, 1, 28, 28]) };
}

export const cnnCalib = () => [0, 1, 2, 3, 4, 5, 6, 7].map((i) => cnnBatch(mnist().train, i * 32, 32));

/** Top-1 accuracy of a model (file or bytes) on ORT CPU over `set`. */
export const ortAccuracy = (model: string | Uint8Array, set: MnistSet, limit = set.count): Promise<number> => scoreOnOrt(model, set, SAMPLE_SHAPE, { limit });
