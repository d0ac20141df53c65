/**
 * W8A8 static post-training quantization: int8 per-channel symmetric weights, uint8
 * asymmetric per-tensor activations (signed/symmetric on request), calibrated with
 * act_method 'minmax', 'histogram' (HFMG) or 'mixed' (per tensor, whichever of the two gives
 * the lower quantization error on that tensor's calibration histogram).
 */
import { resolveReduceRange, weightBits } from '../runtime/cpu-features';
import { invalidArgument } from '../errors';
import { Model } from '../onnx/model';
import { upgradeOpset } from '../onnx/opset-upgrade';
import { promoteFloat16 } from '../onnx/float16';
import { CalibrateOptions, CalibrationResult, CalibrationProgress, calibrate } from '../calibration/calibrator';
import { foldConstantOfShape } from '../onnx/fold-constant-of-shape';
import { CalibrationSource } from '../calibration/data';
import { AnyObserver, Observer, PerChannelObserver, QParams, QuantSpec, histogramQdqError, qparamsFromRange, resolveSpec } from '../observers';
import { LayerRecord, activationTensors, applyQdq, insertQdqPairs } from './qdq';
import { constantQParams, divisionsToMultiplications, foldConstantMultipliers, glueTensors, scaleThroughMultipliers, shareClipParams } from './glue';
import { foldAffineIntoConvs } from './fold-affine';
import { foldIntoConvTransposes } from './fold-conv-transpose';
import { foldBatchNorms, removeUnusedConstants } from './fold-batchnorm';
import { LayerSelection, QuantLayer, globToRegExp, layerTensorKey, requireLayers, selectLayers } from './layers';
import { NarrowedRange, narrowToReaders } from './consumer-domain';
import { QuantizedLstm, finishWithLstms } from './lstm';
import { spillFor } from './spill-for';
import { calibrateHeldModel } from '../calibration/by-blocks';
import { warn } from '../warnings';
import { LayerSpeed, SpeedFallbackReport, layersToKeepFloat, measureLayerSpeeds, requireInMemory, requireRereadable, slowerInInt8, slowerReason, timingBatches, wholeModelLatencies } from './speed-fallback';
import { Feeds } from '../runtime/runner';

export const ACT_METHODS = ['minmax', 'histogram', 'mixed'] as const;
export type ActMethod = (typeof ACT_METHODS)[number];

export const OP_SETS = ['amct', 'extended', 'msmodelslim'] as const;
export type OpSet = (typeof OP_SETS)[number];

export interface W8A8Options {
  actMethod?: ActMethod;
  /**
   * 'amct' (default): the AMCT layers, each output that reaches another quantized layer
   * requantized (ORT's integer chains); 'extended': also the elementwise glue between them (faster
   * on ORT CPU, less accurate); 'msmodelslim': as msModelSlim's W8A8 deploys an LLM, only layers
   * with a constant weight (its nn.Linear; an activation × activation MatMul such as attention's
   * q·kᵀ and probs·V stays float), and their outputs not requantized (deq_scale back to float)
   */
  opSet?: OpSet;
  disableNames?: string[];
  /** activation spec overrides (default uint8 asymmetric) */
  activation?: Partial<Pick<QuantSpec, 'signed' | 'symmetric'>>;
  /** per-channel weights (default true) */
  weightPerChannel?: boolean;
  /** weights on 7 bits (ONNX Runtime's reduce_range), for x86 CPUs without VNNI where 8-bit products saturate; 'auto': only on such a host; default false */
  reduceRange?: boolean | 'auto';
  /** histograms count about this many values per tensor and batch (see CalibrateOptions.histogramSample; 0: every value) */
  histogramSample?: number;
  onProgress?: (p: CalibrationProgress) => void;
  signal?: AbortSignal;
  /** where calibration runs (a Device's executionProviders; default cpu) */
  executionProviders?: CalibrateOptions['executionProviders'];
  /**
   * Keep float the layers whose int8 kernels run slower than their float ones on this CPU,
   * measured with ONNX Runtime's profiler (speed-fallback.ts); the mixed model is kept only if
   * it is faster than the all-int8 one as a whole. true: time on the first two calibration
   * batches (the calibration data is read twice); or the feeds to time on. Default false.
   */
  speedFallback?: boolean | Feeds[];
}

export interface W8A8Result {
  /** the float model after the rewrites quantization needs (opset 13, BatchNorm and constant affine steps folded into Convs) */
  float: Model;
  qdq: Model;
  fakeQuant: Model;
  layers: LayerRecord[];
  /** whether the weights were put on 7 bits (see W8A8Options.reduceRange) */
  reduceRange: boolean;
  selection: LayerSelection;
  calibration: CalibrationResult;
  activations: Map<string, QParams>;
  /** mixed: which method each tensor got */
  methods: Map<string, 'minmax' | 'histogram'>;
  /** activations whose range was cut to where their readers still vary (consumer-domain.ts) */
  narrowed: NarrowedRange[];
  /** LSTMs rewritten as com.microsoft.DynamicQuantizeLSTM */
  lstm: QuantizedLstm[];
  /** with speedFallback: the measured layer times and which model was kept */
  speedFallback?: SpeedFallbackReport;
}

