/**
 * AMCT's post-training quantization config: the JSON file create_quant_config writes (version,
 * batch_num, activation_offset, do_fusion, skip_fusion_layers, then one entry per quantizable
 * layer) and the simplified config (`quant.cfg`, protobuf text format or JSON of the same shape)
 * it can be generated from, with overrides by layer type and by layer name
 * (priority: layer name > layer type > common_config).
 * The objects keep AMCT's snake_case field names: they are the file format.
 */
import * as fs from 'fs';
import { QuantbookError, checkKeys, closeNames, invalidArgument, requireObject } from '../errors';
import { Model, loadModel } from '../onnx/model';
import { attributeValue } from '../onnx/graph';
import { QuantLayer, selectLayers } from '../quantize/layers';
import { writeAll, writeFilesAtomically } from '../util/atomic-write';
import { readJsonFile } from '../util/json-file';
import { TextMessage, TextValue, parseTextFormat } from '../util/prototxt';

export const ACT_ALGOS = ['ifmr', 'hfmg'] as const;
export const WTS_ALGOS = ['arq_quantize', 'ada_quantize'] as const;
export const HFMG_BINS = [1024, 2048, 4096, 8192] as const;

export interface ActivationQuantParams {
  num_bits: number;
  act_algo: (typeof ACT_ALGOS)[number];
  asymmetric: boolean;
  /** ifmr */
  max_percentile?: number;
  min_percentile?: number;
  search_range?: [number, number];
  search_step?: number;
  /** hfmg */
  num_of_bins?: number;
}

export interface WeightQuantParams {
  num_bits: number;
  wts_algo: (typeof WTS_ALGOS)[number];
  channel_wise: boolean;
  /** ada_quantize */
  num_iteration?: number;
  reg_param?: number;
  beta_range?: [number, number];
  warm_start?: number;
}

export interface LayerQuantConfig {
  quant_enable: boolean;
  dmq_balancer_param?: number;
  activation_quant_params: ActivationQuantParams;
  /** absent for layers without weights (pooling) */
  weight_quant_params?: WeightQuantParams;
}

export interface AmctQuantConfig {
  version: number;
  batch_num: number;
  activation_offset: boolean;
  do_fusion: boolean;
  skip_fusion_layers: string[];
  /** layer name → its settings (every other top-level key of the file) */
  layers: Record<string, LayerQuantConfig>;
}

const TOP_KEYS = ['version', 'batch_num', 'activation_offset', 'do_fusion', 'skip_fusion_layers'];
const IFMR_DEFAULTS = { max_percentile: 0.999999, min_percentile: 0.999999, search_range: [0.7, 1.3] as [number, number], search_step: 0.01 };
const ADA_DEFAULTS = { num_iteration: 10000, reg_param: 0.01, beta_range: [20, 2] as [number, number], warm_start: 0.2 };

/** Layers AMCT quantizes: weighted Conv/ConvTranspose/Gemm/MatMul and average pooling. */
export function amctLayers(model: Model): QuantLayer[] {
  return selectLayers(model).layers.filter((l) => l.weight || l.opType === 'AveragePool' || l.opType === 'GlobalAveragePool');
}

/**
 * AMCT's per-layer constraints that quantbook enforces before any work (seed: "torch.nn.Conv3d:
 * dilation_d为1，dilation_h/dilation_w >= 1"): a Conv with a 5-D weight (Conv3d) must have
 * dilations[0] (depth) = 1. Only `layers` (the ones to be quantized) are checked.
 */
export function checkAmctLayerConstraints(model: Model, layers: QuantLayer[], where: string): void {
  for (const l of layers) {
    if (l.opType !== 'Conv' || !l.weight) continue;
    const rank = model.graph.constantValue(l.weight)?.dims.length;
    if (rank !== 5) continue;
    const d = (attributeValue(l.node, 'dilations') as number[] | undefined) ?? [1, 1, 1];
    if (Number(d[0]) !== 1) {
      throw new QuantbookError('UNSUPPORTED', `${where}: layer "${l.name}" is a Conv3d with dilations [${d.join(', ')}]; AMCT quantizes Conv3d only with dilation_d = 1 (dilation_h, dilation_w ≥ 1): leave it out (skip_layers, or quant_enable false) or use dilation_d 1`);
    }
  }
}

