/**
 * AMCT's post-training flow on ONNX models:
 *   createQuantConfig(configFile, model, inputData, {…})        → JSON config (amct-config.ts)
 *   const q = quantizeModel(configFile, model, recordFile)        → BN fusion, ARQ weights
 *   await q.calibrate(batches)                                    → batch_num batches, IFMR/HFMG
 *   saveModel(prefix, q)   → <prefix>_fake_quant_model.onnx, <prefix>_deploy_model.onnx, record
 * Layers sharing an input tensor keep their own activation settings: each gets its own quant
 * chain, as AMCT inserts one AscendQuant per layer.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError, invalidArgument } from '../errors';
import { CalibrationProgress, calibrate } from '../calibration/calibrator';
import { CalibrationSource, batchesFrom } from '../calibration/data';
import { Model, loadModel } from '../onnx/model';
import { upgradeOpset } from '../onnx/opset-upgrade';
import { Feeds } from '../runtime/runner';
import { Observer, ObserverOptions, WEIGHT_SPEC, quantRange, resolveSpec, weightQParams } from '../observers';
import { adaRound } from '../algorithms/adaround';
import { LAYER_FORWARD_SUPPORTED, layerForward, layerForwardUnsupported, sampleLayerInputs } from '../algorithms/layer-io';
import { SmoothGroup, smoothModel } from '../algorithms/smooth';
import { DmqConvGroup, dmqBalanceConvs } from '../algorithms/dmq-conv';
import { foldBatchNorms } from '../quantize/fold-batchnorm';
import { QuantLayer } from '../quantize/layers';
import { perChannel, quantizeBias, quantizeWeight } from '../quantize/qdq';
import { settleWeightScales } from '../quantize/int32-bias';
import { writeAll, writeFilesAtomically } from '../util/atomic-write';
import { publishFileSet } from '../util/file-set';
import { AmctLayerParams, amctDeployModel, amctFakeQuantModel, amctQdqModel, formatRecord } from '../export/amct-models';
import { ActivationQuantParams, AmctQuantConfig, WeightQuantParams, amctLayers, checkAmctLayerConstraints, readQuantConfig } from './amct-config';

/**
 * A layer to quantize. ARQ weights are quantized at once; AdaRound (ada_quantize) and DMQ-balanced
 * layers wait for calibrate(), which has the data they need (`deferred`).
 */
interface PlannedLayer { layer: QuantLayer; weight?: AmctLayerParams['weight']; act: ActivationQuantParams; wts?: WeightQuantParams; dmq?: number }

function arqWeight(float: Model, layer: QuantLayer, w: WeightQuantParams): NonNullable<AmctLayerParams['weight']> {
  const t = float.graph.constantValue(layer.weight!)!;
  const axis = layer.weightAxis!;
  const { int8, scale } = quantizeWeight(t.data as Float32Array, t.dims, axis, { numBits: w.num_bits, perChannel: w.channel_wise, signed: true });
  return { tensor: layer.weight!, dims: t.dims, axis, int8: int8 as Int8Array, scale }; // AMCT weights are signed: int8
}

function observerFor(p: ActivationQuantParams): { kind: 'ifmr' | 'histogram'; options: ObserverOptions } {
  if (p.act_algo === 'hfmg') return { kind: 'histogram', options: { bins: p.num_of_bins } };
  return { kind: 'ifmr', options: { maxPercentile: p.max_percentile, minPercentile: p.min_percentile, searchRange: p.search_range, searchStep: p.search_step } };
}

/** The model being quantized: weights done, activations waiting for calibrate(). */
export class AmctQuantization {
  private params?: AmctLayerParams[];
  /** DMQ balancing done in calibrate(): one group per balanced activation */
  balanced: Array<SmoothGroup | DmqConvGroup> = [];
  /** AdaRound per layer: output MSE on its input samples with nearest and learned rounding */
  adaRounding: Array<{ layer: string; nearestMse: number; adaMse: number; flipped: number; kept: 'ada' | 'nearest' }> = [];

  constructor(
    readonly config: AmctQuantConfig,
    /** float model after BN fusion; layer names as in the config */
    readonly float: Model,
    private readonly planned: PlannedLayer[],
    readonly recordFile?: string,
  ) {}

