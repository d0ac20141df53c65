/**
 * Post-training quantization with accuracy recovery: one engine, each technique an option.
 *
 *   float  = BN folded, opset 13 [→ cross-layer equalization] [→ DMQ balancing]
 *   ranges = calibration with any observer (minmax, histogram/HFMG, ifmr, sigma, …)
 *   weights = round-to-nearest | AdaRound, per layer on samples of its float input
 *             | GPTQ, per layer with the Hessian of its float inputs over every calibration batch
 *            [→ bias correction of the rounding's mean output shift]
 *   [→ sensitivity analysis → fallback of the amp_num most sensitive layers, or until the
 *      task metric is within a bound]
 *   → ONNX QDQ (+ fake-quant)
 *
 * msModelSlim's QuantConfig/Calibrator and AMCT's ada_quantize/dmq_balancer map onto these options.
 */
import { resolveReduceRange, weightBits } from '../runtime/cpu-features';
import { QuantbookError, invalidArgument } from '../errors';
import { CalibrationProgress, calibrate } from '../calibration/calibrator';
import { CalibrationSource, collectBatches } from '../calibration/data';
import { Model } from '../onnx/model';
import { DataType } from '../onnx/dtype';
import { attributeValue } from '../onnx/graph';
import { Feeds } from '../runtime/runner';
import { OBSERVER_KINDS, Observer, ObserverKind, ObserverOptions, QParams, QuantSpec, WEIGHT_SPEC, resolveSpec, weightQParams } from '../observers';
import { dequantizeLinear, quantizeLinear } from '../kernels/quant';
import { AdaRoundOptions, adaRound, checkAdaRoundOptions } from '../algorithms/adaround';
import { admmWeights } from '../algorithms/admm';
import { GptqLayerRow, GptqOptions, collectHessians, gptqUnsupported, gptqWeight } from '../algorithms/gptq';
import { correctedBias } from '../algorithms/bias-correction';
import { easyQuant } from '../algorithms/easy-quant';
import { ClePair, crossLayerEqualize } from '../algorithms/cle';
import { SmoothGroup, smoothModel } from '../algorithms/smooth';
import { LAYER_FORWARD_SUPPORTED, SampleLimits, layerForward, layerForwardUnsupported, sampleLayerInputs } from '../algorithms/layer-io';
import { Sensitivity, layerSensitivity } from '../algorithms/sensitivity';
import { narrowToReaders } from './consumer-domain';
import { finishWithLstms } from './lstm';
import { QuantLayer, layerTensorKey, selectLayers } from './layers';
import { activationTensors, applyQdq } from './qdq';
import { W8A8Result, prepareFloat } from './w8a8';

export const WEIGHT_ROUNDINGS = ['nearest', 'ada'] as const;
export type WeightRounding = (typeof WEIGHT_ROUNDINGS)[number];

