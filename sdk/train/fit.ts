/**
 * Training loop for a TrainableGraph on a labelled set: mini-batches in a seeded order,
 * softmax cross-entropy on the logits, an optimizer from tfjs, progress per step, one history
 * row per epoch (train loss and accuracy, test accuracy, time) as an Arrow table, and a
 * safetensors checkpoint per epoch.
 */
import * as fs from 'fs';
import * as path from 'path';
// tfjs-core, not the tfjs bundle: the same objects (tfjs re-exports core), and published types that do not pull in tfjs-layers
import * as tf from '@tensorflow/tfjs-core';
import * as arrow from 'apache-arrow';
import { QuantbookError, invalidArgument } from '../errors';
import { readSafetensors, writeSafetensors } from '../export/safetensors';
import { writeTable } from '../stats/calibration-stats';
import { seededPermutation, seededRandom } from '../util/seeded-random';
import { TrainableGraph } from './executor';

/** Samples stored back to back: `count` of them, each of `sampleShape`, with integer labels. */
export interface LabeledSet { images: Float32Array; labels: Int32Array; count: number }

export interface EvaluateOptions {
  /** dims of one sample, e.g. [1, 28, 28] */
  sampleShape: number[];
  batchSize?: number;
  /** the input to feed and the logits to read (default: the graph's first of each) */
  input?: string;
  output?: string;
  /** evaluate the first `limit` samples only */
  limit?: number;
}

export interface FitOptions extends EvaluateOptions {
  train: LabeledSet;
  test?: LabeledSet;
  epochs: number;
  /** 'adam' (default) or 'sgd' (momentum 0.9), or any tfjs optimizer */
  optimizer?: 'adam' | 'sgd' | tf.Optimizer;
  learningRate?: number;
  /** seed of the sample order (default 0) */
  seed?: number;
  /** one safetensors file of every variable per epoch: <dir>/epoch-<n>.safetensors */
  checkpointDir?: string;
  onStep?: (p: { epoch: number; step: number; steps: number; loss: number }) => void;
  onEpoch?: (row: HistoryRow) => void;
}

export interface HistoryRow {
  epoch: number;
  steps: number;
  trainLoss: number;
  trainAccuracy: number;
  /** NaN without a test set */
  testAccuracy: number;
  seconds: number;
  checkpoint: string | null;
}

export interface FitResult {
  history: HistoryRow[];
  /** the history as an Arrow table (one row per epoch) */
  table(): arrow.Table;
  writeHistory(file: string): void;
}

function batchTensor(set: LabeledSet, idx: ArrayLike<number>, sampleShape: number[]): tf.Tensor {
  const per = sampleShape.reduce((a, b) => a * b, 1);
  if (set.images.length < set.count * per) throw new QuantbookError('INVALID_ARGUMENT', `the set holds ${set.images.length} values, fewer than ${set.count} samples of sampleShape [${sampleShape}] (${per} values each)`);
  const out = new Float32Array(idx.length * per);
  for (let i = 0; i < idx.length; i++) out.set(set.images.subarray(idx[i] * per, (idx[i] + 1) * per), i * per);
  return tf.tensor(out, [idx.length, ...sampleShape]);
}

function io(graph: TrainableGraph, o: EvaluateOptions): { input: string; output: string } {
  return { input: o.input ?? graph.inputNames[0], output: o.output ?? graph.outputNames[0] };
}

/** What fit() trains: an executor, or anything holding one that writes its own checkpoints (a QAT network). */
export type Trainable = TrainableGraph | { graph: TrainableGraph; writeCheckpoint(file: string, metadata?: Record<string, string>): void };

const graphOf = (target: Trainable): TrainableGraph => (target instanceof TrainableGraph ? target : target.graph);

/** Top-1 accuracy (0–1) of the graph's logits on `set`, in inference mode. */
export async function evaluate(target: Trainable, set: LabeledSet, options: EvaluateOptions): Promise<number> {
  const graph = graphOf(target);
  const { input, output } = io(graph, options);
  const batch = options.batchSize ?? 256;
  const n = Math.min(set.count, options.limit ?? set.count);
  let correct = 0;
  for (let start = 0; start < n; start += batch) {
    const idx = Array.from({ length: Math.min(batch, n - start) }, (_, i) => start + i);
    const pred = tf.tidy(() => graph.forward({ [input]: batchTensor(set, idx, options.sampleShape) }, { outputs: [output] })[output].argMax(-1));
    const p = await pred.data();
    pred.dispose();
    idx.forEach((j, i) => { if (p[i] === set.labels[j]) correct++; });
  }
  return correct / n;
}

function makeOptimizer(o: FitOptions['optimizer'], lr: number): tf.Optimizer {
  if (o === undefined || o === 'adam') return tf.train.adam(lr);
  if (o === 'sgd') return tf.train.momentum(lr, 0.9);
  if (o instanceof tf.Optimizer) return o;
  throw invalidArgument('optimizer', o, "'adam', 'sgd' or a tfjs optimizer");
}

