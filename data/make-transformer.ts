/**
 * Builds and trains the small transformer the outlier-suppression work is tested on, and saves
 * it as data/transformer/mnist-transformer.onnx (opset 17, IR 8).
 *
 * Task: MNIST digits read as sequences (28 rows = 28 tokens of 28 pixels). Model: token embedding
 * + learned positions, one pre-norm block (LayerNorm → 4-head self-attention → residual,
 * LayerNorm → MLP 64→128→64 with ReLU → residual), mean over tokens, LayerNorm, classifier.
 * Trained with Adam on tfjs on the fixed train split (sdk/eval/mnist.ts), seed fixed.
 *
 * Activation outliers: LLMs develop a few input channels of huge magnitude at the LayerNorm
 * outputs (the LayerNorm weights grow there); a model this small trained this briefly does
 * not. They are produced the way they arise: after training, channels OUTLIERS of both
 * pre-block LayerNorms get their weight and bias multiplied by OUTLIER_GAIN, and the matching
 * input rows of the next MatMuls are divided by it. The function is unchanged (up to float
 * rounding); the activations entering Q/K/V and the MLP now have outlier channels.
 *
 *   npm run make-transformer
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../sdk/kernels/backend';
import { mnistSplit } from '../sdk/eval/mnist';
import { DataType } from '../sdk/onnx/dtype';
import { makeAttribute } from '../sdk/onnx/graph';
import { Model } from '../sdk/onnx/model';
import { newGraph, newModel, newNode, newValueInfo } from '../sdk/onnx/proto';
import { makeTensor } from '../sdk/onnx/tensor';

const T = 28;
const D_IN = 28;
const D = 64;
const HEADS = 4;
const D_FF = 128;
export const OUTLIERS = [5, 22, 47];
export const OUTLIER_GAIN = 40;
const EPOCHS = 4;
const BATCH = 64;

type Params = Record<string, tf.Variable>;

function init(): Params {
  const g = (shape: number[], scale: number, seed: number) => tf.variable(tf.randomNormal(shape, 0, scale, 'float32', seed));
  const z = (shape: number[]) => tf.variable(tf.zeros(shape));
  const o = (shape: number[]) => tf.variable(tf.ones(shape));
  const s = (fanIn: number) => 1 / Math.sqrt(fanIn);
  return {
    embW: g([D_IN, D], s(D_IN), 1), embB: z([D]), pos: g([T, D], 0.02, 2),
    ln1W: o([D]), ln1B: z([D]),
    wq: g([D, D], s(D), 3), bq: z([D]), wk: g([D, D], s(D), 4), bk: z([D]), wv: g([D, D], s(D), 5), bv: z([D]), wo: g([D, D], s(D), 6), bo: z([D]),
    ln2W: o([D]), ln2B: z([D]),
    w1: g([D, D_FF], s(D), 7), b1: z([D_FF]), w2: g([D_FF, D], s(D_FF), 8), b2: z([D]),
    lnfW: o([D]), lnfB: z([D]),
    wc: g([D, 10], s(D), 9), bc: z([10]),
  };
}

function layerNorm(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return x.sub(mean).div(variance.add(1e-5).sqrt()).mul(w).add(b);
}

function forward(p: Params, x: tf.Tensor): tf.Tensor {
  const n = x.shape[0];
  let h = tf.matMul(x.reshape([-1, D_IN]), p.embW).add(p.embB).reshape([n, T, D]).add(p.pos);
  const a = layerNorm(h, p.ln1W, p.ln1B).reshape([-1, D]);
  const split = (t: tf.Tensor) => t.reshape([n, T, HEADS, D / HEADS]).transpose([0, 2, 1, 3]);
  const q = split(tf.matMul(a, p.wq).add(p.bq));
  const k = split(tf.matMul(a, p.wk).add(p.bk));
  const v = split(tf.matMul(a, p.wv).add(p.bv));
  const att = tf.softmax(tf.matMul(q, k, false, true).mul(1 / Math.sqrt(D / HEADS)));
  const ctx = tf.matMul(att, v).transpose([0, 2, 1, 3]).reshape([-1, D]);
  h = h.add(tf.matMul(ctx, p.wo).add(p.bo).reshape([n, T, D]));
  const m = layerNorm(h, p.ln2W, p.ln2B).reshape([-1, D]);
  h = h.add(tf.matMul(tf.relu(tf.matMul(m, p.w1).add(p.b1)), p.w2).add(p.b2).reshape([n, T, D]));
  const pooled = layerNorm(h.mean(1), p.lnfW, p.lnfB);
  return tf.matMul(pooled, p.wc).add(p.bc);
}

async function train(p: Params): Promise<void> {
  const { train: set } = mnistSplit();
  const opt = tf.train.adam(2e-3);
  const steps = Math.floor(set.count / BATCH);
  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    let total = 0;
    for (let s = 0; s < steps; s++) {
      // a fixed permutation per epoch (deterministic): stride through the interleaved set
      const idx = Array.from({ length: BATCH }, (_, i) => ((s * BATCH + i) * 7919 + epoch * 104729) % set.count);
      const xb = tf.tensor3d(Float32Array.from(idx.flatMap((j) => Array.from(set.images.subarray(j * 784, j * 784 + 784)))), [BATCH, T, D_IN]);
      const yb = tf.oneHot(tf.tensor1d(idx.map((j) => set.labels[j]), 'int32'), 10);
      const loss = opt.minimize(() => tf.losses.softmaxCrossEntropy(yb, forward(p, xb)) as tf.Scalar, true) as tf.Scalar;
      total += (await loss.data())[0];
      tf.dispose([xb, yb, loss]);
    }
    console.log(`epoch ${epoch + 1}/${EPOCHS}: mean loss ${(total / steps).toFixed(4)}`);
  }
}

/** The trained weights as an ONNX model (with the outlier channels planted, function unchanged). */
function toOnnx(values: Record<string, Float32Array>): Model {
  const v = { ...values };
  for (const [ln, readers] of [['ln1', ['wq', 'wk', 'wv']], ['ln2', ['w1']]] as const) {
    v[`${ln}W`] = v[`${ln}W`].slice();
    v[`${ln}B`] = v[`${ln}B`].slice();
    for (const c of OUTLIERS) {
      v[`${ln}W`][c] *= OUTLIER_GAIN;
      v[`${ln}B`][c] *= OUTLIER_GAIN;
    }
    for (const r of readers) {
      const w = (v[r] = v[r].slice());
      const cols = w.length / D;
      for (const c of OUTLIERS) for (let j = 0; j < cols; j++) w[c * cols + j] /= OUTLIER_GAIN;
    }
  }
  const dims: Record<string, number[]> = {
    embW: [D_IN, D], pos: [T, D], wq: [D, D], wk: [D, D], wv: [D, D], wo: [D, D], w1: [D, D_FF], w2: [D_FF, D], wc: [D, 10], b1: [D_FF], bc: [10],
  };
  const init = Object.entries(v).map(([name, data]) => makeTensor(name, DataType.FLOAT, dims[name] ?? [D], data));
  const shape = (name: string, d: number[]) => makeTensor(name, DataType.INT64, [d.length], BigInt64Array.from(d.map(BigInt)));
  init.push(shape('shape_heads', [0, T, HEADS, D / HEADS]), shape('shape_model', [0, T, D]));
  init.push(makeTensor('att_scale', DataType.FLOAT, [], Float32Array.of(1 / Math.sqrt(D / HEADS))));
  const nodes: ReturnType<typeof newNode>[] = [];
  const node = (op: string, inputs: string[], output: string, attrs: Record<string, number | number[]> = {}) => {
    nodes.push(newNode({ op_type: op, name: output, input: inputs, output: [output], attribute: Object.entries(attrs).map(([k, a]) => makeAttribute(k, a)) }));
    return output;
  };
  let h = node('Add', [node('Add', [node('MatMul', ['x', 'embW'], 'emb_mm'), 'embB'], 'emb'), 'pos'], 'h0');
  const a = node('LayerNormalization', [h, 'ln1W', 'ln1B'], 'ln1', { axis: -1, epsilon: 1e-5 });
  const proj = (w: string, b: string) => node('Transpose', [node('Reshape', [node('Add', [node('MatMul', [a, w], `${w}_mm`), b], `${w}_out`), 'shape_heads'], `${w}_heads`)], `${w}_t`, { perm: [0, 2, 1, 3] });
  const q = proj('wq', 'bq');
  const k = proj('wk', 'bk');
  const vv = proj('wv', 'bv');
  const kt = node('Transpose', [k], 'k_t', { perm: [0, 1, 3, 2] });
  const att = node('Softmax', [node('Mul', [node('MatMul', [q, kt], 'scores'), 'att_scale'], 'scores_scaled')], 'att', { axis: -1 });
  const ctx = node('Reshape', [node('Transpose', [node('MatMul', [att, vv], 'ctx_heads')], 'ctx_t', { perm: [0, 2, 1, 3] }), 'shape_model'], 'ctx');
  h = node('Add', [h, node('Add', [node('MatMul', [ctx, 'wo'], 'wo_mm'), 'bo'], 'attn_out')], 'h1');
  const m = node('LayerNormalization', [h, 'ln2W', 'ln2B'], 'ln2', { axis: -1, epsilon: 1e-5 });
  const f = node('Relu', [node('Add', [node('MatMul', [m, 'w1'], 'w1_mm'), 'b1'], 'ff1')], 'ff1_relu');
  h = node('Add', [h, node('Add', [node('MatMul', [f, 'w2'], 'w2_mm'), 'b2'], 'ff2')], 'h2');
  const pooled = node('LayerNormalization', [node('ReduceMean', [h], 'pooled_raw', { axes: [1], keepdims: 0 }), 'lnfW', 'lnfB'], 'pooled', { axis: -1, epsilon: 1e-5 });
  node('Add', [node('MatMul', [pooled, 'wc'], 'cls_mm'), 'bc'], 'logits');
  const graph = newGraph({
    name: 'mnist_transformer',
    node: nodes,
    initializer: init,
    input: [newValueInfo({ name: 'x', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'N' }, { dim_value: T }, { dim_value: D_IN }] } } } as never })],
    output: [newValueInfo({ name: 'logits', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'N' }, { dim_value: 10 }] } } } as never })],
  });
  return new Model(newModel({ ir_version: 8, opset_import: [{ domain: '', version: 17 }], producer_name: 'quantbook data/make-transformer.ts', graph }));
}

async function main(): Promise<void> {
  await initBackend();
  tf.setBackend(tf.getBackend()); // keep the backend the SDK chose
  const p = init();
  await train(p);
  const values: Record<string, Float32Array> = {};
  for (const [k, t] of Object.entries(p)) values[k] = Float32Array.from(await t.data());
  const model = toOnnx(values);
  const file = path.join(__dirname, '..', '..', 'data', 'transformer', 'mnist-transformer.onnx');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  model.save(file);
  // check the export against tfjs on the test split
  const { test } = mnistSplit();
  const logits = forward(p, tf.tensor3d(test.images, [test.count, T, D_IN]));
  const pred = await logits.argMax(-1).data();
  const acc = Array.from(pred).filter((c, i) => c === test.labels[i]).length / test.count;
  console.log(`wrote ${file}; tfjs test accuracy ${(100 * acc).toFixed(2)}% on ${test.count} digits`);
}

if (require.main === module) main().catch((e) => { console.error(e); process.exit(1); });
