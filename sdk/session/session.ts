/**
 * The quantization session: a fluent builder over SessionConfig, e.g.
 *   await session(model, { calibData }).w8a8('histogram').disable('p2o.Conv.0').save('out/')
 * and `runSession(model, config)` for the config-object / JSON form. Both validate through
 * normalizeSessionConfig and run the same processors.
 */
import * as fs from 'fs';
import * as arrow from 'apache-arrow';
import * as path from 'path';
import { QuantbookError } from '../errors';
import { checkOutputFolder, publishFileSet } from '../util/file-set';
import { CalibrationProgress, CalibrationResult, dataHashOf } from '../calibration/calibrator';
import { writeTable } from '../stats/calibration-stats';
import { CalibrationSource } from '../calibration/data';
import { isImageFolderSource } from '../calibration/images';
import { Model, loadModel } from '../onnx/model';
import { Device, requireDevice } from '../runtime/device';
import { Feeds } from '../runtime/runner';
import { DataType } from '../onnx/dtype';
import { ActMethod, OpSet, prepareFloat, quantizeW8A8 } from '../quantize/w8a8';
import { SpeedFallbackReport } from '../quantize/speed-fallback';
import { quantizeW8A8Dynamic } from '../quantize/w8a8-dynamic';
import { AttentionSite, applyFa3, findAttention } from '../quantize/fa3';
import { quantizeW8A8Timestep, timestepStatsTable } from '../quantize/w8a8-timestep';
import { spillFor } from '../quantize/spill-for';
import { toFakeQuant } from '../quantize/fake-quant';
import { LayerRecord } from '../quantize/qdq';
import { LayerSelection, selectLayers } from '../quantize/layers';
import { CompareOptions, LayerComparison, compareModels } from '../quantize/compare';
import { SmoothGroup, smoothModel } from '../algorithms/smooth';
import { Fa3Export, defaultExportNames, msModelSlimWeights, saveMsModelSlim } from '../export/msmodelslim';
import type { QParams } from '../observers/qparams';
import { virtualInputs } from './quant-config';
import { ReportInput, environment } from '../export/report';
import { warn } from '../warnings';
import { SAVE_TYPES, SaveProcessorConfig, SaveType, SessionConfig, loadSessionConfig, normalizeSessionConfig, saveConfig } from './config';

export interface SaveReport { files: string[] }

/** A file published with a saved set (written into the staging folder under `name`). */
export interface ExtraFile { name: string; write: (file: string) => void }

/** What some processors produce besides the layers: fa3's Q/K/V parameters, w8a8_timestep's dynamic side. */
export interface ResultExtras {
  /** fa3: the per-head parameters of each Q, K, V tensor (by tensor name), as inserted in the QDQ model */
  fa3QParams?: Map<string, QParams>;
  /** w8a8_timestep: the dynamic side's layers (t < timestep_sep); `layers` holds the static side */
  dynamicLayers?: LayerRecord[];
  /** Data-Free static w8a8: what was calibrated on instead of user data */
  dataFree?: string;
  /** static w8a8 with speed_fallback: the measured layer times and which model was kept */
  speedFallback?: SpeedFallbackReport;
}

export class QuantizationResult {
  constructor(
    readonly kind: 'w8a8' | 'w8a8_dynamic' | 'w8a8_timestep',
    readonly baseName: string,
    readonly float: Model,
    readonly qdq: Model,
    /** the fake-quant model, or how to make it when first asked (a model held by reference: see quantize/spill-for.ts) */
    private readonly fakeQuantSource: Model | (() => Model),
    readonly layers: LayerRecord[],
    readonly selection: LayerSelection,
    readonly config: SessionConfig,
    readonly calibration?: CalibrationResult,
    /** what an anti-outlier processor (m3/m6) did, per smoothed activation */
    readonly smoothing: SmoothGroup[] = [],
    /** attention sites whose Q, K, V were quantized per head (fa3) */
    readonly attention: AttentionSite[] = [],
    /** w8a8_timestep: statistics per timestep (timestep, side, tensor, min, max, ..., scale) */
    readonly timesteps?: arrow.Table,
    readonly extras: ResultExtras = {},
  ) {}