/** Layer types as AMCT's PyTorch names or ONNX op types. */
const LAYER_TYPES: Record<string, string[]> = {
  Conv: ['Conv'], Conv2d: ['Conv'], Conv3d: ['Conv'],
  ConvTranspose: ['ConvTranspose'], ConvTranspose2d: ['ConvTranspose'],
  Gemm: ['Gemm'], MatMul: ['MatMul'], Linear: ['Gemm', 'MatMul'],
  AveragePool: ['AveragePool'], AvgPool2d: ['AveragePool'], GlobalAveragePool: ['GlobalAveragePool'],
};

function opTypesOf(layerType: string, where: string): string[] {
  const ops = LAYER_TYPES[layerType];
  if (!ops) throw invalidArgument(where, layerType, `a layer type among ${Object.keys(LAYER_TYPES).join(', ')}`);
  return ops;
}

function requireLayerNames(names: string[], layers: QuantLayer[], where: string): void {
  const known = layers.map((l) => l.name);
  for (const n of names) {
    if (!known.includes(n)) {
      const near = closeNames(n, known);
      throw new QuantbookError('INVALID_ARGUMENT', `${where}: "${n}" is not a quantizable layer of the model${near.length ? `; did you mean ${near.map((x) => `"${x}"`).join(', ')}?` : ''} (${known.length} quantizable layers)`);
    }
  }
}

function defaultLayerConfig(layer: QuantLayer, activationOffset: boolean): LayerQuantConfig {
  return {
    quant_enable: true,
    activation_quant_params: { num_bits: 8, ...IFMR_DEFAULTS, act_algo: 'ifmr', asymmetric: activationOffset },
    ...(layer.weight ? { weight_quant_params: { num_bits: 8, wts_algo: 'arq_quantize', channel_wise: layer.opType !== 'Gemm' && layer.opType !== 'MatMul' } } : {}),
  } as LayerQuantConfig;
}

// ---------- validation of one layer's settings ----------

function num(v: unknown, where: string, ok: (x: number) => boolean, allowed: string): number {
  if (typeof v !== 'number' || !ok(v)) throw invalidArgument(where, v, allowed);
  return v;
}

function bool(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw invalidArgument(where, v, 'true or false');
  return v;
}

function pair(v: unknown, where: string, ok: (a: number, b: number) => boolean, allowed: string): [number, number] {
  if (!Array.isArray(v) || v.length !== 2 || v.some((x) => typeof x !== 'number') || !ok(v[0], v[1])) throw invalidArgument(where, v, allowed);
  return [v[0], v[1]];
}

const eightBits = (v: unknown, where: string) => num(v ?? 8, where, (x) => x === 8, '8 (the bit width AMCT deploys)');

function activationParams(raw: unknown, where: string, asymmetricDefault: boolean): ActivationQuantParams {
  const p = requireObject(raw, where);
  const algo = p.act_algo ?? 'ifmr';
  if (!(ACT_ALGOS as readonly unknown[]).includes(algo)) throw invalidArgument(`${where}.act_algo`, algo, `one of ${ACT_ALGOS.map((a) => `"${a}"`).join(', ')}`);
  const common = { num_bits: eightBits(p.num_bits, `${where}.num_bits`), act_algo: algo as ActivationQuantParams['act_algo'], asymmetric: bool(p.asymmetric ?? asymmetricDefault, `${where}.asymmetric`) };
  if (algo === 'hfmg') {
    checkKeys(p, ['num_bits', 'act_algo', 'asymmetric', 'num_of_bins'], where);
    return { ...common, num_of_bins: num(p.num_of_bins ?? 4096, `${where}.num_of_bins`, (x) => (HFMG_BINS as readonly number[]).includes(x), `one of ${HFMG_BINS.join(', ')}`) };
  }
  checkKeys(p, ['num_bits', 'act_algo', 'asymmetric', 'max_percentile', 'min_percentile', 'search_range', 'search_step'], where);
  const pct = (k: 'max_percentile' | 'min_percentile') => num(p[k] ?? IFMR_DEFAULTS[k], `${where}.${k}`, (x) => x > 0.5 && x <= 1, 'a number in (0.5, 1]');
  return {
    ...common,
    max_percentile: pct('max_percentile'),
    min_percentile: pct('min_percentile'),
    search_range: pair(p.search_range ?? IFMR_DEFAULTS.search_range, `${where}.search_range`, (a, b) => a > 0 && a < b, '[start, end] with 0 < start < end'),
    search_step: num(p.search_step ?? IFMR_DEFAULTS.search_step, `${where}.search_step`, (x) => x > 0 && x < 1, 'a number in (0, 1)'),
  };
}