  /** Layer names that get quantized (quant_enable true), in graph order. */
  get layers(): string[] {
    return this.planned.map((p) => p.layer.name);
  }

  /** Per-layer parameters, once calibrated. */
  get layerParams(): AmctLayerParams[] {
    if (!this.params) throw new QuantbookError('INVALID_ARGUMENT', 'AMCT quantization: call calibrate(batches) before reading parameters or saving');
    return this.params;
  }

  /** Runs `batch_num` batches (error if the data has fewer) and fixes every layer's scale_d/offset_d. */
  async calibrate(data: CalibrationSource, options: { onProgress?: (p: CalibrationProgress) => void } = {}): Promise<AmctLayerParams[]> {
    const want = this.config.batch_num;
    const batches: Feeds[] = [];
    for await (const b of batchesFrom(data, this.float.graph.inputNames)) {
      batches.push(b);
      if (batches.length === want) break;
    }
    if (batches.length < want) throw new QuantbookError('INVALID_ARGUMENT', `calibration data: batch_num is ${want} but the data holds ${batches.length} batch${batches.length === 1 ? '' : 'es'}`);
    await this.balance(batches);
    // one calibration pass per distinct activation setting
    const groups = new Map<string, PlannedLayer[]>();
    for (const p of this.planned) {
      const key = JSON.stringify(p.act);
      groups.set(key, [...(groups.get(key) ?? []), p]);
    }
    const ranges = new Map<PlannedLayer, { scale: number; zeroPoint: number }>();
    for (const group of groups.values()) {
      const act = group[0].act;
      const { kind, options: observerOptions } = observerFor(act);
      const result = await calibrate(this.float, batches, {
        tensors: [...new Set(group.map((p) => p.layer.activations[0]))],
        observer: kind,
        observerOptions,
        spec: { numBits: act.num_bits, signed: true, symmetric: !act.asymmetric },
        onProgress: options.onProgress,
      });
      for (const p of group) {
        const q = (result.observers.get(p.layer.activations[0]) as Observer).qparams();
        ranges.set(p, { scale: q.scale[0], zeroPoint: q.zeroPoint[0] });
      }
    }
    await this.roundWeights(batches);
    this.params = this.planned.map((p) => {
      const r = ranges.get(p)!;
      // int32 bias on the accumulator's grid s_w·s_d, with weight scales raised where it would not fit
      const b = p.layer.bias;
      let bias: AmctLayerParams['bias'];
      if (p.weight) {
        const floatBias = b ? this.float.graph.constantValue(b)!.data as Float32Array : undefined;
        const w = this.float.graph.constantValue(p.weight.tensor)!;
        const zeroPoint = new Int32Array(p.weight.scale.length);
        settleWeightScales({ data: w.data as Float32Array, dims: w.dims, axis: p.weight.axis }, { int8: p.weight.int8, scale: p.weight.scale, zeroPoint },
          { ...quantRange(resolveSpec({ numBits: p.wts?.num_bits ?? 8, signed: true, symmetric: true }, WEIGHT_SPEC)), symmetric: true },
          { bias: floatBias, inputScale: r.scale, perTensor: p.wts?.channel_wise === false });
        if (b && floatBias) bias = { tensor: b, int32: quantizeBias(floatBias, Float32Array.from(p.weight.scale, (s) => Math.fround(s * r.scale))) };
      }
      return { name: p.layer.name, opType: p.layer.opType, input: p.layer.activations[0], scaleD: r.scale, offsetD: r.zeroPoint, weight: p.weight, bias };
    });
    return this.params;
  }