export function prepareFloat(model: Model): Model {
  const float = model.clone();
  promoteFloat16(float);
  upgradeOpset(float, 13);
  foldConstantOfShape(float);
  foldBatchNorms(float);
  foldAffineIntoConvs(float);
  foldIntoConvTransposes(float);
  return float;
}

export async function quantizeW8A8(model: Model, calibData: CalibrationSource, options: W8A8Options = {}): Promise<W8A8Result> {
  if (options.speedFallback) return quantizeW8A8KeepingFasterKernels(model, calibData, options.speedFallback, { ...options, speedFallback: false });
  const actMethod = options.actMethod ?? 'minmax';
  if (!ACT_METHODS.includes(actMethod)) throw invalidArgument('act_method', actMethod, `one of ${ACT_METHODS.map((m) => `'${m}'`).join(', ')}`);
  const opSet = options.opSet ?? 'amct';
  if (!OP_SETS.includes(opSet)) throw invalidArgument('opSet', opSet, `one of ${OP_SETS.map((o) => `'${o}'`).join(', ')}`);
  const reduceRange = resolveReduceRange(options.reduceRange);
  const float = prepareFloat(model);
  // layers are selected on the copy that gets quantized; tensor names are the same in both
  const qdq = float.clone();
  if (opSet === 'extended') divisionsToMultiplications(qdq);
  const selection = selectLayers(qdq, options.disableNames ?? [], { subgraphs: true });
  if (opSet === 'msmodelslim') keepWeightlessLayersFloat(selection);
  requireLayers(selection, qdq);
  // msmodelslim: each layer's input only; otherwise also the outputs that reach another quantized layer
  const tensorsOf = (layers: QuantLayer[]) => (opSet === 'msmodelslim' ? [...new Set(layers.flatMap((l) => l.activations.map((t) => layerTensorKey(l, t))))] : activationTensors(qdq, layers));
  let layerTensors = tensorsOf(selection.layers);
  const glue = opSet === 'extended' ? glueTensors(qdq, new Set(selection.layers.filter((l) => !l.scope).map((l) => l.node))) : { activations: [], constants: [] };
  const tensors = [...new Set([...layerTensors, ...glue.activations])];
  const spec = resolveSpec({ signed: false, symmetric: false, ...options.activation });
  // a model held by reference (larger than memory): calibrated block by block, weights spilled as they are quantized
  const spill = spillFor(qdq);
  const calibration = await (spill ? calibrateHeldModel : calibrate)(float, calibData, {
    tensors,
    observer: actMethod === 'minmax' ? 'minmax' : 'histogram',
    spec,
    onProgress: options.onProgress,
    signal: options.signal,
    skipNonFloat: opSet === 'extended',
    executionProviders: options.executionProviders,
    histogramSample: options.histogramSample,
  });
  keepUnreachedLayersFloat(selection, calibration);
  requireLayers(selection, qdq);
  layerTensors = tensorsOf(selection.layers);
  const activations = new Map<string, QParams>();
  const methods = new Map<string, 'minmax' | 'histogram'>();
  for (const t of tensors) {
    const o = calibration.observers.get(t) as Observer | undefined;
    if (!o) continue; // not a float tensor (extended op set only)
    if (observedValues(o) === 0) continue; // never computed: its layers stay float
    let method: 'minmax' | 'histogram' = actMethod === 'minmax' ? 'minmax' : 'histogram';
    let q = o.qparams();
    if (actMethod === 'mixed') {
      const [lo, hi] = o.observedRange;
      const mm = qparamsFromRange([lo], [hi], spec);
      if (histogramQdqError(o.histogram!, mm) <= histogramQdqError(o.histogram!, q)) {
        q = mm;
        method = 'minmax';
      }
    }
    activations.set(t, q);
    methods.set(t, method);
  }
  const narrowed = narrowToReaders(qdq, activations, spec);
  if (opSet === 'extended') {
    shareClipParams(qdq, activations);
    scaleThroughMultipliers(qdq, activations);
  }
  const layers = applyQdq(qdq, selection.layers, {
    activations,
    weightSpec: { perChannel: options.weightPerChannel ?? true, numBits: weightBits(reduceRange) },
    spill,
    ...(opSet === 'msmodelslim' ? { tensors: layerTensors } : {}),
  });
  if (opSet === 'extended') {
    const done = new Set(layerTensors);
    for (const c of glue.constants) activations.set(c, constantQParams(qdq, c, spec));
    insertQdqPairs(qdq.graph, [...glue.activations, ...glue.constants].filter((t) => !done.has(t) && activations.has(t)).map((t) => [t, activations.get(t)!]));
    foldConstantMultipliers(qdq);
    removeUnusedConstants(qdq.graph);
  }
  // LSTMs: int8 weights through com.microsoft.DynamicQuantizeLSTM (no QDQ kernel exists for them)
  const finished = finishWithLstms(qdq, selection, options.disableNames, spill);
  // `fakeQuant` stays a getter: a model held by reference makes its fake-quant copy only when asked
  return Object.defineProperties({ float, qdq, layers, selection, calibration, activations, methods, reduceRange, narrowed, lstm: finished.lstm } as W8A8Result, { fakeQuant: Object.getOwnPropertyDescriptor(finished, 'fakeQuant')! });
}

