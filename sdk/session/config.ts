/**
 * SessionConfig as msModelSlim defines it (processor_cfg_map, calib_data, device), accepted as
 * TypeScript objects in camelCase or as JSON with the original snake_case names, normalised
 * to one shape and validated: every rejection names the key, the value and what is allowed.
 */
import { readJsonFile } from '../util/json-file';
import { QuantbookError, checkKeys as checkKnownKeys, invalidArgument, requireObject } from '../errors';
import type { CalibrationSource } from '../calibration/data';
import { ACT_METHODS, ActMethod, OP_SETS, OpSet } from '../quantize/w8a8';

export const PROCESSORS = ['m3', 'm4', 'm6', 'w8a8', 'w8a8_dynamic', 'w8a8_timestep', 'fa3', 'save'] as const;
export type ProcessorName = (typeof PROCESSORS)[number];
/** Processors this version runs; the others are recognised and refused with a clear message. */
export const AVAILABLE_PROCESSORS: readonly ProcessorName[] = [...PROCESSORS];
/** the anti-outlier processors: they rewrite the float model before a quantization processor runs */
export const ANTI_OUTLIER_PROCESSORS = ['m3', 'm4', 'm6'] as const;
export const DYNAMIC_ACT_METHODS = ['minmax', 'histogram', 'mix'] as const;
/** msModelSlim's 'cpu' | 'npu', and quantbook's 'cuda' */
export const DEVICES = ['cpu', 'npu', 'cuda'] as const;
/** 'safe_tensor' is msModelSlim's (weights + description JSON); the others are quantbook's ONNX and statistics files. */
export const SAVE_TYPES = ['safe_tensor', 'onnx', 'fake_quant_onnx', 'stats'] as const;
export type SaveType = (typeof SAVE_TYPES)[number];
export const DEQ_SCALE_FORMATS = ['float32', 'int64'] as const;

/** `opSet` and `speedFallback` are quantbook extensions (not in msModelSlim): speedFallback keeps float the layers whose int8 kernels are slower on this CPU (W8A8Options.speedFallback); opSet 'amct' layers only, 'extended' with the glue ops, or 'msmodelslim' (constant-weight layers only, outputs not requantized, as msModelSlim deploys W8A8). */
export interface W8A8ProcessorConfig { cfg: { actMethod: ActMethod; opSet: OpSet; speedFallback: boolean }; disableNames: string[] }
export interface W8A8DynamicProcessorConfig { cfg: { actMethod: (typeof DYNAMIC_ACT_METHODS)[number] }; disableNames: string[] }
/**
 * msModelSlim's SaveProcessorConfig. `partFileSize` is in GB (10^9 bytes); fractions are a
 * quantbook extension (small models). `deqScale` (quantbook) picks deq_scale's stored type.
 */
export interface SaveProcessorConfig {
  outputPath: string;
  safetensorsName?: string;
  jsonName?: string;
  saveType: SaveType[];
  partFileSize?: number;
  deqScale?: (typeof DEQ_SCALE_FORMATS)[number];
}

/** msModelSlim's M6Config: either exponent missing means both are searched (a given one stays fixed). */
export interface M6ProcessorConfig { cfg: { alpha?: number; beta?: number } }
/** msModelSlim's M3ProcessorConfig and M4ProcessorConfig have no parameters. */
export type M3ProcessorConfig = Record<string, never>;
export type M4ProcessorConfig = Record<string, never>;

/** msModelSlim's W8A8TimeStepProcessorConfig: static scales for t ≥ timestepSep, dynamic below. */
export interface W8A8TimestepProcessorConfig { cfg: { actMethod: (typeof DYNAMIC_ACT_METHODS)[number] }; disableNames: string[]; timestepSep: number }

/** msModelSlim's FA3ProcessorConfig has no parameters. */
export type FA3ProcessorConfig = Record<string, never>;

export interface ProcessorCfgMap {
  m3?: M3ProcessorConfig;
  m4?: M4ProcessorConfig;
  fa3?: FA3ProcessorConfig;
  m6?: M6ProcessorConfig;
  w8a8?: W8A8ProcessorConfig;
  w8a8_dynamic?: W8A8DynamicProcessorConfig;
  w8a8_timestep?: W8A8TimestepProcessorConfig;
  save?: SaveProcessorConfig;
}