  /**
   * DMQ balancer: SmoothQuant migration per input channel, s_j = max|X_j|^m / max|W_j|^(1−m) with
   * m = dmq_balancer_param, applied to the float model before anything is measured (the weights
   * of balanced layers are quantized afterwards). MatMul/Gemm go through smoothModel (m6 with
   * α = m, β = 1 − m); Conv/ConvTranspose through dmqBalanceConvs.
   */
  private async balance(batches: Feeds[]): Promise<void> {
    const isConv = (p: PlannedLayer) => p.layer.opType === 'Conv' || p.layer.opType === 'ConvTranspose';
    const strengths = [...new Set(this.planned.filter((p) => p.dmq !== undefined).map((p) => p.dmq!))];
    const matmuls = this.float.graph.nodes.filter((n) => n.op_type === 'MatMul' || n.op_type === 'Gemm').map((n) => n.name ?? '');
    for (const m of strengths) {
      const members = this.planned.filter((p) => p.dmq === m && !isConv(p)).map((p) => p.layer.name);
      if (members.length) this.balanced.push(...await smoothModel(this.float, batches, { method: 'm6', alpha: m, beta: 1 - m, skip: matmuls.filter((n) => !members.includes(n)) }));
      // convolutions: per input channel into the weight axis that reads it (dmq-conv.ts)
      this.balanced.push(...await dmqBalanceConvs(this.float, this.planned.filter((p) => p.dmq === m && isConv(p)).map((p) => p.layer), m, batches));
    }
    // an inserted Mul renames the layer's activation input
    const g = this.float.graph;
    for (const p of this.planned) if (p.dmq !== undefined) p.layer.activations = p.layer.node.input.slice(0, 2).filter((t) => t && !g.isConstant(t));
  }

  /** Weights left for calibrate(): AdaRound on samples of the layer's float input, or ARQ after balancing. */
  private async roundWeights(batches: Feeds[]): Promise<void> {
    const deferred = this.planned.filter((p) => p.wts && !p.weight);
    const ada = deferred.filter((p) => p.wts!.wts_algo === 'ada_quantize');
    const samples = ada.length ? await sampleLayerInputs(this.float, ada.map((p) => p.layer), batches) : undefined;
    for (const p of deferred) {
      if (p.wts!.wts_algo !== 'ada_quantize') {
        p.weight = arqWeight(this.float, p.layer, p.wts!);
        continue;
      }
      const g = this.float.graph;
      const t = g.constantValue(p.layer.weight!)!;
      const axis = p.layer.weightAxis!;
      const q = weightQParams(t.data as Float32Array, t.dims, { numBits: p.wts!.num_bits, perChannel: p.wts!.channel_wise, channelAxis: axis });
      const bias = p.layer.bias ? (g.constantValue(p.layer.bias)!.data as Float32Array) : undefined;
      const r = await adaRound(layerForward(g, p.layer), { data: t.data as Float32Array, dims: t.dims, axis }, q, samples!.get(p.layer.name)!, bias, {
        numIteration: p.wts!.num_iteration, regParam: p.wts!.reg_param, betaRange: p.wts!.beta_range, warmStart: p.wts!.warm_start,
      });
      this.adaRounding.push({ layer: p.layer.name, nearestMse: r.nearestMse, adaMse: r.adaMse, flipped: r.flipped, kept: r.kept });
      p.weight = { tensor: p.layer.weight!, dims: t.dims, axis, int8: Int8Array.from(r.values), scale: perChannel(q.scale, t.dims[axis]) };
    }
  }
}

/**
 * AMCT's quantize_model: reads the config, fuses Conv+BN (unless do_fusion is false or the conv is
 * in skip_fusion_layers), quantizes the weights of enabled layers (ARQ; AdaRound and DMQ-balanced
 * layers in calibrate(), which has data), and returns the object that calibrates. `recordFile` is where saveModel writes the scales (default `<prefix>_record.txt`).
 */
