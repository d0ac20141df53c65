/** The project's MNIST diffusion denoiser (data/make-denoiser.ts): noisy inputs at chosen timesteps. */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { downsample } from '../sdk/eval/mnist';
import { seededNormal, seededRandom } from '../sdk/util/seeded-random';
import { mnist } from './transformer-fixtures';

export const DENOISER_DIR = path.join(__dirname, '..', '..', 'data', 'denoiser');
export const DENOISER = path.join(DENOISER_DIR, 'mnist-denoiser.onnx');
const schedule = () => JSON.parse(fs.readFileSync(path.join(DENOISER_DIR, 'schedule.json'), 'utf8')) as { steps: number; alphaBars: number[] };

/** x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε for `count` digits from `start` of the train or test split, one timestep per batch. */
export function noisyBatch(split: 'train' | 'test', start: number, count: number, t: number, seed = 1): { x: ort.Tensor; t: ort.Tensor } {
  const set = mnist()[split];
  const x0 = downsample(set.images.subarray(start * 784, (start + count) * 784), count);
  const r = seededRandom(seed + 1000 * t);
  const gauss = seededNormal(r);
  const ab = schedule().alphaBars[t];
  const xt = x0.map((v) => Math.sqrt(ab) * v + Math.sqrt(1 - ab) * gauss());
  return { x: new ort.Tensor('float32', xt, [count, 196]), t: new ort.Tensor('float32', new Float32Array(count).fill(t), [count]) };
}

/** Calibration: 32 training digits at every 5th timestep. */
export const denoiserCalib = () => Array.from({ length: 10 }, (_, i) => noisyBatch('train', i * 32, 32, i * 5));
