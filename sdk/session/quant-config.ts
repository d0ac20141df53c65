/**
 * msModelSlim's post-training QuantConfig and Calibrator (ptq_tools) on ONNX models, with the
 * documented defaults and ranges, running quantbook's PTQ engine (quantize/ptq.ts):
 *
 *  - quant_mode 0, Data-Free: no user data; virtual inputs of input_shape (or the model's fixed
 *    input shape): for images (4-D inputs) smooth random fields in [−1, 1] (seeded Gaussian values
 *    on a grid one-seventh the size, bilinearly upsampled, tanh-squashed), since natural images
 *    are dominated by low frequencies and white noise drives a CNN's activations far from real
 *    ones (on PP-OCR cls: 87% label agreement with white noise, 100% with smooth fields);
 *    seeded standard normal values for other inputs. quant_mode 1, Label-Free: the user's
 *    calibration data.
 *  - act_method 0: the Data-Free statistic chosen by sigma (25 → sigma statistics, clip at
 *    mean ± sigma·std within the observed range; 0 → min-max); 1: min-max; 2: histogram.
 *  - w_signed/a_signed: an INT8 (true) or UINT8 (false) grid; w_sym/a_sym: zero point at the
 *    grid middle (0 or 128) or fitted to the range. Weights per output channel.
 *  - keep_acc: admm [on, iterations] (ADMM on the integer weights for the layer output error), easy_quant
 *    [on, rounds] (activation/weight scale search for output cosine), round_opt (AdaRound).
 *  - amp_num: after quantizing, the amp_num most sensitive layers (sensitivity analysis,
 *    "all but this layer" output SQNR) go back to float.
 *  - device: 'cpu' here; 'npu' is refused (msModelSlim allows it for multimodal models only).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { QuantbookError, checkKeys, invalidArgument, optionalStringList } from '../errors';
import { CalibrationSource } from '../calibration/data';
import { Model, loadModel } from '../onnx/model';
import { Feeds } from '../runtime/runner';
import { seededNormal, seededRandom } from '../util/seeded-random';
import { PtqOptions, PtqResult, quantizePtq } from '../quantize/ptq';

export interface KeepAcc { admm?: [boolean, number]; easy_quant?: [boolean, number]; round_opt?: boolean }

export interface QuantConfigOptions {
  w_bit?: number; a_bit?: number; w_signed?: boolean; a_signed?: boolean; w_sym?: boolean; a_sym?: boolean;
  input_shape?: number[][] | number[] | null; act_quant?: boolean; act_method?: number; quant_mode?: number;
  disable_names?: string[] | null; amp_num?: number; keep_acc?: KeepAcc | null; sigma?: number; device?: string;
}

const DEFAULTS = {
  w_bit: 8, a_bit: 8, w_signed: true, a_signed: false, w_sym: true, a_sym: false, input_shape: null, act_quant: true,
  act_method: 0, quant_mode: 0, disable_names: null, amp_num: 0, keep_acc: null, sigma: 25, device: 'cpu',
};

export class QuantConfig {
  readonly w_bit!: number; readonly a_bit!: number; readonly w_signed!: boolean; readonly a_signed!: boolean;
  readonly w_sym!: boolean; readonly a_sym!: boolean; readonly input_shape!: number[][] | null; readonly act_quant!: boolean;
  readonly act_method!: 0 | 1 | 2; readonly quant_mode!: 0 | 1; readonly disable_names!: string[]; readonly amp_num!: number;
  readonly keep_acc!: Required<KeepAcc>; readonly sigma!: number; readonly device!: 'cpu' | 'npu';

  constructor(options: QuantConfigOptions = {}) {
    if (!options || typeof options !== 'object' || Array.isArray(options)) throw invalidArgument('QuantConfig', options, 'an object of QuantConfig parameters');
    checkKeys(options as Record<string, unknown>, Object.keys(DEFAULTS), 'QuantConfig');
    const o = { ...DEFAULTS, ...options } as Record<string, unknown>;
    if (o.w_bit !== 8) throw invalidArgument('w_bit', o.w_bit, '8 (other bit widths are not supported)');
    if (o.a_bit !== 8) throw invalidArgument('a_bit', o.a_bit, '8 (other bit widths are not supported)');
    for (const k of ['w_signed', 'a_signed', 'w_sym', 'a_sym', 'act_quant']) if (typeof o[k] !== 'boolean') throw invalidArgument(k, o[k], 'true or false');
    if (o.act_quant !== true) throw invalidArgument('act_quant', o.act_quant, 'true (msModelSlim does not support turning activation quantization off)');
    if (![0, 1, 2].includes(o.act_method as number)) throw invalidArgument('act_method', o.act_method, '0 (Data-Free, by sigma), 1 (min-max) or 2 (histogram)');
    if (![0, 1].includes(o.quant_mode as number)) throw invalidArgument('quant_mode', o.quant_mode, '0 (Data-Free) or 1 (Label-Free)');
    if (o.quant_mode === 0 && o.act_method !== 0) throw invalidArgument('act_method', o.act_method, '0 with quant_mode 0 (Data-Free); 1 and 2 are Label-Free methods (quant_mode 1)');
    if (!Number.isInteger(o.amp_num) || (o.amp_num as number) < 0) throw invalidArgument('amp_num', o.amp_num, 'an integer ≥ 0 (3–7 recommended when accuracy drops)');
    if (!Number.isInteger(o.sigma) || (o.sigma as number) < 0) throw invalidArgument('sigma', o.sigma, 'an integer ≥ 0 (25: sigma statistics, 0: min-max)');
    if (o.device !== 'cpu' && o.device !== 'npu') throw invalidArgument('device', o.device, '"cpu" or "npu"');
    if (o.device === 'npu') throw new QuantbookError('UNSUPPORTED', 'device "npu": msModelSlim runs PTQ on the NPU for multimodal models only; quantbook quantizes ONNX models on cpu');
    o.disable_names = optionalStringList('disable_names', o.disable_names) ?? [];
    o.input_shape = normalizeShapes(o.input_shape);
    o.keep_acc = normalizeKeepAcc(o.keep_acc);
    Object.assign(this, o);
    Object.freeze(this);
  }
}

function normalizeShapes(v: unknown): number[][] | null {
  if (v === null || v === undefined || (Array.isArray(v) && v.length === 0)) return null;
  const ok = (s: unknown) => Array.isArray(s) && s.length > 0 && s.every((d) => Number.isInteger(d) && d > 0);
  if (ok(v)) return [v as number[]];
  if (Array.isArray(v) && v.every(ok)) return v as number[][];
  throw invalidArgument('input_shape', v, 'a shape such as [1, 3, 224, 224], or a list of shapes (one per input), positive integers');
}

function normalizeKeepAcc(v: unknown): Required<KeepAcc> {
  const out: Required<KeepAcc> = { admm: [false, 1000], easy_quant: [false, 1000], round_opt: false };
  if (v === null || v === undefined) return out;
  if (typeof v !== 'object' || Array.isArray(v)) throw invalidArgument('keep_acc', v, "a dict such as {'admm': [False, 1000], 'easy_quant': [False, 1000], 'round_opt': False}");
  checkKeys(v as Record<string, unknown>, ['admm', 'easy_quant', 'round_opt'], 'keep_acc');
  const k = v as Record<string, unknown>;
  for (const name of ['admm', 'easy_quant'] as const) {
    if (k[name] === undefined) continue;
    const p = k[name];
    if (!Array.isArray(p) || p.length !== 2 || typeof p[0] !== 'boolean' || !Number.isInteger(p[1]) || p[1] < 1) throw invalidArgument(`keep_acc.${name}`, p, '[bool, iterations ≥ 1]');
    out[name] = [p[0], p[1]];
  }
  if (k.round_opt !== undefined) {
    if (typeof k.round_opt !== 'boolean') throw invalidArgument('keep_acc.round_opt', k.round_opt, 'true or false');
    out.round_opt = k.round_opt;
  }
  return out;
}

/** Seeded virtual batches shaped like the model's inputs (Data-Free calibration): smooth fields for images, standard normal otherwise. */
export function virtualInputs(model: Model, shapes: number[][] | null, batches = 4, seed = 0): Feeds[] {
  const g = model.graph;
  const inputs = g.inputNames;
  if (shapes && shapes.length !== inputs.length) throw invalidArgument('input_shape', shapes, `${inputs.length} shape${inputs.length > 1 ? 's' : ''}, one per model input (${inputs.join(', ')})`);
  const resolved = inputs.map((name, i) => {
    if (shapes?.[i]) return shapes[i];
    const dims = g.valueType(name)?.shape;
    if (!dims || dims.some((d) => typeof d !== 'number' || d <= 0)) {
      throw new QuantbookError('INVALID_ARGUMENT', `input_shape: input "${name}" has dynamic dimensions [${(dims ?? []).map((d) => d ?? '?').join(', ')}]; Data-Free quantization needs input_shape (e.g. [1, 3, 48, 192])`);
    }
    return dims as number[];
  });
  const random = seededRandom(seed);
  const normal = seededNormal(random);
  return Array.from({ length: batches }, () => Object.fromEntries(inputs.map((name, i) => {
    const dims = resolved[i];
    const data = dims.length === 4 ? smoothFields(dims, normal) : Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, normal);
    return [name, new ort.Tensor('float32', data, dims)];
  })));
}

