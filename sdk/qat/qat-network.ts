/**
 * A model prepared for quantization-aware training: the trainable executor with fake
 * quantizers on exactly the tensors post-training quantization would quantize (every
 * quantized layer's weight, its input, and its output where another quantized layer follows),
 * and Conv → BatchNormalization pairs (with `fuseDense`, also Dense → BatchNormalization: a Gemm,
 * or a 2-D MatMul with a constant weight) trained in one of three forms:
 *
 *  - fusion off: Conv and BatchNormalization stay separate; the Conv output is quantized.
 *  - 'none' (fused, not folded): the pair is one layer (no quantizer between Conv and BN),
 *    the weight is quantized unscaled, BN follows in float; the export keeps the BN.
 *  - 'one-conv': the weight is folded with the running statistics, W·γ/σ_run, and quantized;
 *    in training the output is rescaled to batch statistics (from that same convolution).
 *  - 'two-conv': a float convolution gives batch statistics; until `freezeBn` steps the folded,
 *    quantized convolution is corrected by σ_run/σ_batch, after that running statistics only.
 * Folded forms export the folded Conv, so inference equals what evaluation in training measured.
 *
 * With `fuseRelu` (Golden Stick's fusion patterns Conv/Dense [+ BatchNorm] + ReLU), a layer whose
 * output (after its fused BatchNormalization) feeds a ReLU alone is quantized at the ReLU's output,
 * not before it: no fake quantizer sits between the BatchNormalization and the ReLU.
 */
import * as tf from '@tensorflow/tfjs';
import * as arrow from 'apache-arrow';
import { QuantbookError } from '../errors';
import { attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto } from '../onnx/proto';
import { upgradeOpset } from '../onnx/opset-upgrade';
import { QParams, QuantSpec } from '../observers/qparams';
import { foldBatchNorms, foldDenseBatchNorms } from '../quantize/fold-batchnorm';
import { toFakeQuant } from '../quantize/fake-quant';
import { QuantLayer, selectLayers } from '../quantize/layers';
import { activationTensors, applyQdq, LayerRecord } from '../quantize/qdq';
import { conv2d, convAttributes } from '../train/conv';
import { FeedValue, TrainableGraph } from '../train/executor';
import { readCheckpoint, writeCheckpoint } from '../train/fit';
import { ActivationFakeQuant, ActivationQuantOptions, WeightFakeQuant } from './fake-quant';

export const BN_FOLD_MODES = ['none', 'one-conv', 'two-conv'] as const;
export type BnFoldMode = (typeof BN_FOLD_MODES)[number];

export interface QatNetworkOptions {
  activation: ActivationQuantOptions;
  /** channelAxis is chosen per layer (0 for Conv and transposed Gemm weights, 1 for MatMul) */
  weight: { spec: QuantSpec; quantDelay: number };
  disableNames?: string[];
  /** leave the first and last quantizable layers in float */
  ignoreHeadTail?: boolean;
  /** treat Conv → BatchNormalization as one layer */
  fusion: boolean;
  /** with fusion, also treat Dense (Gemm / 2-D MatMul) → BatchNormalization as one layer */
  fuseDense?: boolean;
  /** quantize a layer's output after the ReLU that alone reads it (Golden Stick's … + ReLU patterns) */
  fuseRelu?: boolean;
  bnFold: BnFoldMode;
  /** training steps after which BatchNormalization uses running statistics ('two-conv') */
  freezeBn: number;
}

/** A fused layer and its BatchNormalization; `dense`: a Gemm/MatMul, with transB for the weight layout. */
interface ConvBnPair { conv: NodeProto; bn: NodeProto; dense?: { transB: boolean } }

export class QatNetwork {
  readonly graph: TrainableGraph;
  readonly layers: QuantLayer[];
  readonly activations = new Map<string, ActivationFakeQuant>();
  readonly weights = new Map<string, WeightFakeQuant>();
  private readonly pairs: ConvBnPair[] = [];
  /** the model with fused pairs folded: where layers and quantized tensors are chosen */
  private readonly structure: Model;
  /** layers left in float (amp_num fallback) */
  readonly fallenBack = new Set<string>();