export interface PtqOptions {
  /** activation range estimator (default 'minmax') */
  observer?: ObserverKind;
  observerOptions?: ObserverOptions;
  /** activation spec (default uint8 asymmetric per tensor) */
  activation?: Partial<Pick<QuantSpec, 'signed' | 'symmetric' | 'narrowRange'>>;
  /** weight spec (default int8 symmetric per channel) */
  weight?: Partial<Pick<QuantSpec, 'signed' | 'symmetric' | 'narrowRange' | 'perChannel'>>;
  /** weights on 7 bits where 8-bit int8 products saturate (x86 without VNNI); see W8A8Options.reduceRange */
  reduceRange?: boolean | 'auto';
  rounding?: WeightRounding;
  /** ADMM weight quantization (msModelSlim keep_acc admm): integers that minimise the layer's output error on its input samples (algorithms/admm.ts) */
  admm?: { iterations: number };
  /** EasyQuant (keep_acc easy_quant): alternating activation / weight scale search for output cosine, at most `rounds` rounds */
  easyQuant?: { rounds: number };
  /** AdaRound settings and how much of each layer's input it learns from (default 4 samples, 32×32 crops) */
  ada?: AdaRoundOptions & SampleLimits;
  biasCorrection?: boolean;
  /**
   * GPTQ weight rounding (algorithms/gptq.ts): on the same per-channel grid as round-to-nearest,
   * each layer's integers chosen column by column with the rounding error fed into the columns
   * not yet rounded, weighted by the inverse Hessian of its float inputs over the calibration
   * batches (one extra pass). Conv (any group), MatMul and Gemm with a 2-D weight; other weighted
   * layers stay round-to-nearest. Not combined with rounding 'ada', admm or easyQuant.
   */
  gptq?: boolean | GptqOptions;
  /** cross-layer equalization before anything else */
  cle?: boolean;
  /** DMQ balancer (AMCT): SmoothQuant migration into MatMul/Gemm weights with strength m in [0.2, 0.8], before calibration */
  dmq?: number;
  disableNames?: string[];
  /** leave the N most sensitive layers in float */
  ampNum?: number;
  /** leave layers in float, most sensitive first, until evaluate() is within this of the float model's */
  maxMetricDrop?: number;
  /** task metric (higher is better) of an encoded model; used by sensitivity and maxMetricDrop */
  evaluate?: (model: Uint8Array) => Promise<number>;
  /** batches for the sensitivity analysis (default: the first two calibration batches) */
  sensitivityData?: CalibrationSource;
  /** always run the sensitivity analysis (it runs anyway when falling back) */
  sensitivity?: boolean;
  onProgress?: (p: CalibrationProgress | { stage: 'ada' | 'gptq' | 'sensitivity'; done: number; total: number; layer: string }) => void;
}

export interface WeightRoundingRow { layer: string; nearestMse: number; adaMse: number; flipped: number; weights: number; kept: 'ada' | 'nearest' }

/** What W8A8 returns (`float` is also equalized with cle), plus what each recovery step did. */
export interface PtqResult extends Omit<W8A8Result, 'methods'> {
  /** AdaRound per layer: output MSE on its samples with nearest and learned rounding */
  rounding: WeightRoundingRow[];
  /** ADMM per layer: output error on its samples with round-to-nearest and with ADMM's integers, and the last iteration's residuals */
  admm: Array<{ layer: string; nearestError: number; admmError: number; flipped: number; primalResidual: number; dualResidual: number }>;
  /** EasyQuant per layer: mean output-channel cosine before and after the scale search */
  easyQuant: Array<{ layer: string; cosineBefore: number; cosineAfter: number }>;
  /** GPTQ per layer: its own output SQNR on the calibration inputs with round-to-nearest and with GPTQ */
  gptq: GptqLayerRow[];
  /** bias correction per layer: the largest mean output shift removed */
  biasCorrection: Array<{ layer: string; maxShift: number }>;
  cle: ClePair[];
  sensitivity?: Sensitivity;
  /** activations balanced by dmq */
  balanced: SmoothGroup[];
  /** layers left in float by ampNum / maxMetricDrop */
  fallback: string[];
  /** the QDQ model with exactly `keep` quantized (same ranges and weights); `biasCorrection: false` leaves the biases as they were */
  build(keep: string[], options?: { biasCorrection?: boolean }): Model;
}