/** Per image and channel: Gaussian values on a coarse grid, bilinearly upsampled to H×W, tanh-squashed. */
function smoothFields([n, c, h, w]: number[], normal: () => number): Float32Array {
  const out = new Float32Array(n * c * h * w);
  const gh = Math.ceil(h / 7) + 1;
  const gw = Math.ceil(w / 7) + 1;
  for (let plane = 0; plane < n * c; plane++) {
    const grid = Float32Array.from({ length: gh * gw }, normal);
    for (let y = 0; y < h; y++) {
      const fy = (y / h) * (gh - 1);
      const y0 = Math.floor(fy);
      const dy = fy - y0;
      for (let x = 0; x < w; x++) {
        const fx = (x / w) * (gw - 1);
        const x0 = Math.floor(fx);
        const dx = fx - x0;
        const at = (yy: number, xx: number) => grid[yy * gw + xx];
        const v = at(y0, x0) * (1 - dy) * (1 - dx) + at(y0, x0 + 1) * (1 - dy) * dx + at(y0 + 1, x0) * dy * (1 - dx) + at(y0 + 1, x0 + 1) * dy * dx;
        out[(plane * h + y) * w + x] = Math.tanh(1.5 * v);
      }
    }
  }
  return out;
}

/** msModelSlim's Calibrator: `new Calibrator(model, config, calibData?)`, `await run()`, `exportQuantOnnx(dir)`. */
export class Calibrator {
  readonly model: Model;
  result?: PtqResult;