function weightParams(raw: unknown, where: string, channelWiseDefault: boolean): WeightQuantParams {
  const p = requireObject(raw, where);
  const algo = p.wts_algo ?? 'arq_quantize';
  if (!(WTS_ALGOS as readonly unknown[]).includes(algo)) throw invalidArgument(`${where}.wts_algo`, algo, `one of ${WTS_ALGOS.map((a) => `"${a}"`).join(', ')}`);
  const common = { num_bits: eightBits(p.num_bits, `${where}.num_bits`), wts_algo: algo as WeightQuantParams['wts_algo'], channel_wise: bool(p.channel_wise ?? channelWiseDefault, `${where}.channel_wise`) };
  if (algo === 'arq_quantize') {
    checkKeys(p, ['num_bits', 'wts_algo', 'channel_wise'], where);
    return common;
  }
  checkKeys(p, ['num_bits', 'wts_algo', 'channel_wise', 'num_iteration', 'reg_param', 'beta_range', 'warm_start'], where);
  return {
    ...common,
    num_iteration: num(p.num_iteration ?? ADA_DEFAULTS.num_iteration, `${where}.num_iteration`, (x) => Number.isInteger(x) && x > 0, 'a positive integer'),
    reg_param: num(p.reg_param ?? ADA_DEFAULTS.reg_param, `${where}.reg_param`, (x) => x > 0, 'a positive number'),
    beta_range: pair(p.beta_range ?? ADA_DEFAULTS.beta_range, `${where}.beta_range`, (a, b) => a > b && b > 0, '[start, end] with start > end > 0'),
    warm_start: num(p.warm_start ?? ADA_DEFAULTS.warm_start, `${where}.warm_start`, (x) => x >= 0 && x < 1, 'a number in [0, 1)'),
  };
}

function layerConfig(raw: unknown, layer: QuantLayer, where: string, activationOffset: boolean): LayerQuantConfig {
  const p = requireObject(raw, where);
  checkKeys(p, ['quant_enable', 'dmq_balancer_param', 'activation_quant_params', 'weight_quant_params'], where);
  const out: LayerQuantConfig = {
    quant_enable: bool(p.quant_enable ?? true, `${where}.quant_enable`),
    activation_quant_params: activationParams(p.activation_quant_params ?? {}, `${where}.activation_quant_params`, activationOffset),
  };
  if (p.dmq_balancer_param !== undefined) out.dmq_balancer_param = num(p.dmq_balancer_param, `${where}.dmq_balancer_param`, (x) => x >= 0.2 && x <= 0.8, 'a number in [0.2, 0.8]');
  if (layer.weight) out.weight_quant_params = weightParams(p.weight_quant_params ?? {}, `${where}.weight_quant_params`, layer.opType !== 'Gemm' && layer.opType !== 'MatMul');
  else if (p.weight_quant_params !== undefined) throw new QuantbookError('INVALID_ARGUMENT', `${where}.weight_quant_params: layer "${layer.name}" (${layer.opType}) has no weight`);
  return out;
}

/** Validates a full config (as read from JSON) against a model's quantizable layers. */
export function validateQuantConfig(raw: unknown, model: Model, where = 'quant config'): AmctQuantConfig {
  const top = requireObject(raw, where);
  const layers = amctLayers(model);
  const byName = new Map(layers.map((l) => [l.name, l]));
  const layerKeys = Object.keys(top).filter((k) => !TOP_KEYS.includes(k));
  requireLayerNames(layerKeys, layers, where);
  const activationOffset = bool(top.activation_offset ?? true, `${where}.activation_offset`);
  const skipFusion = top.skip_fusion_layers ?? [];
  if (!Array.isArray(skipFusion) || skipFusion.some((s) => typeof s !== 'string')) throw invalidArgument(`${where}.skip_fusion_layers`, skipFusion, 'a list of layer names');
  return {
    version: num(top.version ?? 1, `${where}.version`, (x) => x === 1, '1'),
    batch_num: num(top.batch_num ?? 1, `${where}.batch_num`, (x) => Number.isInteger(x) && x > 0, 'a positive integer'),
    activation_offset: activationOffset,
    do_fusion: bool(top.do_fusion ?? true, `${where}.do_fusion`),
    skip_fusion_layers: skipFusion as string[],
    layers: Object.fromEntries(layerKeys.map((k) => [k, layerConfig(top[k], byName.get(k)!, `${where}.${k}`, activationOffset)])),
  };
}

/** The JSON object of the file: top-level settings, then one key per layer. */
export function quantConfigJson(config: AmctQuantConfig): Record<string, unknown> {
  const { layers, ...top } = config;
  return { ...top, ...layers };
}