export async function fit(target: Trainable, options: FitOptions): Promise<FitResult> {
  const graph = graphOf(target);
  const save = target instanceof TrainableGraph ? (file: string, meta: Record<string, string>) => writeCheckpoint(graph, file, meta) : (file: string, meta: Record<string, string>) => target.writeCheckpoint(file, meta);
  if (!Number.isInteger(options.epochs) || options.epochs < 1) throw invalidArgument('epochs', options.epochs, 'an integer ≥ 1');
  const batchSize = options.batchSize ?? 64;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw invalidArgument('batchSize', batchSize, 'an integer ≥ 1');
  const lr = options.learningRate ?? 1e-3;
  if (!(lr > 0)) throw invalidArgument('learningRate', lr, 'a number > 0');
  const { input, output } = io(graph, options);
  const optimizer = makeOptimizer(options.optimizer, lr);
  const random = seededRandom(options.seed ?? 0);
  const steps = Math.floor(options.train.count / batchSize);
  const history: HistoryRow[] = [];
  for (let epoch = 1; epoch <= options.epochs; epoch++) {
    const started = Date.now();
    const order = seededPermutation(options.train.count, random);
    let lossSum = 0;
    let correct = 0;
    for (let s = 0; s < steps; s++) {
      const idx = order.subarray(s * batchSize, (s + 1) * batchSize);
      const labels = Int32Array.from(idx, (j) => options.train.labels[j]);
      const x = batchTensor(options.train, idx, options.sampleShape);
      const y = tf.oneHot(tf.tensor1d(labels, 'int32'), 10);
      let predicted: tf.Tensor | undefined;
      const loss = optimizer.minimize(() => {
        const logits = graph.forward({ [input]: x }, { training: true, outputs: [output] })[output];
        predicted = tf.keep(logits.argMax(-1));
        return tf.losses.softmaxCrossEntropy(y, logits) as tf.Scalar;
      }, true, graph.trainableVariables()) as tf.Scalar;
      const [l] = await loss.data();
      const p = await predicted!.data();
      p.forEach((c, i) => { if (c === labels[i]) correct++; });
      lossSum += l;
      tf.dispose([x, y, loss, predicted!]);
      if (!Number.isFinite(l)) throw new QuantbookError('RUNTIME_ERROR', `training diverged: loss ${l} at epoch ${epoch}, step ${s + 1}; lower learningRate (now ${lr})`);
      options.onStep?.({ epoch, step: s + 1, steps, loss: l });
    }
    let checkpoint: string | null = null;
    if (options.checkpointDir) {
      fs.mkdirSync(options.checkpointDir, { recursive: true });
      checkpoint = path.join(options.checkpointDir, `epoch-${epoch}.safetensors`);
      save(checkpoint, { epoch: String(epoch) });
    }
    const row: HistoryRow = {
      epoch, steps: epoch * steps,
      trainLoss: lossSum / steps,
      trainAccuracy: correct / (steps * batchSize),
      testAccuracy: options.test ? await evaluate(graph, options.test, options) : NaN,
      seconds: (Date.now() - started) / 1000,
      checkpoint,
    };
    history.push(row);
    options.onEpoch?.(row);
  }
  return {
    history,
    table: () => historyTable(history),
    writeHistory: (file) => writeTable(file, historyTable(history)),
  };
}

export function historyTable(rows: HistoryRow[]): arrow.Table {
  return arrow.tableFromArrays({
    epoch: Int32Array.from(rows, (r) => r.epoch),
    steps: Int32Array.from(rows, (r) => r.steps),
    train_loss: Float64Array.from(rows, (r) => r.trainLoss),
    train_accuracy: Float64Array.from(rows, (r) => r.trainAccuracy),
    test_accuracy: Float64Array.from(rows, (r) => r.testAccuracy),
    seconds: Float64Array.from(rows, (r) => r.seconds),
    checkpoint: rows.map((r) => r.checkpoint),
  });
}

/** Every variable of the graph (trainable or not) as F32 tensors in one safetensors file. */
export function writeCheckpoint(graph: TrainableGraph, file: string, metadata: Record<string, string> = {}): void {
  const tensors = new Map([...graph.snapshot()].map(([k, v]) => [k, { dtype: 'F32' as const, shape: v.dims, data: v.data }]));
  writeSafetensors(file, tensors, { format: 'quantbook-checkpoint', ...metadata });
}

/** Reads a checkpoint written by writeCheckpoint (or a QAT network): values by name and metadata. */
export function readCheckpoint(file: string): { values: Map<string, { dims: number[]; data: Float32Array }>; metadata: Record<string, string> } {
  const { tensors, metadata } = readSafetensors(file);
  if (metadata?.format !== 'quantbook-checkpoint') throw new QuantbookError('INVALID_ARGUMENT', `${file}: not a quantbook checkpoint (metadata format is ${JSON.stringify(metadata?.format)})`);
  const values = new Map<string, { dims: number[]; data: Float32Array }>();
  for (const [k, t] of tensors) {
    if (t.dtype !== 'F32') throw new QuantbookError('INVALID_ARGUMENT', `${file}: tensor "${k}" is ${t.dtype}; checkpoints hold F32`);
    values.set(k, { dims: t.shape, data: t.data as Float32Array });
  }
  return { values, metadata };
}