function check(o: PtqOptions): void {
  if (o.observer !== undefined && !(OBSERVER_KINDS as readonly string[]).includes(o.observer)) throw invalidArgument('observer', o.observer, `one of ${OBSERVER_KINDS.join(', ')}`);
  if (o.rounding !== undefined && !WEIGHT_ROUNDINGS.includes(o.rounding)) throw invalidArgument('rounding', o.rounding, "'nearest' or 'ada'");
  if (o.ada) checkAdaRoundOptions(o.ada);
  if (o.gptq) {
    const other = o.rounding === 'ada' ? "rounding 'ada'" : o.admm ? 'admm' : o.easyQuant ? 'easyQuant' : undefined;
    if (other) throw invalidArgument('gptq', o.gptq, `false when ${other} chooses the weights (one weight-rounding algorithm at a time)`);
    const g = o.gptq === true ? {} : o.gptq;
    if (g.damp !== undefined && !(g.damp > 0)) throw invalidArgument('gptq.damp', g.damp, 'a number > 0');
    if (g.blockSize !== undefined && !(Number.isInteger(g.blockSize) && g.blockSize >= 1)) throw invalidArgument('gptq.blockSize', g.blockSize, 'an integer ≥ 1');
  }
  if (o.dmq !== undefined && !(o.dmq >= 0.2 && o.dmq <= 0.8)) throw invalidArgument('dmq (migration strength)', o.dmq, 'a number in [0.2, 0.8]');
  if (o.ampNum !== undefined && (!Number.isInteger(o.ampNum) || o.ampNum < 0)) throw invalidArgument('amp_num', o.ampNum, 'an integer ≥ 0');
  if (o.maxMetricDrop !== undefined && (!(o.maxMetricDrop >= 0) || !o.evaluate)) throw invalidArgument('maxMetricDrop', o.maxMetricDrop, 'a number ≥ 0, together with an evaluate function');
}