  constructor(readonly source: Model, readonly options: QatNetworkOptions) {
    // layers and quantized tensors are chosen with fused pairs as one layer (BN folded), so
    // no quantizer sits between a fused Conv and its BatchNormalization
    const structure = (this.structure = options.fusion ? source.clone() : source);
    const foldedOutputs = options.fusion ? this.foldStructure(structure) : [];
    const selection = selectLayers(structure, options.disableNames ?? []);
    this.layers = options.ignoreHeadTail ? selection.layers.slice(1, -1) : selection.layers;
    if (!this.layers.length) throw new QuantbookError('INVALID_ARGUMENT', `no layer left to quantize (${selection.layers.length} quantizable, disable_names ${JSON.stringify(options.disableNames ?? [])}, ignore_head_tail_node ${!!options.ignoreHeadTail})`);
    this.graph = TrainableGraph.fromModel(source);
    const g = source.graph;
    for (const t of this.quantizedTensors(this.layers)) {
      const q = new ActivationFakeQuant(t, options.activation, (v) => this.graph.extraVariables.add(v));
      this.activations.set(t, q);
      this.graph.transforms.set(t, (x, training) => q.apply(x, training));
    }
    // the pairs the structure folded, found again in the source by the BN's output tensor
    for (const out of foldedOutputs) {
      const bn = g.producer(out);
      const conv = bn && g.producer(bn.input[0]);
      if (!bn || !conv || !this.layers.some((l) => l.node.output[0] === out)) continue;
      this.pairs.push({ conv, bn, ...(conv.op_type === 'Conv' ? {} : { dense: { transB: conv.op_type === 'Gemm' && attributeValue(conv, 'transB') === 1 } }) });
    }
    for (const layer of this.layers) {
      if (!layer.weight) continue;
      // a fused layer's source node is found by the tensor it produces in the structure (the BN's output)
      const node = this.pairs.find((p) => p.bn.output[0] === layer.node.output[0])?.conv ?? g.nodes.find((n) => (n.name || n.output[0]) === layer.name)!;
      const wq = new WeightFakeQuant(layer.name, { ...options.weight.spec, channelAxis: layer.weightAxis! }, options.weight.quantDelay);
      this.weights.set(layer.name, wq);
      const pair = this.pairs.find((p) => p.conv === node);
      if (pair && options.bnFold !== 'none') this.foldPair(pair, wq);
      else this.graph.transforms.set(node.input[1], (w, training) => wq.apply(w, training));
    }
  }

  /** Folds the fused pairs into `model` (BN → Conv, and with fuseDense BN → Dense); returns the folded layers' output tensors. */
  private foldStructure(model: Model): string[] {
    const folded = foldBatchNorms(model).folded;
    if (this.options.fuseDense) folded.push(...foldDenseBatchNorms(model).folded);
    return folded.map((f) => f.output);
  }

  /**
   * The activation tensors fake-quantized for `layers`: their inputs and the outputs that lead to
   * another quantized layer (chosen on the structure, where fused pairs are one layer); with
   * fuseRelu, an output that a ReLU alone reads is quantized at the ReLU's output instead.
   */
  private quantizedTensors(layers: QuantLayer[]): string[] {
    const tensors = activationTensors(this.structure, layers);
    if (!this.options.fuseRelu) return tensors;
    const g = this.structure.graph;
    const outputs = new Set(layers.filter((l) => !l.scope).map((l) => l.node.output[0]));
    const moved = tensors.map((t) => {
      if (!outputs.has(t) || g.outputNames.includes(t)) return t;
      const readers = g.consumers(t);
      return readers.length === 1 && readers[0].op_type === 'Relu' ? readers[0].output[0] : t;
    });
    return [...new Set(moved)];
  }

  /** The float model in its export form: BatchNormalization folded where the pairs fold. */
  private exportStructure(model: Model): Model {
    if (this.options.fusion && this.options.bnFold !== 'none') this.foldStructure(model);
    return model;
  }