  /** the same quantization with every Q/DQ computed in float (any runtime runs it) */
  get fakeQuant(): Model {
    return (this.madeFakeQuant ??= typeof this.fakeQuantSource === 'function' ? this.fakeQuantSource() : this.fakeQuantSource);
  }

  private madeFakeQuant?: Model;

  /** what the session's save processor wrote, when it had one */
  saved?: SaveReport;

  /**
   * Writes the chosen files into `dir` (created if missing) as one set (util/file-set.ts): all
   * appear at once with a manifest, files an earlier save of this set wrote and this one does not
   * are removed, other files in the folder stay; a second process saving into the same folder
   * fails with LOCKED. `options`: a list of save types (default: all of them) or the rest of a
   * SaveProcessorConfig.
   */
  save(dir: string, options: SaveType[] | Partial<Omit<SaveProcessorConfig, 'outputPath'>> = {}, extra: ExtraFile[] = []): SaveReport {
    const cfg = saveConfig({ saveType: [...SAVE_TYPES], ...(Array.isArray(options) ? { saveType: options } : options), outputPath: dir });
    const saveType = cfg.saveType;
    checkOutputNames(this.baseName, this.kind, cfg, extra.map((e) => e.name));
    const files = publishFileSet(dir, `${this.baseName}_${this.kind}`, (stage) => {
      const written: string[] = [];
      const file = (suffix: string) => path.join(stage, `${this.baseName}_${this.kind}${suffix}`);
      if (saveType.includes('safe_tensor')) {
        // w8a8_timestep stores both sides (one int8 weight, static W8A8 tensors plus the dynamic side's weight scales); fa3 its per-head Q/K/V
        const weights = msModelSlimWeights(this.kind === 'w8a8_dynamic' ? 'W8A8_DYNAMIC' : 'W8A8', this.float, this.layers, {
          deqScale: cfg.deqScale, dynamicLayers: this.extras.dynamicLayers, attention: this.fa3Export(),
        });
        written.push(...saveMsModelSlim(stage, weights, {
          safetensorsName: cfg.safetensorsName,
          jsonName: cfg.jsonName,
          partBytes: cfg.partFileSize === undefined ? undefined : cfg.partFileSize * 1e9,
          metadata: { producer: 'quantbook', source_model: this.baseName, ...(this.config.processorCfgMap.w8a8_timestep ? { timestep_sep: String(this.config.processorCfgMap.w8a8_timestep.timestepSep) } : {}) },
        }));
      }
      if (saveType.includes('onnx')) written.push(this.qdq.save(file('.onnx')).modelPath);
      if (saveType.includes('fake_quant_onnx')) written.push(this.fakeQuant.save(file('_fake_quant.onnx')).modelPath);
      if (saveType.includes('stats') && this.calibration) this.calibration.save(file('_calibration.arrow'));
      if (saveType.includes('stats') && this.timesteps) writeTable(file('_timesteps.arrow'), this.timesteps);
      const summary = {
        processor: this.kind,
        actMethod: (this.config.processorCfgMap.w8a8 ?? this.config.processorCfgMap.w8a8_timestep ?? this.config.processorCfgMap.w8a8_dynamic)?.cfg.actMethod,
        opSet: this.config.processorCfgMap.w8a8?.cfg.opSet,
        ...(this.extras.speedFallback ? { speedFallback: this.extras.speedFallback } : {}),
        quantized: this.layerSummary(),
        skipped: this.selection.skipped,
        calibration: this.calibration?.metadata,
      };
      fs.writeFileSync(file('_summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
      // files that belong with this set (a report on it): published with it, never beside another run's
      for (const e of extra) e.write(path.join(stage, e.name));
      return written;
    });
    return { files };
  }

  /** fp32 vs quantized, per quantized layer output and per model output, on the session's device, on any CalibrationSource (a folder, feeds, images). */
  compare(batches: CalibrationSource, options?: CompareOptions): Promise<LayerComparison[]> {
    let device: Device;
    try {
      device = requireDevice(this.config.device);
    } catch (e) {
      return Promise.reject(e);
    }
    return compareModels(this.float, this.qdq, this.layerOutputs(), batches, { ...options, executionProviders: options?.executionProviders ?? device.executionProviders });
  }

  /** fa3's per-site Q/K/V parameters for the msModelSlim export (named after each site's scores MatMul, `attention.<i>` if it has no name). */
  private fa3Export(): Fa3Export[] | undefined {
    const q = this.extras.fa3QParams;
    if (!q || !this.attention.length) return undefined;
    return this.attention.map((s, i) => ({ prefix: s.scores || `attention.${i}`, q: q.get(s.q)!, k: q.get(s.k)!, v: q.get(s.v)! }));
  }

  /**
   * What a report shows of this result: config, environment, calibration data hash and
   * statistics, layers and scales; `extra` adds the title, comparison, accuracy, files (and may
   * override the rest).
   */
  reportInput(extra: Partial<ReportInput> & Pick<ReportInput, 'title' | 'model'>): ReportInput {
    const meta = this.calibration?.metadata;
    const statistics = (this.calibration?.tensorRows() ?? []).filter((r) => r.channel === -1);
    return {
      config: { processorCfgMap: this.config.processorCfgMap, device: this.config.device },
      environment: environment(meta ? { 'tfjs backend': meta.backend ?? '' } : {}),
      ...(meta ? { data: { description: this.extras.dataFree ?? describeSource(this.config.calibData), hash: dataHashOf(meta), batches: Number(meta.batches) } } : {}),
      layers: this.layerSummary(),
      statistics,
      weightScales: this.weightScales(),
      skipped: this.selection.skipped,
      ...extra,
    };
  }

  /** Every per-channel weight scale of the quantized layers, layer after layer. */
  weightScales(): number[] {
    return this.layers.flatMap((l) => (l.weight ? Array.from(l.weight.scale) : []));
  }

  private layerSummary(): ReportInput['layers'] {
    return this.layers.map((l) => ({ name: l.name, opType: l.opType, inputScale: l.input?.scale, inputZeroPoint: l.input?.zeroPoint }));
  }

  /** Each quantized layer's output tensor (model outputs left out: compare reports those separately). */
  layerOutputs(): Array<{ layer: string; opType: string; tensor: string }> {
    const g = this.float.graph;
    return this.layers
      .map((l) => ({ layer: l.name, opType: l.opType, tensor: g.node(l.name)?.output[0] ?? '' }))
      .filter((l) => l.tensor && !g.outputNames.includes(l.tensor));
  }
}

function describeSource(source: CalibrationSource | undefined): string {
  if (typeof source === 'string') return source;
  if (source && isImageFolderSource(source)) return `images in ${source.imageFolder}`;
  return 'calibration batches passed in memory';
}

function modelFrom(source: Model | string | Uint8Array): { model: Model; baseName: string } {
  const model = source instanceof Model ? source : loadModel(source);
  const baseName = typeof source === 'string' ? path.basename(source).replace(/\.onnx$/i, '') : 'model';
  return { model, baseName };
}

/**
 * Every file name a save of `kind` may write into its folder; two outputs given one name (say
 * json_name equal to the summary's) would overwrite each other, so that is refused up front.
 */
export function checkOutputNames(baseName: string, kind: QuantizationResult['kind'], cfg: Partial<Pick<SaveProcessorConfig, 'safetensorsName' | 'jsonName'>>, extra: string[] = []): void {
  const own = (suffix: string) => `${baseName}_${kind}${suffix}`;
  const defaults = defaultExportNames(kind === 'w8a8_dynamic' ? 'W8A8_DYNAMIC' : 'W8A8');
  const safetensors = cfg.safetensorsName ?? defaults.safetensors;
  const stem = safetensors.replace(/\.safetensors$/i, '');
  const names: Array<[string, string]> = [
    ['safetensors_name', safetensors], ['json_name', cfg.jsonName ?? defaults.json], ['the shard index', `${stem}.safetensors.index.json`],
    ['the QDQ model', own('.onnx')], ['the fake-quant model', own('_fake_quant.onnx')], ['the statistics', own('_calibration.arrow')],
    ['the timestep statistics', own('_timesteps.arrow')], ['the summary', own('_summary.json')], ['the manifest', `${own('')}.manifest.json`],
    ...extra.map((name): [string, string] => [`"${name}"`, name]),
  ];
  const seen = new Map<string, string>();
  for (const [what, name] of names) {
    const other = seen.get(name.toLowerCase());
    if (other) throw new QuantbookError('INVALID_ARGUMENT', `save: ${what} and ${other} would both be written as "${name}"; give them different names`);
    seen.set(name.toLowerCase(), what);
  }
  if (/-\d{5}-of-\d{5}\.safetensors$/i.test(cfg.jsonName ?? '')) throw new QuantbookError('INVALID_ARGUMENT', `save: json_name "${cfg.jsonName}" has the form of a safetensors shard name`);
}

/** How a session run saves: `deferSave` leaves the saving to the caller (who adds files named in `reserve` to the set). */
export interface RunOptions { onProgress?: (p: CalibrationProgress) => void; deferSave?: boolean; reserve?: string[] }

async function execute(source: Model | string | Uint8Array, config: SessionConfig, onProgress?: (p: CalibrationProgress) => void, run: RunOptions = {}): Promise<QuantizationResult> {
  const device = requireDevice(config.device);
  const { model: original, baseName } = modelFrom(source);
  const map = config.processorCfgMap;
  // output problems are found before any calibration runs
  if (map.save) {
    checkOutputNames(baseName, map.w8a8_timestep ? 'w8a8_timestep' : map.w8a8 ? 'w8a8' : 'w8a8_dynamic', map.save, run.reserve);
    checkOutputFolder(map.save.outputPath);
  }
  const antiOutlier = map.m3 || map.m4 || map.m6;
  warnUnusedDynamicActMethod(map);
  // smoothing rewrites, and fa3 reads, the prepared float graph (opset 13, BatchNorm folded): prepare it once
  const model = antiOutlier || map.fa3 ? prepareFloat(original) : original;
  // anti-outlier first: the quantizer then sees the smoothed model
  const executionProviders = device.executionProviders;
  const smoothing: SmoothGroup[] = antiOutlier
    ? await smoothModel(model, config.calibData!, { ...(map.m6 ? { method: 'm6', alpha: map.m6.cfg.alpha, beta: map.m6.cfg.beta } : { method: map.m4 ? 'm4' : 'm3' }), executionProviders })
    : [];
  let result: QuantizationResult;
  if (map.w8a8_timestep) {
    const p = map.w8a8_timestep;
    const r = await quantizeW8A8Timestep(model, config.calibData!, { timestepSep: p.timestepSep, actMethod: p.cfg.actMethod === 'mix' ? 'mixed' : p.cfg.actMethod, disableNames: p.disableNames, executionProviders });
    result = new QuantizationResult('w8a8_timestep', baseName, r.float, r.qdq, r.fakeQuant, r.static.layers, r.static.selection, config, r.static.calibration, smoothing, [], timestepStatsTable(r.perTimestep, p.timestepSep), { dynamicLayers: r.dynamic.layers });
  } else if (map.w8a8) {
    // Data-Free (no calib_data, msModelSlim's default): seeded virtual inputs shaped like the model's
    const dataFree = config.calibData === undefined ? dataFreeInputs(model) : undefined;
    const r = await quantizeW8A8(model, dataFree?.batches ?? config.calibData!, { actMethod: map.w8a8.cfg.actMethod, opSet: map.w8a8.cfg.opSet, disableNames: map.w8a8.disableNames, onProgress, executionProviders, speedFallback: map.w8a8.cfg.speedFallback });
    result = new QuantizationResult('w8a8', baseName, r.float, r.qdq, () => r.fakeQuant, r.layers, r.selection, config, r.calibration, smoothing, [], undefined, { dataFree: dataFree?.description, speedFallback: r.speedFallback });
  } else {
    // fa3: the attention MatMuls read static per-head Q/K/V instead of per-token dynamic inputs
    const sites = map.fa3 ? findAttention(model) : [];
    const attention = sites.flatMap((s) => [s.scores, s.context]);
    const r = quantizeW8A8Dynamic(model, { disableNames: [...map.w8a8_dynamic!.disableNames, ...attention] });
    const fa3 = map.fa3 ? await applyFa3(r.float, r.qdq, config.calibData!, sites, map.w8a8_dynamic!.cfg.actMethod, executionProviders) : undefined;
    // made when asked; a model held by reference spills its dequantized weights
    const fakeQuant = fa3 ? () => toFakeQuant(r.qdq, spillFor(r.qdq)) : () => r.fakeQuant;
    const selection = { ...r.selection, skipped: r.selection.skipped.map((s) => (attention.includes(s.name) && !map.w8a8_dynamic!.disableNames.includes(s.name) ? { ...s, reason: 'fa3: reads per-head int8 Q/K/V' } : s)) };
    result = new QuantizationResult('w8a8_dynamic', baseName, r.float, r.qdq, fakeQuant, r.layers, selection, config, fa3?.calibration, smoothing, fa3?.sites ?? [], undefined, { fa3QParams: fa3?.qparams });
  }
  if (map.save && !run.deferSave) result.saved = result.save(map.save.outputPath, map.save);
  return result;
}

/** Virtual batches of a Data-Free static w8a8 run. */
export const DATA_FREE_BATCHES = 4;
/** the batch size of virtual inputs whose first (batch) dimension is symbolic */
export const DATA_FREE_BATCH_SIZE = 8;

/**
 * Data-Free calibration batches for static w8a8 (SessionConfig without calib_data, msModelSlim's
 * Data-Free scenario): the seeded virtual inputs of QuantConfig's Data-Free mode (quant-config.ts:
 * smooth random fields for 4-D image inputs, standard normal values otherwise), 4 batches. A
 * symbolic first (batch) dimension becomes 8; any other symbolic dimension, or an input that is
 * not float32, cannot be made up, and is refused naming calib_data.
 */
export function dataFreeInputs(model: Model): { batches: Feeds[]; description: string } {
  const g = model.graph;
  const shapes = g.inputNames.map((name) => {
    const type = g.valueType(name);
    if (type?.elemType !== DataType.FLOAT) throw new QuantbookError('INVALID_ARGUMENT', `calib_data: none given (Data-Free), but input "${name}" is ${type ? DataType[type.elemType] : 'of unknown type'}, and Data-Free virtual inputs are float32 only; pass calib_data`);
    const dims = type.shape ?? [];
    return dims.map((d, i) => {
      if (typeof d === 'number' && d > 0) return d;
      if (i === 0) return DATA_FREE_BATCH_SIZE;
      throw new QuantbookError('INVALID_ARGUMENT', `calib_data: none given (Data-Free), but input "${name}" has the dynamic dimension ${i} ([${dims.map((x) => x ?? '?').join(', ')}]) that virtual inputs cannot guess; pass calib_data`);
    });
  });
  const batches = virtualInputs(model, shapes, DATA_FREE_BATCHES);
  return { batches, description: `Data-Free: ${DATA_FREE_BATCHES} batches of seeded virtual inputs (${g.inputNames.map((n, i) => `${n} [${shapes[i].join(', ')}]`).join(', ')})` };
}

/**
 * w8a8_dynamic calibrates activations only for fa3's static Q/K/V; without fa3 its act_method
 * picks nothing (scales come at run time; anti-outlier scales use max|X_j|), so say so.
 */
function warnUnusedDynamicActMethod(map: SessionConfig['processorCfgMap']): void {
  const method = map.w8a8_dynamic?.cfg.actMethod;
  if (!method || method === 'minmax' || map.fa3) return;
  warn('QUANTBOOK_ACT_METHOD_UNUSED', `w8a8_dynamic.cfg.act_method '${method}' has no effect without fa3: W8A8 dynamic computes activation scales at run time, and anti-outlier scales come from per-channel max|X|; act_method only sets how fa3 calibrates Q/K/V (add fa3, or leave act_method 'minmax')`);
}

/** Runs a session from a config object (camelCase or snake_case) or a JSON config file. */
export function runSession(model: Model | string | Uint8Array, config: unknown | string, options: RunOptions = {}): Promise<QuantizationResult> {
  const normalized = typeof config === 'string' ? loadSessionConfig(config) : normalizeSessionConfig(config);
  return execute(model, normalized, options.onProgress, options);
}

export interface SessionPlan {
  processor: 'w8a8' | 'w8a8_dynamic' | 'w8a8_timestep';
  settings: Record<string, unknown>;
  layers: Array<{ name: string; opType: string; weight: string; activation: string }>;
  skipped: LayerSelection['skipped'];
}

export interface SessionOptions { calibData?: CalibrationSource; device?: 'cpu' | 'npu' | 'cuda' }

export class QuantSession {
  private processors: Record<string, { cfg: Record<string, unknown>; disable_names?: string[]; timestep_sep?: number }> = {};
  private disabled: string[] = [];
  private progress?: (p: CalibrationProgress) => void;
  private result?: Promise<QuantizationResult>;

  constructor(private readonly source: Model | string | Uint8Array, private readonly options: SessionOptions = {}) {}

  /**
   * Static W8A8: act_method 'minmax' (default), 'histogram' or 'mixed'; opSet 'amct' (default), 'extended' or 'msmodelslim';
   * speedFallback: keep float the layers whose int8 kernels are slower on this CPU (measured).
   * Without calibData (Data-Free) it calibrates on seeded virtual inputs (dataFreeInputs).
   */
  w8a8(method: ActMethod | { actMethod?: ActMethod; opSet?: OpSet; disableNames?: string[]; speedFallback?: boolean } = 'minmax'): this {
    const o = typeof method === 'string' ? { actMethod: method } : method;
    return this.add('w8a8', { act_method: o.actMethod ?? 'minmax', ...(o.opSet ? { op_set: o.opSet } : {}), ...(o.speedFallback !== undefined ? { speed_fallback: o.speedFallback } : {}) }, o.disableNames);
  }

  /** Dynamic W8A8: activations quantized per token at run time; no calibration data. */
  w8a8Dynamic(o: { actMethod?: 'minmax' | 'histogram' | 'mix'; disableNames?: string[] } = {}): this {
    return this.add('w8a8_dynamic', { act_method: o.actMethod ?? 'minmax' }, o.disableNames);
  }

  /**
   * m6 (Flex Smooth Quant) before quantization: s_j = max|X_j|^alpha / max|W_j|^beta per input
   * channel, folded into the preceding LayerNorm where possible. Leave either out to search both.
   */
  withM6(alpha?: number, beta?: number): this {
    return this.antiOutlier('m6', { ...(alpha !== undefined ? { alpha } : {}), ...(beta !== undefined ? { beta } : {}) });
  }

  /** m3 (AWQ-style) before quantization: s_j = mean|X_j|^alpha, alpha searched per activation. */
  withM3(): this {
    return this.antiOutlier('m3', {});
  }

  /** m4 before quantization: SmoothQuant scales (alpha 0.5) refined channel by channel while the int8 error drops. */
  withM4(): this {
    return this.antiOutlier('m4', {});
  }

  /** One anti-outlier processor at a time: choosing one replaces the other. */
  private antiOutlier(name: 'm3' | 'm4' | 'm6', cfg: Record<string, unknown>): this {
    for (const other of ['m3', 'm4', 'm6']) delete this.processors[other];
    this.processors[name] = { cfg };
    this.result = undefined;
    return this;
  }

  /**
   * w8a8_timestep (diffusion models): statistics per timestep; static W8A8 for t ≥ timestepSep,
   * dynamic below, switched inside the model by an If on the timestep input.
   */
  w8a8Timestep(timestepSep: number, o: { actMethod?: 'minmax' | 'histogram' | 'mix'; disableNames?: string[] } = {}): this {
    this.processors.w8a8_timestep = { cfg: { act_method: o.actMethod ?? 'minmax' }, disable_names: o.disableNames ?? [], timestep_sep: timestepSep };
    this.result = undefined;
    return this;
  }

  /** fa3: static per-head int8 Q, K, V in attention (with w8a8Dynamic(), as msModelSlim requires). */
  fa3(): this {
    this.processors.fa3 = { cfg: {} };
    this.result = undefined;
    return this;
  }

  /** Keeps these layers (names or glob patterns) in float. */
  disable(...names: string[]): this {
    this.disabled.push(...names);
    this.result = undefined;
    return this;
  }

  onProgress(fn: (p: CalibrationProgress) => void): this {
    this.progress = fn;
    return this;
  }

  private add(name: string, cfg: Record<string, unknown>, disableNames: string[] = []): this {
    this.processors[name] = { cfg, disable_names: disableNames };
    this.result = undefined;
    return this;
  }

  /**
   * What `run()` will do, without calibrating: the processor and its settings, the layers it
   * will quantize (on the prepared float model) and those it keeps in float, with the reason.
   */
  plan(): SessionPlan {
    const config = this.config();
    const map = config.processorCfgMap;
    const kind = map.w8a8 ? 'w8a8' : map.w8a8_timestep ? 'w8a8_timestep' : 'w8a8_dynamic';
    const entry = map.w8a8 ?? map.w8a8_timestep ?? map.w8a8_dynamic!;
    const selection = selectLayers(prepareFloat(modelFrom(this.source).model), entry.disableNames);
    const activation = kind === 'w8a8'
      ? `uint8 asymmetric per tensor, static (${map.w8a8!.cfg.actMethod})`
      : kind === 'w8a8_timestep'
        ? `static (${map.w8a8_timestep!.cfg.actMethod}) for t ≥ ${map.w8a8_timestep!.timestepSep}, dynamic per token below`
        : 'int8 symmetric per token, dynamic (computed at run time)';
    const antiOutlier = map.m6 ? { antiOutlier: `m6 (alpha ${map.m6.cfg.alpha ?? 'searched'}, beta ${map.m6.cfg.beta ?? 'searched'})` } : map.m3 ? { antiOutlier: 'm3 (alpha searched)' } : map.m4 ? { antiOutlier: 'm4 (iterative per-channel)' } : {};
    return {
      processor: kind,
      settings: { ...antiOutlier, ...entry.cfg },
      layers: selection.layers.map((l) => ({ name: l.name, opType: l.opType, weight: l.weight ? 'int8 symmetric per output channel' : '—', activation })),
      skipped: selection.skipped,
    };
  }

  /** The SessionConfig this builder stands for (validated). */
  config(): SessionConfig {
    const map: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(this.processors)) {
      if (k === 'm3' || k === 'm4' || k === 'fa3') map[k] = {};
      else if (k === 'm6') map[k] = { cfg: v.cfg };
      else map[k] = { ...v, disable_names: [...(v.disable_names ?? []), ...this.disabled] };
    }
    return normalizeSessionConfig({ processor_cfg_map: map, calib_data: this.options.calibData, device: this.options.device ?? 'cpu' });
  }

  /** Runs the processors (once; later calls reuse the result until the builder changes). */
  run(): Promise<QuantizationResult> {
    if (!Object.keys(this.processors).some((p) => p === 'w8a8' || p === 'w8a8_dynamic' || p === 'w8a8_timestep')) {
      return Promise.reject(new QuantbookError('INVALID_ARGUMENT', 'session: choose a quantization processor first, e.g. .w8a8(), .w8a8Dynamic() or .w8a8Timestep(sep)'));
    }
    return (this.result ??= (async () => execute(this.source, this.config(), this.progress))());
  }

  async save(dir: string, options?: SaveType[] | Partial<Omit<SaveProcessorConfig, 'outputPath'>>): Promise<SaveReport> {
    return (await this.run()).save(dir, options);
  }
}

/** Starts a quantization session on a model (path, bytes or Model). */
export function session(model: Model | string | Uint8Array, options: SessionOptions = {}): QuantSession {
  return new QuantSession(model, options);
}