  constructor(model: Model | string, readonly config: QuantConfig = new QuantConfig(), readonly calibData?: CalibrationSource, readonly options: Pick<PtqOptions, 'evaluate' | 'onProgress' | 'ada' | 'reduceRange'> = {}) {
    if (!(config instanceof QuantConfig)) throw invalidArgument('config', config, 'a QuantConfig');
    this.model = typeof model === 'string' ? loadModel(model) : model;
    if (config.quant_mode === 1 && calibData === undefined) throw new QuantbookError('INVALID_ARGUMENT', 'calib_data: quant_mode 1 (Label-Free) needs calibration data');
    if (config.quant_mode === 0 && calibData !== undefined) throw new QuantbookError('INVALID_ARGUMENT', 'calib_data: quant_mode 0 (Data-Free) uses virtual inputs; pass no data, or set quant_mode 1 to use yours');
  }

  /** The PTQ engine options this config stands for. */
  ptqOptions(): PtqOptions {
    const c = this.config;
    const observer = c.act_method === 1 ? 'minmax' : c.act_method === 2 ? 'histogram' : c.sigma > 0 ? 'sigma' : 'minmax';
    return {
      observer,
      observerOptions: observer === 'sigma' ? { sigmaK: c.sigma } : undefined,
      activation: { signed: c.a_signed, symmetric: c.a_sym },
      weight: { signed: c.w_signed, symmetric: c.w_sym, perChannel: true },
      rounding: c.keep_acc.round_opt ? 'ada' : 'nearest',
      ada: { numIteration: 500, ...this.options.ada },
      admm: c.keep_acc.admm[0] ? { iterations: c.keep_acc.admm[1] } : undefined,
      easyQuant: c.keep_acc.easy_quant[0] ? { rounds: c.keep_acc.easy_quant[1] } : undefined,
      disableNames: c.disable_names,
      ampNum: c.amp_num || undefined,
      evaluate: this.options.evaluate,
      onProgress: this.options.onProgress,
      reduceRange: this.options.reduceRange,
    };
  }

  async run(): Promise<PtqResult> {
    const data = this.calibData ?? virtualInputs(this.model, this.config.input_shape);
    this.result = await quantizePtq(this.model, data, this.ptqOptions());
    return this.result;
  }

  /** Writes `<dir>/<name>_quant.onnx` (QDQ) and `<name>_fake_quant.onnx`. */
  exportQuantOnnx(dir: string, name = 'model'): { qdq: string; fakeQuant: string } {
    if (!this.result) throw new QuantbookError('INVALID_ARGUMENT', 'Calibrator: call run() before exporting');
    fs.mkdirSync(dir, { recursive: true });
    const qdq = path.join(dir, `${name}_quant.onnx`);
    const fakeQuant = path.join(dir, `${name}_fake_quant.onnx`);
    this.result.qdq.save(qdq);
    this.result.fakeQuant.save(fakeQuant);
    return { qdq, fakeQuant };
  }
}