  private foldPair({ conv, bn, dense }: ConvBnPair, wq: WeightFakeQuant): void {
    const attrs = dense ? undefined : convAttributes(conv);
    // the layer as a function of (input, weight, bias), and the shapes that broadcast a
    // per-output-channel vector over its output and over its weight
    const linear = (x: tf.Tensor, w: tf.Tensor, b?: tf.Tensor): tf.Tensor => {
      if (!dense) return conv2d(x as tf.Tensor4D, w as tf.Tensor4D, b, attrs!);
      const y = tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D, false, dense.transB);
      return b ? y.add(b) : y;
    };
    const c = dense ? [1, -1] : [1, -1, 1, 1];
    const weightShape = !dense ? [-1, 1, 1, 1] : dense.transB ? [-1, 1] : [1, -1];
    const statAxes = dense ? [0] : [0, 2, 3];
    const eps = (attributeValue(bn, 'epsilon') as number | undefined) ?? 1e-5;
    const momentum = (attributeValue(bn, 'momentum') as number | undefined) ?? 0.9;
    const [meanName, varName] = [bn.input[3], bn.input[4]];
    let steps = 0;
    this.graph.overrides.set(conv, () => []);
    this.graph.overrides.set(bn, (read, training) => {
      const x = read(conv.input[0])!;
      const w = read(conv.input[1])!;
      const b = conv.input[2] ? read(conv.input[2])!.reshape([-1]) : undefined;
      const [gamma, beta, runMean, runVar] = bn.input.slice(1, 5).map((n) => read(n)!);
      const runStd = runVar.add(eps).sqrt();
      const k = gamma.div(runStd);
      const foldedW = w.mul(k.reshape(weightShape));
      const bias = (mean: tf.Tensor, std: tf.Tensor) => beta.sub(gamma.mul(b ? mean.sub(b) : mean).div(std));
      const inference = () => linear(x, wq.apply(foldedW, training), bias(runMean, runStd));
      if (!training) return [inference()];
      steps++;
      const frozen = this.options.bnFold === 'two-conv' && steps > this.options.freezeBn;
      if (frozen) return [inference()];
      // batch statistics of the float layer output: from a float convolution ('two-conv') or
      // from the quantized folded one scaled back by 1/k ('one-conv')
      const quantized = linear(x, wq.apply(foldedW, training));
      const raw = this.options.bnFold === 'two-conv' ? linear(x, w, b) : quantized.div(k.reshape(c)).add(b ? b.reshape(c) : 0);
      const { mean, variance } = tf.moments(raw, statAxes);
      const batchStd = variance.add(eps).sqrt();
      const count = raw.size / raw.shape[1]!;
      this.graph.variables.get(meanName)!.assign(runMean.mul(momentum).add(mean.mul(1 - momentum)));
      this.graph.variables.get(varName)!.assign(runVar.mul(momentum).add(variance.mul(count / Math.max(1, count - 1)).mul(1 - momentum)));
      // conv(x, q(W·k))·σ_run/σ_batch = conv(x, W)·γ/σ_batch up to quantization
      const scaled = quantized.mul(runStd.div(batchStd).reshape(c));
      return [scaled.add(bias(mean, batchStd).reshape(c))];
    });
  }

  /** Layers still quantized (all but the fallen-back ones). */
  get quantizedLayers(): QuantLayer[] {
    return this.layers.filter((l) => !this.fallenBack.has(l.name));
  }

  /** Enables exactly the quantizers the quantized layers need (none with `all` false). */
  private enableQuantizers(all = true): void {
    const layers = this.quantizedLayers;
    const tensors = new Set(all ? this.quantizedTensors(layers) : []);
    for (const [t, q] of this.activations) q.enabled = tensors.has(t);
    for (const [l, q] of this.weights) q.enabled = all && !this.fallenBack.has(l);
  }

  /**
   * Automatic fallback (msModelSlim amp_num): over `rounds` rounds, leaves in float the `count`
   * layers whose quantization changes the output on `data` most; each round measures, for every
   * quantized layer, the output error (MSE against the float network) with that layer in float,
   * and drops the layers giving the lowest error.
   */
  fallBack(count: number, rounds: number, data: Array<Record<string, FeedValue>>): string[] {
    const flatOut = () => data.map((feeds) => tf.tidy(() => this.graph.forward(feeds)[this.graph.outputNames[0]].dataSync() as Float32Array));
    this.enableQuantizers(false);
    const reference = flatOut();
    const error = () => {
      const got = flatOut();
      let sum = 0;
      let n = 0;
      got.forEach((g, b) => g.forEach((v, i) => { sum += (v - reference[b][i]) ** 2; n++; }));
      return sum / n;
    };
    const chosen: string[] = [];
    for (let round = 0; round < rounds && chosen.length < count; round++) {
      const take = Math.ceil((count - chosen.length) / (rounds - round));
      const scores: Array<[string, number]> = [];
      for (const layer of this.quantizedLayers) {
        this.fallenBack.add(layer.name);
        this.enableQuantizers();
        scores.push([layer.name, error()]);
        this.fallenBack.delete(layer.name);
      }
      scores.sort((a, b) => a[1] - b[1]);
      for (const [name] of scores.slice(0, take)) {
        this.fallenBack.add(name);
        chosen.push(name);
      }
    }
    this.enableQuantizers();
    return chosen;
  }

  /** The trained float model (weights and BN statistics as trained, nothing folded). */
  toFloatModel(): Model {
    return this.graph.toModel();
  }

  /** Activation quantization parameters by tensor, as learned/tracked in training. */
  activationParams(): Map<string, QParams> {
    return new Map([...this.activations].map(([t, q]) => [t, q.qparams()]));
  }

  /**
   * The trained model as ONNX QDQ: weights quantized with the spec training simulated,
   * activation Q/DQ with the trained ranges. `opset` 13 is needed for per-channel weights.
   */
  toQdqModel(opset?: number): { model: Model; records: LayerRecord[] } {
    const uninitialised = [...this.activations.values()].filter((q) => q.enabled && q.min === undefined).map((q) => q.tensor);
    if (uninitialised.length) throw new QuantbookError('INVALID_ARGUMENT', `no training step has run, so activation ranges are unknown for ${uninitialised.slice(0, 5).join(', ')}; train (or run a training-mode forward) before exporting`);
    const model = this.exportStructure(this.toFloatModel());
    const perChannel = this.options.weight.spec.perChannel;
    const target = opset ?? Math.max(model.opsetVersion('') ?? 0, perChannel ? 13 : 10);
    if (perChannel && target < 13) throw new QuantbookError('INVALID_ARGUMENT', `opset_version ${target}: per-channel weights need opset 13`);
    if ((model.opsetVersion('') ?? 0) > target) throw new QuantbookError('INVALID_ARGUMENT', `opset_version ${target}: the model already uses opset ${model.opsetVersion('')}; quantbook does not downgrade opsets`);
    upgradeOpset(model, target);
    const keep = new Set(this.quantizedLayers.map((l) => l.name));
    const layers = selectLayers(model, this.options.disableNames ?? []).layers.filter((l) => keep.has(l.name));
    const records = applyQdq(model, layers, {
      activations: this.activationParams(),
      tensors: [...this.activations.values()].filter((q) => q.enabled).map((q) => q.tensor),
      weightSpec: { ...this.options.weight.spec },
    });
    return { model, records };
  }

  /** The same quantization with float ops only (Div/Round/Clip chains, dequantized weights). */
  toFakeQuantModel(opset?: number): Model {
    return toFakeQuant(this.toQdqModel(opset).model);
  }

  /** One row per quantizer: tensor, kind, range, scale and zero point (first channel for weights). */
  paramsTable(): arrow.Table {
    const rows: Array<{ tensor: string; kind: string; min: number; max: number; scale: number; zeroPoint: number; learned: boolean }> = [];
    for (const [t, q] of this.activations) {
      const p = q.qparams();
      rows.push({ tensor: t, kind: 'activation', min: q.min ?? NaN, max: q.max ?? NaN, scale: p.scale[0], zeroPoint: p.zeroPoint[0], learned: !!q.scale });
    }
    return arrow.tableFromArrays({
      tensor: rows.map((r) => r.tensor),
      kind: rows.map((r) => r.kind),
      min: Float64Array.from(rows, (r) => r.min),
      max: Float64Array.from(rows, (r) => r.max),
      scale: Float64Array.from(rows, (r) => r.scale),
      zero_point: Int32Array.from(rows, (r) => r.zeroPoint),
      learned_scale: rows.map((r) => r.learned),
    });
  }

  /** Variables plus quantizer state (ranges, step counts, learned scales) in one safetensors file. */
  writeCheckpoint(file: string, metadata: Record<string, string> = {}): void {
    const state = [...this.activations].map(([t, q]) => ({ tensor: t, min: q.min ?? null, max: q.max ?? null, steps: q.steps, scale: q.scale ? q.scale.dataSync()[0] : null }));
    const weights = [...this.weights].map(([l, q]) => ({ layer: l, steps: q.steps }));
    writeCheckpoint(this.graph, file, { ...metadata, qat_state: JSON.stringify({ activations: state, weights }) });
  }

  /** Restores what writeCheckpoint saved (a plain graph checkpoint restores the weights only). */
  loadCheckpoint(file: string): void {
    const { values, metadata } = readCheckpoint(file);
    this.graph.restore(values);
    if (!metadata.qat_state) return;
    const state = JSON.parse(metadata.qat_state) as { activations: Array<{ tensor: string; min: number | null; max: number | null; steps: number; scale: number | null }>; weights: Array<{ layer: string; steps: number }> };
    for (const a of state.activations) {
      const q = this.activations.get(a.tensor);
      if (!q) throw new QuantbookError('INVALID_ARGUMENT', `${file}: quantizer for tensor "${a.tensor}" is not in this network (was it prepared from another model or config?)`);
      q.min = a.min ?? undefined;
      q.max = a.max ?? undefined;
      q.steps = a.steps;
      if (a.scale !== null) q.setLearnedScale(a.scale);
    }
    for (const w of state.weights) {
      const q = this.weights.get(w.layer);
      if (q) q.steps = w.steps;
    }
  }

  dispose(): void {
    this.graph.dispose();
  }
}
