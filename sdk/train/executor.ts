/**
 * A trainable executor for ONNX graphs: float initializers become tfjs variables, nodes run
 * as tfjs ops (./ops.ts), so a forward pass can be differentiated and the weights trained;
 * `toModel()` writes the trained values back into a copy of the ONNX model.
 *
 * Two hooks let quantization-aware training change the computation without editing the ONNX
 * graph: `transforms` rewrite a tensor where it is produced or read (fake quantization of an
 * activation or a weight), `overrides` replace how a node computes (a Conv and its
 * BatchNormalization trained as one folded layer).
 */
// tfjs-core, not the tfjs bundle: the same objects (tfjs re-exports core), and published types that do not pull in tfjs-layers
import * as tf from '@tensorflow/tfjs-core';
import { QuantbookError } from '../errors';
import { DataType, toFloat32 } from '../onnx/dtype';
import { Model } from '../onnx/model';
import { NodeProto } from '../onnx/proto';
import { TensorData } from '../onnx/tensor';
import { OPS, OpContext, SUPPORTED_OPS } from './ops';

/** Rewrites a tensor's value (the graph still names it the same). */
export type TensorTransform = (value: tf.Tensor, training: boolean) => tf.Tensor;
/** Computes a node's outputs in place of its op kernel; `read` gives any tensor computed so far. */
export type NodeOverride = (read: (name: string) => tf.Tensor | undefined, training: boolean) => tf.Tensor[];

export type FeedValue = tf.Tensor | { data: Float32Array | Int32Array | BigInt64Array | ArrayLike<number>; dims: readonly number[] };

export interface ForwardOptions {
  /** training mode: BatchNormalization uses batch statistics and updates its running ones */
  training?: boolean;
  /** tensors to return (default: the graph outputs) */
  outputs?: string[];
}

function tensorFromData(d: Pick<TensorData, 'type' | 'dims' | 'data'>): tf.Tensor {
  const shape = [...d.dims];
  if (d.type === DataType.BOOL) return tf.tensor(Array.from(d.data as ArrayLike<number>, Boolean), shape, 'bool');
  if ([DataType.INT64, DataType.INT32, DataType.INT16, DataType.INT8, DataType.UINT8, DataType.UINT16, DataType.UINT32].includes(d.type)) {
    return tf.tensor(Int32Array.from(d.data as ArrayLike<number | bigint>, Number), shape, 'int32');
  }
  return tf.tensor(toFloat32(d.type, d.data as never), shape, 'float32');
}

function feedTensor(name: string, v: FeedValue): tf.Tensor {
  if (v instanceof tf.Tensor) return v;
  if (!v || !v.data || !Array.isArray(v.dims)) throw new QuantbookError('INVALID_ARGUMENT', `feed "${name}": expected a tfjs tensor or { data, dims }`);
  if (v.data instanceof BigInt64Array) return tf.tensor(Int32Array.from(v.data, Number), [...v.dims], 'int32');
  if (v.data instanceof Int32Array) return tf.tensor(v.data, [...v.dims], 'int32');
  return tf.tensor(Float32Array.from(v.data as ArrayLike<number>), [...v.dims], 'float32');
}

// tfjs variable names are global: a counter keeps two executors of one model apart
let variableCount = 0;

export class TrainableGraph {
  /** float initializers, by name; BatchNormalization running statistics are not trainable */
  readonly variables = new Map<string, tf.Variable>();
  readonly transforms = new Map<string, TensorTransform>();
  readonly overrides = new Map<NodeProto, NodeOverride>();
  /** trainable variables added by hooks (learned quantization scales) */
  readonly extraVariables = new Set<tf.Variable>();
  private readonly constants = new Map<string, tf.Tensor>();
  private readonly opset: number;

  private constructor(readonly model: Model) {
    this.opset = model.opsetVersion('') ?? 13;
  }

  /** Builds the executor; an error lists every op type the executor cannot run. */
  static fromModel(model: Model): TrainableGraph {
    const g = model.graph;
    const unsupported = new Map<string, number>();
    for (const n of g.nodes) {
      const op = (n.domain ?? '') === '' || n.domain === 'ai.onnx' ? n.op_type! : `${n.domain}.${n.op_type}`;
      if (!OPS[op]) unsupported.set(op, (unsupported.get(op) ?? 0) + 1);
    }
    if (unsupported.size) {
      const list = [...unsupported].map(([op, k]) => `${op} (${k} node${k > 1 ? 's' : ''})`).join(', ');
      throw new QuantbookError('UNSUPPORTED', `the trainable executor cannot run ${list}; it supports ${SUPPORTED_OPS.join(', ')}`);
    }
    const exec = new TrainableGraph(model);
    const runningStats = new Set(g.nodes.filter((n) => n.op_type === 'BatchNormalization').flatMap((n) => n.input.slice(3, 5)));
    for (const name of g.initializerNames) {
      const value = g.constantValue(name)!;
      const t = tensorFromData(value);
      if (t.dtype === 'float32') exec.variables.set(name, tf.variable(t, !runningStats.has(name), `quantbook${++variableCount}/${name.replace(/[^A-Za-z0-9_./-]/g, '_')}`));
      else exec.constants.set(name, t);
      if (t.dtype === 'float32') t.dispose();
    }
    for (const n of g.nodes) if (n.op_type === 'Constant') exec.constants.set(n.output[0], tensorFromData(g.constantValue(n.output[0])!));
    return exec;
  }

