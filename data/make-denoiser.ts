/**
 * Builds and trains the small diffusion denoiser the timestep-quantization work is tested on,
 * and saves it as data/denoiser/mnist-denoiser.onnx (opset 17, IR 8), with its schedule in
 * data/denoiser/schedule.json.
 *
 * DDPM on MNIST digits downsampled to 14×14 (196 values in [-1, 1]), T = 50 steps, linear β from
 * 1e-3 to 0.2. The network predicts the noise ε from (x_t, t): a sinusoidal embedding of t/T
 * (16 frequencies, computed inside the graph from the float input `t`) concatenated with x_t,
 * then MLP 228 → 256 → 256 → 196 with ReLU. Trained with Adam on tfjs on the fixed train
 * split, seeds fixed. Its activations change with t: the reason timestep quantization exists.
 *
 *   npm run make-denoiser
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../sdk/kernels/backend';
import { downsample, mnistSplit } from '../sdk/eval/mnist';
import { seededNormal, seededRandom } from '../sdk/util/seeded-random';
import { DataType } from '../sdk/onnx/dtype';
import { makeAttribute } from '../sdk/onnx/graph';
import { Model } from '../sdk/onnx/model';
import { newGraph, newModel, newNode, newValueInfo } from '../sdk/onnx/proto';
import { makeTensor } from '../sdk/onnx/tensor';

export const STEPS = 50;
const PIXELS = 196;
const FREQS = 16;
const HIDDEN = 256;

export function schedule(): { betas: number[]; alphaBars: number[] } {
  const betas = Array.from({ length: STEPS }, (_, i) => 1e-3 + ((0.2 - 1e-3) * i) / (STEPS - 1));
  const alphaBars: number[] = [];
  betas.reduce((prod, b) => (alphaBars.push(prod * (1 - b)), prod * (1 - b)), 1);
  return { betas, alphaBars };
}

const freqs = Float32Array.from({ length: FREQS }, (_, i) => Math.exp(-Math.log(1000) * i / FREQS) * 1000 / STEPS);

function embed(t: tf.Tensor): tf.Tensor {
  const args = t.reshape([-1, 1]).mul(tf.tensor2d(freqs, [1, FREQS]));
  return tf.concat([tf.sin(args), tf.cos(args)], 1);
}

type Params = Record<string, tf.Variable>;

function init(): Params {
  const g = (shape: number[], seed: number) => tf.variable(tf.randomNormal(shape, 0, 1 / Math.sqrt(shape[0]), 'float32', seed));
  return {
    w1: g([PIXELS + 2 * FREQS, HIDDEN], 11), b1: tf.variable(tf.zeros([HIDDEN])),
    w2: g([HIDDEN, HIDDEN], 12), b2: tf.variable(tf.zeros([HIDDEN])),
    w3: g([HIDDEN, PIXELS], 13), b3: tf.variable(tf.zeros([PIXELS])),
  };
}

function forward(p: Params, x: tf.Tensor, t: tf.Tensor): tf.Tensor {
  const h1 = tf.relu(tf.matMul(tf.concat([x, embed(t)], 1), p.w1).add(p.b1));
  const h2 = tf.relu(tf.matMul(h1, p.w2).add(p.b2));
  return tf.matMul(h2, p.w3).add(p.b3);
}

function toOnnx(v: Record<string, Float32Array>): Model {
  const dims: Record<string, number[]> = { w1: [PIXELS + 2 * FREQS, HIDDEN], b1: [HIDDEN], w2: [HIDDEN, HIDDEN], b2: [HIDDEN], w3: [HIDDEN, PIXELS], b3: [PIXELS] };
  const init = Object.entries(v).map(([name, data]) => makeTensor(name, DataType.FLOAT, dims[name], data));
  init.push(makeTensor('freqs', DataType.FLOAT, [1, FREQS], freqs), makeTensor('t_shape', DataType.INT64, [2], BigInt64Array.of(-1n, 1n)));
  const nodes: ReturnType<typeof newNode>[] = [];
  const node = (op: string, inputs: string[], output: string, attrs: Record<string, number> = {}) => {
    nodes.push(newNode({ op_type: op, name: output, input: inputs, output: [output], attribute: Object.entries(attrs).map(([k, a]) => makeAttribute(k, a)) }));
    return output;
  };
  const args = node('Mul', [node('Reshape', ['t', 't_shape'], 't_col'), 'freqs'], 't_args');
  const emb = node('Concat', [node('Sin', [args], 't_sin'), node('Cos', [args], 't_cos')], 't_emb', { axis: 1 });
  const xin = node('Concat', ['x', emb], 'x_t_emb', { axis: 1 });
  const h1 = node('Relu', [node('Add', [node('MatMul', [xin, 'w1'], 'fc1_mm'), 'b1'], 'fc1')], 'h1');
  const h2 = node('Relu', [node('Add', [node('MatMul', [h1, 'w2'], 'fc2_mm'), 'b2'], 'fc2')], 'h2');
  node('Add', [node('MatMul', [h2, 'w3'], 'fc3_mm'), 'b3'], 'eps');
  const vi = (name: string, dim: Array<{ dim_param?: string; dim_value?: number }>) => newValueInfo({ name, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim } } } as never });
  const graph = newGraph({ name: 'mnist_denoiser', node: nodes, initializer: init, input: [vi('x', [{ dim_param: 'N' }, { dim_value: PIXELS }]), vi('t', [{ dim_param: 'N' }])], output: [vi('eps', [{ dim_param: 'N' }, { dim_value: PIXELS }])] });
  return new Model(newModel({ ir_version: 8, opset_import: [{ domain: '', version: 17 }], producer_name: 'quantbook data/make-denoiser.ts', graph }));
}

async function main(): Promise<void> {
  await initBackend();
  const { train } = mnistSplit();
  const images = downsample(train.images, train.count);
  const { alphaBars } = schedule();
  const p = init();
  const opt = tf.train.adam(1e-3);
  const rand = seededRandom(7);
  const gauss = seededNormal(rand);
  const BATCH = 128;
  for (let step = 0; step < 1500; step++) {
    const x0 = new Float32Array(BATCH * PIXELS);
    const eps = new Float32Array(BATCH * PIXELS);
    const xt = new Float32Array(BATCH * PIXELS);
    const ts = new Float32Array(BATCH);
    for (let i = 0; i < BATCH; i++) {
      const j = Math.floor(rand() * train.count);
      const t = Math.floor(rand() * STEPS);
      ts[i] = t;
      const a = Math.sqrt(alphaBars[t]);
      const b = Math.sqrt(1 - alphaBars[t]);
      for (let k = 0; k < PIXELS; k++) {
        x0[i * PIXELS + k] = images[j * PIXELS + k];
        eps[i * PIXELS + k] = gauss();
        xt[i * PIXELS + k] = a * x0[i * PIXELS + k] + b * eps[i * PIXELS + k];
      }
    }
    const [xT, tT, eT] = [tf.tensor2d(xt, [BATCH, PIXELS]), tf.tensor1d(ts), tf.tensor2d(eps, [BATCH, PIXELS])];
    const loss = opt.minimize(() => tf.losses.meanSquaredError(eT, forward(p, xT, tT)) as tf.Scalar, true) as tf.Scalar;
    if ((step + 1) % 250 === 0) console.log(`step ${step + 1}: loss ${(await loss.data())[0].toFixed(4)}`);
    tf.dispose([xT, tT, eT, loss]);
  }
  const values: Record<string, Float32Array> = {};
  for (const [k, t] of Object.entries(p)) values[k] = Float32Array.from(await t.data());
  const dir = path.join(__dirname, '..', '..', 'data', 'denoiser');
  fs.mkdirSync(dir, { recursive: true });
  toOnnx(values).save(path.join(dir, 'mnist-denoiser.onnx'));
  fs.writeFileSync(path.join(dir, 'schedule.json'), `${JSON.stringify({ steps: STEPS, ...schedule() }, null, 1)}\n`);
  console.log(`wrote ${dir}/mnist-denoiser.onnx and schedule.json`);
}

if (require.main === module) main().catch((e) => { console.error(e); process.exit(1); });