/**
 * speedFallback: quantize, profile each layer's int8 and float kernels, quantize again with the
 * layers that lost kept float, and keep whichever of the two models is faster as a whole.
 */
async function quantizeW8A8KeepingFasterKernels(model: Model, calibData: CalibrationSource, timing: true | Feeds[], options: W8A8Options): Promise<W8A8Result> {
  requireRereadable(calibData);
  requireInMemory(model);
  const allInt8 = await quantizeW8A8(model, calibData, options);
  const batches = await timingBatches(timing, calibData, allInt8.float.graph.inputNames);
  const mainLayers = allInt8.selection.layers.filter((l) => !l.scope);
  const { layers, switchUs } = await measureLayerSpeeds(allInt8.float, allInt8.qdq, mainLayers, batches);
  const proposed = layersToKeepFloat(layers, switchUs, allInt8.selection.layers.length);
  const base = { layers, switchUs, proposed: proposed.map((s) => s.layer) };
  // nothing to keep float (or a one-layer model): the all-int8 model with its times
  const mixed = proposed.length === 0 || proposed.length === allInt8.selection.layers.length ? undefined : await quantizeW8A8KeepingFloat(model, calibData, options, proposed);
  const latencyMs = await wholeModelLatencies(allInt8.float, allInt8.qdq, mixed?.qdq, batches);
  const chooseMixed = mixed !== undefined && latencyMs.mixed! <= latencyMs.allInt8;
  const chosen = chooseMixed ? mixed : allInt8;
  const report: SpeedFallbackReport = {
    ...base, keptFloat: chooseMixed ? base.proposed : [], latencyMs, chosen: chooseMixed ? 'mixed' : 'all-int8',
    slowerThanFloat: (chooseMixed ? latencyMs.mixed! : latencyMs.allInt8) > latencyMs.float,
  };
  if (report.slowerThanFloat) {
    warn('QUANTBOOK_INT8_SLOWER', `speedFallback: the quantized model is still slower than fp32 on this CPU (${(chooseMixed ? latencyMs.mixed! : latencyMs.allInt8).toFixed(2)} ms against ${latencyMs.float.toFixed(2)} ms; ${slowerInInt8(layers).length} of ${layers.length} layers are slower in int8): ONNX Runtime's int8 kernels do not pay at these layer sizes here`);
  }
  return Object.assign(chosen, { speedFallback: report });
}

/** W8A8 with the given (measured) layers kept float, each listed with its times as the reason. */
export async function quantizeW8A8KeepingFloat(model: Model, calibData: CalibrationSource, options: W8A8Options, slower: readonly LayerSpeed[]): Promise<W8A8Result> {
  // names go in as disable_names globs; a layer name with * or ? may also match others
  const mixed = await quantizeW8A8(model, calibData, { ...options, speedFallback: false, disableNames: [...(options.disableNames ?? []), ...slower.map((s) => s.layer)] });
  const reasons = new Map(slower.map((s) => [s.layer, slowerReason(s)]));
  const userDisabled = (name: string) => (options.disableNames ?? []).some((p) => globToRegExp(p).test(name));
  for (const s of mixed.selection.skipped) if (!s.scope && reasons.has(s.name) && !userDisabled(s.name)) s.reason = reasons.get(s.name)!;
  return mixed;
}

/** opSet 'msmodelslim': layers without a constant weight (activation × activation MatMuls) stay float, listed with the reason. */
function keepWeightlessLayersFloat(selection: LayerSelection): void {
  selection.layers = selection.layers.filter((l) => {
    if (l.weight) return true;
    selection.skipped.push({ name: l.name, opType: l.opType, reason: "op set 'msmodelslim': no constant weight (msModelSlim's W8A8 quantizes its Linear layers only)", scope: l.scope?.path });
    return false;
  });
}

/** How many values an observer has seen (0: its tensor was never computed in calibration). */
function observedValues(o: AnyObserver): number {
  return o instanceof PerChannelObserver ? o.channels[0]?.state().count ?? 0 : o.state().count;
}

/**
 * Layers whose activations calibration never saw (inside an If branch the calibration data did
 * not take, or a Loop that ran no iteration) have no ranges: they stay float, listed with the reason.
 */
function keepUnreachedLayersFloat(selection: LayerSelection, calibration: CalibrationResult): void {
  const unseen = (t: string) => {
    const o = calibration.observers.get(t);
    return o !== undefined && observedValues(o) === 0;
  };
  selection.layers = selection.layers.filter((l) => {
    const key = (t: string) => layerTensorKey(l, t);
    const missing = l.activations.map(key).find(unseen);
    if (!missing) return true;
    selection.skipped.push({ name: l.name, opType: l.opType, reason: `not reached by the calibration data (its input "${missing}" was never computed: a branch or loop body that did not run)`, scope: l.scope?.path });
    return false;
  });
}