export function quantizeModel(configFile: string, model: Model | string, recordFile?: string): AmctQuantization {
  const source = typeof model === 'string' ? loadModel(model) : model;
  const config = readQuantConfig(configFile, source);
  // the seed's layer constraints (Conv3d dilation_d = 1), before fusion or any weight is touched
  checkAmctLayerConstraints(source, amctLayers(source).filter((l) => config.layers[l.name]?.quant_enable), configFile);
  const float = source.clone();
  if ((float.opsetVersion('') ?? 1) < 11) upgradeOpset(float, 13); // Round and Clip(min, max) inputs
  if (config.do_fusion) foldBatchNorms(float, { skip: config.skip_fusion_layers });
  const planned: PlannedLayer[] = [];
  for (const layer of amctLayers(float)) {
    const c = config.layers[layer.name];
    if (!c || !c.quant_enable) continue;
    const dmq = c.dmq_balancer_param;
    if (dmq !== undefined && (!layer.weight || !['MatMul', 'Gemm', 'Conv', 'ConvTranspose'].includes(layer.opType))) {
      throw new QuantbookError('UNSUPPORTED', `${configFile}: layer "${layer.name}": dmq_balancer_param applies to Linear (MatMul/Gemm), Conv2d, Conv3d and ConvTranspose2d layers with a constant weight (scales migrate into it per input channel); this layer is ${layer.opType}`);
    }
    const w = c.weight_quant_params;
    const adaUnsupported = w?.wts_algo === 'ada_quantize' ? layerForwardUnsupported(float.graph, layer) : undefined;
    if (adaUnsupported) {
      throw new QuantbookError('UNSUPPORTED', `${configFile}: layer "${layer.name}": ada_quantize is implemented for ${LAYER_FORWARD_SUPPORTED} layers; this layer is ${adaUnsupported} (use arq_quantize for it)`);
    }
    // AdaRound and balanced layers get their weights in calibrate()
    const deferred = w?.wts_algo === 'ada_quantize' || dmq !== undefined;
    const weight = layer.weight && w && !deferred ? arqWeight(float, layer, w) : undefined;
    planned.push({ layer, weight, act: c.activation_quant_params, wts: layer.weight ? w : undefined, dmq });
  }
  if (!planned.length) throw new QuantbookError('INVALID_ARGUMENT', `${configFile}: no layer has quant_enable true; nothing to quantize`);
  return new AmctQuantization(config, float, planned, recordFile);
}

export interface AmctSaveResult { fakeQuantModel: string; deployModel: string; recordFile: string; qdqModel?: string }

/**
 * AMCT's save_model: writes `<prefix>_fake_quant_model.onnx` (runs on ONNX Runtime),
 * `<prefix>_deploy_model.onnx` (AscendQuant/AscendDequant, for ATC) and the record file;
 * with `{ qdq: true }` also `<prefix>_qdq_model.onnx`, the same numbers as standard ONNX QDQ.
 */
export function saveModel(savePath: string, quantization: AmctQuantization, options: { qdq?: boolean } = {}): AmctSaveResult {
  if (typeof savePath !== 'string' || !savePath || savePath.endsWith('/') || savePath.endsWith(path.sep)) throw invalidArgument('save_path', savePath, 'a path prefix such as "out/resnet" (folder plus file name prefix)');
  if (!(quantization instanceof AmctQuantization)) throw invalidArgument('model', quantization, 'the object quantizeModel returned');
  const params = quantization.layerParams;
  // the files sharing the prefix are one set (util/file-set.ts): published at once, with a manifest
  const dir = path.dirname(path.resolve(savePath));
  const prefix = path.basename(savePath);
  const fakeQuantModel = `${savePath}_fake_quant_model.onnx`;
  const deployModel = `${savePath}_deploy_model.onnx`;
  const qdqModel = options.qdq ? `${savePath}_qdq_model.onnx` : undefined;
  const recordFile = quantization.recordFile ?? `${savePath}_record.txt`;
  const recordInSet = path.dirname(path.resolve(recordFile)) === dir;
  const record = new TextEncoder().encode(formatRecord(params));
  publishFileSet(dir, prefix, (stage) => {
    const staged = (file: string) => path.join(stage, path.basename(file));
    amctFakeQuantModel(quantization.float, params).save(staged(fakeQuantModel));
    amctDeployModel(quantization.float, params).save(staged(deployModel));
    if (qdqModel) amctQdqModel(quantization.float, params).save(staged(qdqModel));
    if (recordInSet) fs.writeFileSync(staged(recordFile), record);
  });
  if (!recordInSet) {
    fs.mkdirSync(path.dirname(path.resolve(recordFile)), { recursive: true });
    writeFilesAtomically([{ path: recordFile, write: (fd) => writeAll(fd, record) }]);
  }
  return { fakeQuantModel, deployModel, recordFile, ...(qdqModel ? { qdqModel } : {}) };
}
