/**
 * A model prepared for quantization-aware training: the trainable executor with fake
 * quantizers on exactly the tensors post-training quantization would quantize (every
 * quantized layer's weight, its input, and its output where another quantized layer follows),
 * and Conv → BatchNormalization pairs trained in one of three forms:
 *
 *  - fusion off: Conv and BatchNormalization stay separate; the Conv output is quantized.
 *  - 'none' (fused, not folded): the pair is one layer (no quantizer between Conv and BN),
 *    the weight is quantized unscaled, BN follows in float; the export keeps the BN.
 *  - 'one-conv': the weight is folded with the running statistics, W·γ/σ_run, and quantized;
 *    in training the output is rescaled to batch statistics (from that same convolution).
 *  - 'two-conv': a float convolution gives batch statistics; until `freezeBn` steps the folded,
 *    quantized convolution is corrected by σ_run/σ_batch, after that running statistics only.
 * Folded forms export the folded Conv, so inference equals what evaluation in training measured.
 */
import * as tf from '@tensorflow/tfjs';
import * as arrow from 'apache-arrow';
import { QuantbookError } from '../errors';
import { attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto } from '../onnx/proto';
import { upgradeOpset } from '../onnx/opset-upgrade';
import { QParams, QuantSpec } from '../observers/qparams';
import { foldBatchNorms } from '../quantize/fold-batchnorm';
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
  bnFold: BnFoldMode;
  /** training steps after which BatchNormalization uses running statistics ('two-conv') */
  freezeBn: number;
}

interface ConvBnPair { conv: NodeProto; bn: NodeProto }

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
    if (options.fusion) foldBatchNorms(structure);
    const selection = selectLayers(structure, options.disableNames ?? []);
    this.layers = options.ignoreHeadTail ? selection.layers.slice(1, -1) : selection.layers;
    if (!this.layers.length) throw new QuantbookError('INVALID_ARGUMENT', `no layer left to quantize (${selection.layers.length} quantizable, disable_names ${JSON.stringify(options.disableNames ?? [])}, ignore_head_tail_node ${!!options.ignoreHeadTail})`);
    this.graph = TrainableGraph.fromModel(source);
    const g = source.graph;
    for (const t of activationTensors(structure, this.layers)) {
      const q = new ActivationFakeQuant(t, options.activation, (v) => this.graph.extraVariables.add(v));
      this.activations.set(t, q);
      this.graph.transforms.set(t, (x, training) => q.apply(x, training));
    }
    if (options.fusion) {
      for (const bn of g.nodes.filter((n) => n.op_type === 'BatchNormalization')) {
        const conv = g.producer(bn.input[0]);
        if (conv?.op_type === 'Conv' && this.layers.some((l) => l.name === (conv.name || conv.output[0])) && g.consumers(conv.output[0]).length === 1) this.pairs.push({ conv, bn });
      }
    }
    for (const layer of this.layers) {
      if (!layer.weight) continue;
      const node = g.nodes.find((n) => (n.name || n.output[0]) === layer.name)!;
      const wq = new WeightFakeQuant(layer.name, { ...options.weight.spec, channelAxis: layer.weightAxis! }, options.weight.quantDelay);
      this.weights.set(layer.name, wq);
      const pair = this.pairs.find((p) => p.conv === node);
      if (pair && options.bnFold !== 'none') this.foldPair(pair, wq);
      else this.graph.transforms.set(node.input[1], (w, training) => wq.apply(w, training));
    }
  }

  /** The float model in its export form: BatchNormalization folded where the pairs fold. */
  private exportStructure(model: Model): Model {
    if (this.options.fusion && this.options.bnFold !== 'none') foldBatchNorms(model);
    return model;
  }

  private foldPair({ conv, bn }: ConvBnPair, wq: WeightFakeQuant): void {
    const attrs = convAttributes(conv);
    const eps = (attributeValue(bn, 'epsilon') as number | undefined) ?? 1e-5;
    const momentum = (attributeValue(bn, 'momentum') as number | undefined) ?? 0.9;
    const [meanName, varName] = [bn.input[3], bn.input[4]];
    let steps = 0;
    this.graph.overrides.set(conv, () => []);
    this.graph.overrides.set(bn, (read, training) => {
      const x = read(conv.input[0]) as tf.Tensor4D;
      const w = read(conv.input[1]) as tf.Tensor4D;
      const b = conv.input[2] ? read(conv.input[2]) : undefined;
      const [gamma, beta, runMean, runVar] = bn.input.slice(1, 5).map((n) => read(n)!);
      const c = [1, -1, 1, 1];
      const runStd = runVar.add(eps).sqrt();
      const k = gamma.div(runStd);
      const foldedW = w.mul(k.reshape([-1, 1, 1, 1]));
      const bias = (mean: tf.Tensor, std: tf.Tensor) => beta.sub(gamma.mul(b ? mean.sub(b) : mean).div(std));
      const inference = () => conv2d(x, wq.apply(foldedW, training) as tf.Tensor4D, bias(runMean, runStd), attrs);
      if (!training) return [inference()];
      steps++;
      const frozen = this.options.bnFold === 'two-conv' && steps > this.options.freezeBn;
      if (frozen) return [inference()];
      // batch statistics of the float layer output: from a float convolution ('two-conv') or
      // from the quantized folded one scaled back by 1/k ('one-conv')
      const quantized = conv2d(x, wq.apply(foldedW, training) as tf.Tensor4D, undefined, attrs);
      const raw = this.options.bnFold === 'two-conv' ? conv2d(x, w, b, attrs) : quantized.div(k.reshape(c)).add(b ? b.reshape(c) : 0);
      const { mean, variance } = tf.moments(raw, [0, 2, 3]);
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
    const tensors = new Set(all ? activationTensors(this.structure, layers) : []);
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