  trainableVariables(): tf.Variable[] {
    return [...this.variables.values(), ...this.extraVariables].filter((v) => v.trainable);
  }

  get inputNames(): string[] { return this.model.graph.inputNames; }
  get outputNames(): string[] { return this.model.graph.outputNames; }

  /** Runs the graph; the caller owns (and disposes, e.g. with tf.tidy) the returned tensors. */
  forward(feeds: Record<string, FeedValue>, options: ForwardOptions = {}): Record<string, tf.Tensor> {
    const g = this.model.graph;
    const training = options.training ?? false;
    const values = new Map<string, tf.Tensor>();
    for (const name of g.inputNames) {
      if (!(name in feeds)) throw new QuantbookError('INVALID_ARGUMENT', `feeds: missing input "${name}"; the model's inputs are ${g.inputNames.map((n) => `"${n}"`).join(', ')}`);
      values.set(name, this.transformed(name, feedTensor(name, feeds[name]), training));
    }
    const read = (name: string): tf.Tensor | undefined => {
      if (!name) return undefined;
      const known = values.get(name);
      if (known) return known;
      const stored = this.variables.get(name) ?? this.constants.get(name);
      if (!stored) return undefined;
      const v = this.transformed(name, stored, training);
      values.set(name, v);
      return v;
    };
    const ctx: OpContext = {
      node: undefined as never,
      opset: this.opset,
      training,
      assign: (tensor, value) => { if (training) this.variables.get(tensor)?.assign(value); },
    };
    for (const node of g.nodes) {
      if (node.op_type === 'Constant') continue;
      const override = this.overrides.get(node);
      let outs: tf.Tensor[];
      if (override) {
        outs = override(read, training);
      } else {
        const inputs = node.input.map((n) => {
          const v = read(n);
          if (n && !v) throw new QuantbookError('GRAPH_INVALID', `node "${node.name}" reads "${n}", which nothing computed`);
          return v;
        });
        ctx.node = node;
        outs = OPS[node.op_type!](inputs, ctx);
      }
      outs.forEach((t, i) => { if (node.output[i]) values.set(node.output[i], this.transformed(node.output[i], t, training)); });
    }
    const wanted = options.outputs ?? g.outputNames;
    const result: Record<string, tf.Tensor> = {};
    for (const name of wanted) {
      const v = read(name);
      if (!v) throw new QuantbookError('UNKNOWN_TENSOR', `output "${name}" is not computed by the graph`);
      result[name] = v;
    }
    return result;
  }

  private transformed(name: string, value: tf.Tensor, training: boolean): tf.Tensor {
    const t = this.transforms.get(name);
    return t ? t(value, training) : value;
  }

  /** Inference: the outputs as float arrays with their shapes. */
  async run(feeds: Record<string, FeedValue>, outputs?: string[]): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
    const result = tf.tidy(() => this.forward(feeds, { outputs }));
    const out: Record<string, { data: Float32Array; dims: number[] }> = {};
    for (const [k, t] of Object.entries(result)) {
      out[k] = { data: Float32Array.from(await t.data() as ArrayLike<number>), dims: [...t.shape] };
      t.dispose();
    }
    return out;
  }

  /** The current values of every variable (for checkpoints). */
  snapshot(): Map<string, { dims: number[]; data: Float32Array }> {
    return new Map([...this.variables].map(([k, v]) => [k, { dims: [...v.shape], data: v.dataSync() as Float32Array }]));
  }

  /** Loads values saved by snapshot(); every name must be a variable with the same shape. */
  restore(values: Map<string, { dims: readonly number[]; data: Float32Array }>): void {
    for (const [k, v] of values) {
      const target = this.variables.get(k);
      if (!target) throw new QuantbookError('UNKNOWN_TENSOR', `checkpoint tensor "${k}" is not a variable of this graph`);
      if (target.shape.join('x') !== v.dims.join('x')) throw new QuantbookError('INVALID_ARGUMENT', `checkpoint tensor "${k}" has shape [${v.dims}], the variable [${target.shape}]`);
      target.assign(tf.tensor(v.data, [...v.dims]));
    }
  }

  /** A copy of the ONNX model with the current variable values as its initializers. */
  toModel(): Model {
    const model = this.model.clone();
    for (const [name, v] of this.variables) {
      model.graph.replaceInitializer(name, { type: DataType.FLOAT, dims: [...v.shape], data: Float32Array.from(v.dataSync() as Float32Array) });
    }
    return model;
  }

  dispose(): void {
    for (const v of this.variables.values()) v.dispose();
    for (const c of this.constants.values()) c.dispose();
    for (const v of this.extraVariables) v.dispose();
    this.extraVariables.clear();
    this.variables.clear();
    this.constants.clear();
  }
}