export function readQuantConfig(file: string, model: Model): AmctQuantConfig {
  return validateQuantConfig(readJsonFile(file, 'quant config'), model, file);
}

export function writeQuantConfig(file: string, config: AmctQuantConfig): void {
  const text = new TextEncoder().encode(`${JSON.stringify(quantConfigJson(config), null, 4)}\n`);
  writeFilesAtomically([{ path: file, write: (fd) => writeAll(fd, text) }]);
}

// ---------- the simplified config ----------

const SIMPLE_KEYS = ['batch_num', 'activation_offset', 'skip_layers', 'skip_layer_types', 'do_fusion', 'skip_fusion_layers', 'common_config', 'override_layer_types', 'override_layer_configs'];
const CALIBRATION_KEYS = ['arq_quantize', 'ada_quantize', 'ifmr_quantize', 'hfmg_quantize', 'dmq_balancer'];

const list = (v: TextValue | undefined): TextValue[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** One calibration_config of the simplified form → partial layer settings (what it sets). */
function fromCalibrationConfig(raw: TextValue, where: string): Partial<Record<'act' | 'wts', Record<string, unknown>> & { dmq: number }> {
  const c = requireObject(raw, where) as TextMessage;
  checkKeys(c, CALIBRATION_KEYS, where);
  const out: Partial<Record<'act' | 'wts', Record<string, unknown>> & { dmq: number }> = {};
  if (c.arq_quantize && c.ada_quantize) throw new QuantbookError('INVALID_ARGUMENT', `${where}: set one of arq_quantize, ada_quantize`);
  if (c.ifmr_quantize && c.hfmg_quantize) throw new QuantbookError('INVALID_ARGUMENT', `${where}: set one of ifmr_quantize, hfmg_quantize`);
  if (c.arq_quantize) out.wts = { wts_algo: 'arq_quantize', ...requireObject(c.arq_quantize, `${where}.arq_quantize`) };
  if (c.ada_quantize) out.wts = { wts_algo: 'ada_quantize', ...requireObject(c.ada_quantize, `${where}.ada_quantize`) };
  if (c.ifmr_quantize) {
    const { search_range_start: a, search_range_end: b, ...rest } = requireObject(c.ifmr_quantize, `${where}.ifmr_quantize`);
    out.act = { act_algo: 'ifmr', ...rest, ...(a !== undefined || b !== undefined ? { search_range: [a ?? IFMR_DEFAULTS.search_range[0], b ?? IFMR_DEFAULTS.search_range[1]] } : {}) };
  }
  if (c.hfmg_quantize) out.act = { act_algo: 'hfmg', ...requireObject(c.hfmg_quantize, `${where}.hfmg_quantize`) };
  if (c.dmq_balancer) {
    const d = requireObject(c.dmq_balancer, `${where}.dmq_balancer`);
    checkKeys(d, ['migration_strength'], `${where}.dmq_balancer`);
    out.dmq = (d.migration_strength as number | undefined) ?? 0.5;
  }
  return out;
}

/** Reads a simplified config: a path (.cfg text format, or .json) or an object of the same shape. */
export function readSimpleConfig(source: string | Record<string, unknown>): TextMessage {
  if (typeof source !== 'string') return source as TextMessage;
  if (source.endsWith('.json')) return readJsonFile(source, 'simplified quant config') as TextMessage;
  if (!fs.existsSync(source)) throw new QuantbookError('FILE_NOT_FOUND', `simplified quant config not found: ${source}`);
  return parseTextFormat(fs.readFileSync(source, 'utf8'), source);
}

/** Expands a simplified config into the full per-layer config for `model`. */
export function expandSimpleConfig(simple: TextMessage, model: Model, where = 'config_definition'): AmctQuantConfig {
  checkKeys(simple, SIMPLE_KEYS, where);
  const layers = amctLayers(model);
  const skipLayers = list(simple.skip_layers).map(String);
  requireLayerNames(skipLayers, layers, `${where}.skip_layers`);
  const skipTypes = list(simple.skip_layer_types).flatMap((t) => opTypesOf(String(t), `${where}.skip_layer_types`));
  const activationOffset = bool(simple.activation_offset ?? true, `${where}.activation_offset`);
  const common = simple.common_config === undefined ? {} : fromCalibrationConfig(simple.common_config, `${where}.common_config`);
  const byType = list(simple.override_layer_types).map((o, i) => {
    const m = requireObject(o, `${where}.override_layer_types[${i}]`) as TextMessage;
    checkKeys(m, ['layer_type', 'calibration_config'], `${where}.override_layer_types[${i}]`);
    return { ops: opTypesOf(String(m.layer_type), `${where}.override_layer_types[${i}].layer_type`), cfg: fromCalibrationConfig(m.calibration_config ?? {}, `${where}.override_layer_types[${i}].calibration_config`) };
  });
  const byName = list(simple.override_layer_configs).map((o, i) => {
    const m = requireObject(o, `${where}.override_layer_configs[${i}]`) as TextMessage;
    checkKeys(m, ['layer_name', 'calibration_config'], `${where}.override_layer_configs[${i}]`);
    requireLayerNames([String(m.layer_name)], layers, `${where}.override_layer_configs[${i}].layer_name`);
    return { name: String(m.layer_name), cfg: fromCalibrationConfig(m.calibration_config ?? {}, `${where}.override_layer_configs[${i}].calibration_config`) };
  });
  const out: Record<string, LayerQuantConfig> = {};
  for (const layer of layers) {
    if (skipLayers.includes(layer.name) || skipTypes.includes(layer.opType)) continue;
    // later entries win: common, then the layer's type, then its name
    const parts = [common, ...byType.filter((t) => t.ops.includes(layer.opType)).map((t) => t.cfg), ...byName.filter((n) => n.name === layer.name).map((n) => n.cfg)];
    const act = parts.reduce<Record<string, unknown>>((a, p) => p.act ?? a, {});
    const wts = parts.reduce<Record<string, unknown>>((a, p) => p.wts ?? a, {});
    const dmq = parts.reduce<number | undefined>((a, p) => p.dmq ?? a, undefined);
    out[layer.name] = layerConfig({ activation_quant_params: act, ...(layer.weight ? { weight_quant_params: wts } : {}), ...(dmq !== undefined ? { dmq_balancer_param: dmq } : {}) }, layer, `${where} → ${layer.name}`, activationOffset);
  }
  const skipFusion = list(simple.skip_fusion_layers).map(String);
  return validateQuantConfig({ version: 1, batch_num: simple.batch_num ?? 1, activation_offset: activationOffset, do_fusion: simple.do_fusion ?? true, skip_fusion_layers: skipFusion, ...out }, model, where);
}

export interface CreateQuantConfigOptions {
  skipLayers?: string[];
  batchNum?: number;
  activationOffset?: boolean;
  /** a simplified config (.cfg text format or .json path, or an object); when given, the three options above are ignored */
  configDefinition?: string | Record<string, unknown>;
}

/**
 * AMCT's create_quant_config: finds every quantizable layer of `model` and writes the JSON
 * config (overwriting `configFile`). `inputData`, when given, must feed the model's inputs by name.
 */
export function createQuantConfig(configFile: string, model: Model | string, inputData?: Record<string, unknown> | null, options: CreateQuantConfigOptions = {}): AmctQuantConfig {
  if (typeof configFile !== 'string' || !configFile.endsWith('.json')) throw invalidArgument('config_file', configFile, 'a path ending in .json');
  const m = typeof model === 'string' ? loadModel(model) : model;
  if (inputData) {
    const inputs = m.graph.inputNames;
    const missing = inputs.filter((n) => !(n in inputData));
    if (missing.length) throw new QuantbookError('INVALID_ARGUMENT', `input_data: missing model inputs ${missing.map((n) => `"${n}"`).join(', ')}; the model's inputs are ${inputs.map((n) => `"${n}"`).join(', ')}`);
  }
  let config: AmctQuantConfig;
  if (options.configDefinition !== undefined && options.configDefinition !== null) {
    config = expandSimpleConfig(readSimpleConfig(options.configDefinition), m);
  } else {
    const layers = amctLayers(m);
    const skip = options.skipLayers ?? [];
    if (!Array.isArray(skip)) throw invalidArgument('skip_layers', skip, 'a list of layer names');
    requireLayerNames(skip, layers, 'skip_layers');
    const batchNum = num(options.batchNum ?? 1, 'batch_num', (x) => Number.isInteger(x) && x > 0, 'a positive integer');
    const activationOffset = bool(options.activationOffset ?? true, 'activation_offset');
    config = {
      version: 1,
      batch_num: batchNum,
      activation_offset: activationOffset,
      do_fusion: true,
      skip_fusion_layers: [],
      layers: Object.fromEntries(layers.filter((l) => !skip.includes(l.name)).map((l) => [l.name, defaultLayerConfig(l, activationOffset)])),
    };
  }
  checkAmctLayerConstraints(m, amctLayers(m).filter((l) => config.layers[l.name]?.quant_enable), 'create_quant_config');
  writeQuantConfig(configFile, config);
  return config;
}