export async function quantizePtq(model: Model, calibData: CalibrationSource, options: PtqOptions = {}): Promise<PtqResult> {
  check(options);
  const float = prepareFloat(model);
  const cle = options.cle ? crossLayerEqualize(float) : [];
  const batches = await collectBatches(calibData, float.graph.inputNames);
  if (!batches.length) throw new QuantbookError('INVALID_ARGUMENT', 'calibration data holds no batch');
  const balanced = options.dmq === undefined ? [] : await smoothModel(float, batches, { method: 'm6', alpha: options.dmq, beta: 1 - options.dmq });
  const selection = selectLayers(float, options.disableNames ?? []);
  const layers = selection.layers;
  // layers the per-layer recoveries cannot compute: refused by name before any calibration
  if (options.rounding === 'ada' || options.admm || options.easyQuant || options.biasCorrection) {
    for (const l of layers.filter((x) => x.weight)) {
      const why = layerForwardUnsupported(float.graph, l);
      // AdaRound is asked of every weighted layer; admm / easyQuant / biasCorrection of every Conv (other weighted ops they cannot compute stay nearest-rounded)
      if (why && (options.rounding === 'ada' || l.opType === 'Conv')) {
        const what = options.rounding === 'ada' ? "rounding 'ada' (round_opt)" : 'admm / easyQuant / biasCorrection';
        throw new QuantbookError('UNSUPPORTED', `layer "${l.name}": ${what} is implemented for ${LAYER_FORWARD_SUPPORTED} layers; this layer is ${why} (leave it in float with disableNames, or use nearest rounding)`);
      }
    }
  }
  const spec = resolveSpec({ signed: false, symmetric: false, ...options.activation });
  const calibration = await calibrate(float, batches, {
    tensors: activationTensors(float, layers),
    observer: options.observer ?? 'minmax',
    observerOptions: options.observerOptions,
    spec,
    onProgress: options.onProgress as (p: CalibrationProgress) => void,
  });
  const activations = new Map<string, QParams>();
  for (const [t, o] of calibration.observers) activations.set(t, (o as Observer).qparams());
  const narrowed = narrowToReaders(float, activations, spec);

  // weights: nearest or learned rounding, then the bias that cancels their mean output shift
  const reduceRange = resolveReduceRange(options.reduceRange);
  const weightSpec: Partial<QuantSpec> = { ...WEIGHT_SPEC, ...options.weight, numBits: weightBits(reduceRange) };
  const quantFloat = float.clone();
  const weightValues = new Map<string, Int32Array>();
  const weightScales = new Map<string, Float32Array>();
  const rounding: WeightRoundingRow[] = [];
  const admm: PtqResult['admm'] = [];
  const easy: PtqResult['easyQuant'] = [];
  const biasCorrection: PtqResult['biasCorrection'] = [];
  const gptq: GptqLayerRow[] = [];
  if (options.gptq) {
    const targets = layers.filter((l) => !gptqUnsupported(float.graph, l));
    const hessians = await collectHessians(float, targets, batches);
    for (const [i, layer] of targets.entries()) {
      const w = float.graph.constantValue(layer.weight!)!;
      const data = w.data as Float32Array;
      const axis = layer.weightAxis!;
      // the grid round-to-nearest uses (applyQdq's quantizeWeight): same scales, same zero points
      const q = weightQParams(data, w.dims, { ...weightSpec, channelAxis: axis });
      // the layer's input is quantized too: its rounding noise (step²/12 per value) joins H
      const input = activations.get(layerTensorKey(layer, layer.activations[0]));
      const inputNoise = input ? input.scale[0] ** 2 / 12 : 0;
      const r = gptqWeight({ data, dims: w.dims, axis }, hessians.get(layer.name)!, q, { inputNoise, ...(options.gptq === true ? {} : options.gptq) });
      weightValues.set(layer.name, r.values);
      gptq.push({ layer: layer.name, nearestSqnrDb: r.nearestSqnrDb, gptqSqnrDb: r.gptqSqnrDb, changed: r.changed, weights: data.length });
      options.onProgress?.({ stage: 'gptq', done: i + 1, total: targets.length, layer: layer.name });
    }
  }
  const tuned = layers.filter((l) => l.weight && !layerForwardUnsupported(float.graph, l));
  const needSamples = options.rounding === 'ada' || options.biasCorrection || options.easyQuant || options.admm;
  if (needSamples && tuned.length) {
    const samples = await sampleLayerInputs(float, tuned, batches, { samples: options.ada?.samples, crop: options.ada?.crop });
    for (const [i, layer] of tuned.entries()) {
      const g = float.graph;
      const w = g.constantValue(layer.weight!)!;
      const data = w.data as Float32Array;
      const axis = layer.weightAxis!;
      const q = weightQParams(data, w.dims, { ...weightSpec, channelAxis: axis });
      const forward = layerForward(g, layer);
      const bias = layer.bias ? (g.constantValue(layer.bias)!.data as Float32Array) : undefined;
      const input = samples.get(layer.name)!;
      if (options.easyQuant) {
        const tensor = layer.activations[0];
        const r = easyQuant(forward, { data, dims: w.dims, axis }, q, activations.get(tensor)!, input, bias, options.easyQuant.rounds);
        activations.set(tensor, { ...activations.get(tensor)!, scale: Float32Array.of(r.activationScale) });
        q.scale = r.weightScale;
        easy.push({ layer: layer.name, cosineBefore: r.cosineBefore, cosineAfter: r.cosineAfter });
      }
      if (options.easyQuant) weightScales.set(layer.name, q.scale);
      let values = weightValues.get(layer.name) ?? Int32Array.from(quantizeLinear(data, q.scale, q.zeroPoint, q, w.dims, q.scale.length > 1 ? axis : 1));
      // ADMM on the final scales (after EasyQuant's), integers chosen for the layer's output error
      let admmError = Infinity;
      if (options.admm) {
        const group = layer.opType === 'Conv' ? ((attributeValue(layer.node, 'group') as number | undefined) ?? 1) : 1;
        const r = admmWeights({ forward, weight: { data, dims: w.dims, axis }, group, input }, q, options.admm.iterations);
        const last = r.history.primal.length - 1;
        admm.push({ layer: layer.name, nearestError: r.nearestError, admmError: r.error, flipped: r.flipped, primalResidual: r.history.primal[last], dualResidual: r.history.dual[last] });
        values = r.values;
        admmError = r.error;
        weightValues.set(layer.name, values);
      }
      if (options.rounding === 'ada') {
        const r = await adaRound(forward, { data, dims: w.dims, axis }, q, input, bias, options.ada);
        rounding.push({ layer: layer.name, nearestMse: r.nearestMse, adaMse: r.adaMse, flipped: r.flipped, weights: data.length, kept: r.kept });
        // with admm too (keep_acc admm + round_opt): the lower output error on the same samples wins
        if (!options.admm || (r.kept === 'ada' && r.adaMse < admmError)) values = r.values;
        weightValues.set(layer.name, values);
        options.onProgress?.({ stage: 'ada', done: i + 1, total: tuned.length, layer: layer.name });
      }
      if (options.biasCorrection && layer.opType !== 'MatMul') {
        const deq = dequantizeLinear(values, q.scale, q.zeroPoint, w.dims, q.scale.length > 1 ? axis : 1);
        const channels = w.dims[axis];
        const { bias: nb, shift } = correctedBias(forward, { data, dims: w.dims }, deq, input, bias, channels);
        setBias(quantFloat, layer, nb);
        biasCorrection.push({ layer: layer.name, maxShift: shift.reduce((m, v) => Math.max(m, Math.abs(v)), 0) });
      }
    }
  }

  // every variant (sensitivity, fallback, the result) is the same recipe on a subset of layers
  const quantizeSubset = (keep: string[], o: { biasCorrection?: boolean } = {}) => {
    const model = (o.biasCorrection === false ? float : quantFloat).clone();
    const chosen = selectLayers(model, options.disableNames ?? []).layers.filter((l) => keep.includes(l.name));
    return { model, records: applyQdq(model, chosen, { activations, weightSpec, weightValues, weightScales }) };
  };
  const build = (keep: string[], o: { biasCorrection?: boolean } = {}): Model => quantizeSubset(keep, o).model;
  const names = layers.map((l) => l.name);
  let sensitivity: Sensitivity | undefined;
  let fallback: string[] = [];
  if (options.sensitivity || options.ampNum || options.maxMetricDrop !== undefined) {
    const byName = (keep: QuantLayer[]) => build(keep.map((l) => l.name));
    sensitivity = await layerSensitivity(float, layers, byName, {
      data: options.sensitivityData ?? batches.slice(0, 2),
      evaluate: options.evaluate,
      onProgress: (p) => options.onProgress?.({ stage: 'sensitivity', ...p }),
    });
    const ranked = sensitivity.ranking();
    if (options.ampNum) fallback = ranked.slice(0, options.ampNum);
    if (options.maxMetricDrop !== undefined) {
      const target = sensitivity.floatMetric - options.maxMetricDrop;
      let metric = sensitivity.all.metric;
      for (const name of ranked) {
        if (metric >= target) break;
        if (!fallback.includes(name)) fallback.push(name);
        metric = await options.evaluate!(build(names.filter((n) => !fallback.includes(n))).toBytes());
      }
    }
  }
  const { model: qdq, records } = quantizeSubset(names.filter((n) => !fallback.includes(n)));
  const { fakeQuant, lstm } = finishWithLstms(qdq, selection, options.disableNames);
  return { float, qdq, fakeQuant, lstm, layers: records, selection, calibration, activations, rounding, admm, easyQuant: easy, gptq, biasCorrection, cle, balanced, sensitivity, fallback, build, reduceRange, narrowed };
}

/** Replaces (or adds) a Conv/Gemm bias. */
function setBias(model: Model, layer: QuantLayer, bias: Float32Array): void {
  const g = model.graph;
  const node = g.nodes.find((n) => (n.name || n.output[0]) === layer.name)!;
  if (node.input[2]) {
    g.replaceInitializer(node.input[2], { type: DataType.FLOAT, dims: [bias.length], data: bias });
    return;
  }
  while (node.input.length < 2) node.input.push('');
  node.input[2] = g.addInitializer({ name: g.uniqueName(`${layer.name}.bias`), type: DataType.FLOAT, dims: [bias.length], data: bias }).name!;
  g.invalidate();
}