export interface SessionConfig {
  processorCfgMap: ProcessorCfgMap;
  calibData?: CalibrationSource;
  device: (typeof DEVICES)[number];
}

const camel = (k: string) => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

/** Reads `obj[key]` under its camelCase or snake_case spelling. */
function pick(obj: Record<string, unknown>, key: string): unknown {
  return obj[key] ?? obj[camel(key)];
}

/** Session configs accept every key in snake_case or camelCase, but not both for one key (which would win silently). */
function checkKeys(obj: Record<string, unknown>, allowed: string[], where: string): void {
  checkKnownKeys(obj, allowed, where, (k) => [k, camel(k)]);
  for (const k of allowed) {
    if (camel(k) !== k && obj[k] !== undefined && obj[camel(k)] !== undefined) throw new QuantbookError('INVALID_ARGUMENT', `${where}: "${k}" and "${camel(k)}" are one setting given twice; keep one spelling`);
  }
}

function disableNames(p: Record<string, unknown>, where: string): string[] {
  const d = pick(p, 'disable_names') ?? [];
  if (!Array.isArray(d) || d.some((x) => typeof x !== 'string')) throw invalidArgument(`${where}.disable_names`, d, 'a list of layer names or glob patterns');
  return d as string[];
}

function actMethod<T extends string>(p: Record<string, unknown>, where: string, allowed: readonly T[], extraKeys: string[] = []): T {
  const cfg = pick(p, 'cfg') === undefined ? {} : requireObject(pick(p, 'cfg'), `${where}.cfg`);
  checkKeys(cfg, ['act_method', ...extraKeys], `${where}.cfg`);
  const m = pick(cfg, 'act_method') ?? 'minmax';
  if (!allowed.includes(m as T)) throw invalidArgument(`${where}.cfg.act_method`, m, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  return m as T;
}

function optionalFileName(p: Record<string, unknown>, key: string, suffix: string): string | undefined {
  const v = pick(p, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !v || /[\\/]/.test(v) || !v.endsWith(suffix)) throw invalidArgument(`save.${key}`, v, `a file name ending in ${suffix} (no folders; the folder is output_path)`);
  return v;
}

/** SaveProcessorConfig, validated; save_type defaults to ['safe_tensor'] as in msModelSlim. */
export function saveConfig(raw: unknown): SaveProcessorConfig {
  const p = requireObject(raw, 'processor_cfg_map.save');
  checkKeys(p, ['output_path', 'safetensors_name', 'json_name', 'save_type', 'part_file_size', 'deq_scale'], 'processor_cfg_map.save');
  const outputPath = pick(p, 'output_path');
  if (typeof outputPath !== 'string' || !outputPath) throw invalidArgument('save.output_path', outputPath, 'a folder path');
  const saveType = (pick(p, 'save_type') ?? ['safe_tensor']) as unknown[];
  if (!Array.isArray(saveType) || !saveType.length || saveType.some((t) => !(SAVE_TYPES as readonly unknown[]).includes(t))) {
    throw invalidArgument('save.save_type', saveType, `a non-empty list drawn from ${SAVE_TYPES.map((t) => `'${t}'`).join(', ')}`);
  }
  const part = pick(p, 'part_file_size') ?? undefined; // None/null: one file
  if (part !== undefined && !(typeof part === 'number' && Number.isFinite(part) && part > 0)) throw invalidArgument('save.part_file_size', part, 'a positive size in GB, or None/null for one file');
  const deq = pick(p, 'deq_scale') ?? 'float32';
  if (!(DEQ_SCALE_FORMATS as readonly unknown[]).includes(deq)) throw invalidArgument('save.deq_scale', deq, `one of ${DEQ_SCALE_FORMATS.map((d) => `'${d}'`).join(', ')}`);
  return {
    outputPath,
    safetensorsName: optionalFileName(p, 'safetensors_name', '.safetensors'),
    jsonName: optionalFileName(p, 'json_name', '.json'),
    saveType: saveType as SaveType[],
    partFileSize: part as number | undefined,
    deqScale: deq as SaveProcessorConfig['deqScale'],
  };
}

/** Normalises and validates a session config given as an object (either spelling). */
export function normalizeSessionConfig(raw: unknown): SessionConfig {
  const top = requireObject(raw, 'SessionConfig');
  checkKeys(top, ['processor_cfg_map', 'calib_data', 'device'], 'SessionConfig');
  const map = requireObject(pick(top, 'processor_cfg_map') ?? {}, 'processor_cfg_map');
  const names = Object.keys(map);
  const unknown = names.filter((n) => !(PROCESSORS as readonly string[]).includes(n));
  if (unknown.length) throw new QuantbookError('INVALID_ARGUMENT', `processor_cfg_map: unknown processor ${unknown.map((n) => `'${n}'`).join(', ')}; allowed: ${PROCESSORS.map((p) => `'${p}'`).join(', ')}`);
  const quantizers = names.filter((n) => n !== 'save');
  if (quantizers.length === 0) throw new QuantbookError('INVALID_ARGUMENT', `processor_cfg_map: configure at least one quantization processor (${PROCESSORS.filter((p) => p !== 'save').map((p) => `'${p}'`).join(', ')}); 'save' cannot be used alone`);
  if (names.includes('fa3') && !names.includes('w8a8_dynamic')) throw new QuantbookError('INVALID_ARGUMENT', "processor_cfg_map: 'fa3' must be used together with 'w8a8_dynamic'");
  const layerQuantizers = names.filter((n) => ['w8a8', 'w8a8_dynamic', 'w8a8_timestep'].includes(n));
  if (layerQuantizers.length > 1) throw new QuantbookError('INVALID_ARGUMENT', `processor_cfg_map: ${layerQuantizers.map((n) => `'${n}'`).join(' and ')} each quantize every layer; choose one`);
  const unavailable = names.filter((n) => !AVAILABLE_PROCESSORS.includes(n as ProcessorName));
  if (unavailable.length) throw new QuantbookError('UNSUPPORTED', `processor_cfg_map: ${unavailable.map((n) => `'${n}'`).join(', ')} ${unavailable.length > 1 ? 'are' : 'is'} not available in this version of quantbook; available: ${AVAILABLE_PROCESSORS.map((p) => `'${p}'`).join(', ')}`);

  const antiOutlier = names.filter((n) => (ANTI_OUTLIER_PROCESSORS as readonly string[]).includes(n));
  if (antiOutlier.length > 1) throw new QuantbookError('INVALID_ARGUMENT', `processor_cfg_map: ${antiOutlier.map((n) => `'${n}'`).join(' and ')} both rewrite the model against outliers; choose one`);
  if (antiOutlier.length && !layerQuantizers.length) {
    throw new QuantbookError('INVALID_ARGUMENT', `processor_cfg_map: '${antiOutlier[0]}' only prepares the model; add a quantization processor ('w8a8', 'w8a8_dynamic' or 'w8a8_timestep')`);
  }

  const out: ProcessorCfgMap = {};
  for (const name of ['m3', 'm4'] as const) {
    if (map[name] === undefined) continue;
    checkKeys(requireObject(map[name], `processor_cfg_map.${name}`), [], `processor_cfg_map.${name}`);
    out[name] = {};
  }
  if (map.fa3 !== undefined) {
    checkKeys(requireObject(map.fa3, 'processor_cfg_map.fa3'), [], 'processor_cfg_map.fa3');
    out.fa3 = {};
  }
  if (map.m6 !== undefined) {
    const p = requireObject(map.m6, 'processor_cfg_map.m6');
    checkKeys(p, ['cfg'], 'processor_cfg_map.m6');
    const cfg = pick(p, 'cfg') === undefined ? {} : requireObject(pick(p, 'cfg'), 'm6.cfg');
    checkKeys(cfg, ['alpha', 'beta'], 'm6.cfg');
    const unit = (k: string) => {
      const v = pick(cfg, k) ?? undefined; // None/null: searched
      if (v !== undefined && !(typeof v === 'number' && v >= 0 && v <= 1)) throw invalidArgument(`m6.cfg.${k}`, v, 'a number in [0, 1], or None/null to search it');
      return v as number | undefined;
    };
    out.m6 = { cfg: { alpha: unit('alpha'), beta: unit('beta') } };
  }
  if (map.w8a8 !== undefined) {
    const p = requireObject(map.w8a8, 'processor_cfg_map.w8a8');
    checkKeys(p, ['cfg', 'disable_names'], 'processor_cfg_map.w8a8');
    const cfg = pick(p, 'cfg') === undefined ? {} : requireObject(pick(p, 'cfg'), 'w8a8.cfg');
    const opSet = pick(cfg, 'op_set') ?? 'amct';
    if (!(OP_SETS as readonly unknown[]).includes(opSet)) throw invalidArgument('w8a8.cfg.op_set', opSet, `one of ${OP_SETS.map((o) => `'${o}'`).join(', ')}`);
    // speed_fallback (quantbook extension): keep float the layers whose int8 kernels are slower on this CPU
    const speedFallback = pick(cfg, 'speed_fallback') ?? false;
    if (typeof speedFallback !== 'boolean') throw invalidArgument('w8a8.cfg.speed_fallback', speedFallback, 'true or false');
    out.w8a8 = { cfg: { actMethod: actMethod(p, 'w8a8', ACT_METHODS, ['op_set', 'speed_fallback']), opSet: opSet as OpSet, speedFallback }, disableNames: disableNames(p, 'w8a8') };
  }
  if (map.w8a8_dynamic !== undefined) {
    const p = requireObject(map.w8a8_dynamic, 'processor_cfg_map.w8a8_dynamic');
    checkKeys(p, ['cfg', 'disable_names'], 'processor_cfg_map.w8a8_dynamic');
    out.w8a8_dynamic = { cfg: { actMethod: actMethod(p, 'w8a8_dynamic', DYNAMIC_ACT_METHODS) }, disableNames: disableNames(p, 'w8a8_dynamic') };
  }
  if (map.w8a8_timestep !== undefined) {
    const p = requireObject(map.w8a8_timestep, 'processor_cfg_map.w8a8_timestep');
    checkKeys(p, ['cfg', 'disable_names', 'timestep_sep'], 'processor_cfg_map.w8a8_timestep');
    const sep = pick(p, 'timestep_sep');
    if (!Number.isInteger(sep)) throw invalidArgument('w8a8_timestep.timestep_sep', sep, 'an integer (required; typically half the number of sampling steps)');
    out.w8a8_timestep = { cfg: { actMethod: actMethod(p, 'w8a8_timestep', DYNAMIC_ACT_METHODS) }, disableNames: disableNames(p, 'w8a8_timestep'), timestepSep: sep as number };
  }
  if (map.save !== undefined) out.save = saveConfig(map.save);
  const device = pick(top, 'device') ?? 'cpu';
  if (!(DEVICES as readonly unknown[]).includes(device)) throw invalidArgument('device', device, `one of ${DEVICES.map((d) => `'${d}'`).join(', ')}`);
  const calibData = pick(top, 'calib_data') as CalibrationSource | undefined;
  // No calib_data is msModelSlim's Data-Free scenario. w8a8_dynamic needs no activations; static w8a8
  // calibrates on seeded virtual inputs (session.ts dataFreeInputs). The anti-outlier processors, fa3 and
  // w8a8_timestep belong to the scenarios the seed says must pass data (anti-outlier calibration; dumped
  // calibration data for multimodal generation models), so they refuse.
  const dataFree = '(without calib_data only w8a8_dynamic and static w8a8, on virtual inputs, run Data-Free)';
  if (antiOutlier.length && calibData === undefined) throw new QuantbookError('INVALID_ARGUMENT', `calib_data: '${antiOutlier[0]}' computes its scales from activations and needs calibration data ${dataFree}`);
  if (out.fa3 && calibData === undefined) throw new QuantbookError('INVALID_ARGUMENT', `calib_data: 'fa3' calibrates per-head scales of Q, K and V and needs calibration data ${dataFree}`);
  if (out.w8a8_timestep && calibData === undefined) throw new QuantbookError('INVALID_ARGUMENT', `calib_data: 'w8a8_timestep' calibrates per timestep and needs calibration data whose batches carry the timestep input (msModelSlim: dump it from the generation pipeline) ${dataFree}`);
  return { processorCfgMap: out, calibData, device: device as SessionConfig['device'] };
}

/** Reads a session config JSON file (snake_case as msModelSlim writes it, or camelCase). */
export function loadSessionConfig(file: string): SessionConfig {
  return normalizeSessionConfig(readJsonFile(file, 'session config'));
}
