/**
 * msModelSlim's QatConfig (qat_tools) with its documented defaults and ranges, the step that
 * prepares a model for QAT with it (qsinQat) and the export after training (saveQsinQatModel).
 *
 * Mapping onto quantbook:
 *  - w_bit/a_bit: 8 only ("not modifiable" in msModelSlim). a_sym: symmetric int8 activations
 *    instead of asymmetric uint8. ema: decay of the activation range EMA.
 *  - grad_scale > 0: activation scales are learned (LSQ) with that gradient scale.
 *  - opset_version 11: per-tensor weights (DequantizeLinear before opset 13 has no axis);
 *    13: per-channel weights. Conv → BatchNormalization pairs train folded ('one-conv').
 *  - amp_num / steps: before export, the amp_num layers whose quantization hurts the output
 *    most fall back to float, found in `steps` rounds (each round re-measures the rest).
 *  - quant_mode false: quantization mode off: ranges are tracked but nothing is quantized (float
 *    training), and saveQsinQatModel writes the trained float model (no QuantizeLinear /
 *    DequantizeLinear, no fake-quant file, no parameters, no fallback).
 *  - save_onnx_name: the QDQ model; `<name>_fake_quant.onnx` beside it; save_params: the
 *    quantization parameters as .npy files; compressed_model_checkpoint: the trained weights
 *    and quantizer state (safetensors); input_names/output_names rename the graph's inputs/outputs.
 *  - is_forward: the forward pass is driven the mmdetection way: the batches saveQsinQatModel
 *    runs (amp_num's sensitivity data) are mmdetection test-pipeline dicts { img: [tensor, …],
 *    img_metas: […] } run as forward(return_loss=False): img[0] feeds the model's image input,
 *    img_metas is host-side metadata the ONNX graph does not read. False: feeds by input name.
 *  - has_init_quant: the model has been through quantization initialisation already: it is a
 *    QDQ model (PTQ or an earlier export); its activation Q/DQ scales and zero points are the
 *    initial ranges of the fake quantizers (instead of the first training batch's min/max), its
 *    quantized weights their dequantized values (./init-quant.ts). A QDQ model with
 *    has_init_quant false, or a float model with true, is refused.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError, checkKeys, invalidArgument, optionalStringList } from '../errors';
import { Model } from '../onnx/model';
import { writeNpy } from '../calibration/data';
import { toFakeQuant } from '../quantize/fake-quant';
import { upgradeOpset } from '../onnx/opset-upgrade';
import { LayerRecord } from '../quantize/qdq';
import { FeedValue } from '../train/executor';
import { QatNetwork } from './qat-network';
import { hasQdq, takeInitialQuantization } from './init-quant';

export interface QatConfigOptions {
  w_bit?: number; a_bit?: number; a_sym?: boolean; amp_num?: number; steps?: number; ema?: number;
  is_forward?: boolean; ignore_head_tail_node?: boolean; disable_names?: string[] | null; has_init_quant?: boolean;
  quant_mode?: boolean; grad_scale?: number; compressed_model_checkpoint?: string | null; opset_version?: number;
  save_params?: boolean; input_names?: string[] | null; output_names?: string[] | null; save_onnx_name?: string | null;
}

const DEFAULTS: Required<QatConfigOptions> = {
  w_bit: 8, a_bit: 8, a_sym: false, amp_num: 0, steps: 1, ema: 0.99, is_forward: false, ignore_head_tail_node: false,
  disable_names: null, has_init_quant: false, quant_mode: true, grad_scale: 0, compressed_model_checkpoint: null,
  opset_version: 11, save_params: false, input_names: null, output_names: null, save_onnx_name: null,
};

const optString = (name: string, v: unknown): string | null => {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'string' || !v) throw invalidArgument(name, v, 'a non-empty string or null');
  return v;
};

export class QatConfig implements Readonly<Required<QatConfigOptions>> {
  readonly w_bit!: number; readonly a_bit!: number; readonly a_sym!: boolean; readonly amp_num!: number; readonly steps!: number;
  readonly ema!: number; readonly is_forward!: boolean; readonly ignore_head_tail_node!: boolean; readonly disable_names!: string[] | null;
  readonly has_init_quant!: boolean; readonly quant_mode!: boolean; readonly grad_scale!: number; readonly compressed_model_checkpoint!: string | null;
  readonly opset_version!: number; readonly save_params!: boolean; readonly input_names!: string[] | null; readonly output_names!: string[] | null;
  readonly save_onnx_name!: string | null;

  constructor(options: QatConfigOptions = {}) {
    if (!options || typeof options !== 'object' || Array.isArray(options)) throw invalidArgument('QatConfig', options, 'an object of QatConfig parameters');
    checkKeys(options as Record<string, unknown>, Object.keys(DEFAULTS), 'QatConfig');
    const o = { ...DEFAULTS, ...options } as Record<string, unknown>;
    if (o.w_bit !== 8) throw invalidArgument('w_bit', o.w_bit, '8 (msModelSlim does not support changing it)');
    if (o.a_bit !== 8) throw invalidArgument('a_bit', o.a_bit, '8 (msModelSlim does not support changing it)');
    for (const k of ['a_sym', 'is_forward', 'ignore_head_tail_node', 'has_init_quant', 'quant_mode', 'save_params']) {
      if (typeof o[k] !== 'boolean') throw invalidArgument(k, o[k], 'true or false');
    }
    if (!Number.isInteger(o.amp_num) || (o.amp_num as number) < 0 || (o.amp_num as number) > 10) throw invalidArgument('amp_num', o.amp_num, 'an integer in [0, 10]');
    if (!Number.isInteger(o.steps) || (o.steps as number) < 1) throw invalidArgument('steps', o.steps, 'an integer ≥ 1');
    if (typeof o.ema !== 'number' || !(o.ema >= 0.1 && o.ema <= 1)) throw invalidArgument('ema', o.ema, 'a number in [0.1, 1.0]');
    if (typeof o.grad_scale !== 'number' || !(o.grad_scale >= 0) || !Number.isFinite(o.grad_scale)) throw invalidArgument('grad_scale', o.grad_scale, 'a number ≥ 0 (0.001 recommended; 0 = ranges from min/max only)');
    if (o.opset_version !== 11 && o.opset_version !== 13) throw invalidArgument('opset_version', o.opset_version, '11 or 13');
    o.disable_names = optionalStringList('disable_names', o.disable_names);
    o.input_names = optionalStringList('input_names', o.input_names);
    o.output_names = optionalStringList('output_names', o.output_names);
    o.save_onnx_name = optString('save_onnx_name', o.save_onnx_name);
    o.compressed_model_checkpoint = optString('compressed_model_checkpoint', o.compressed_model_checkpoint);
    Object.assign(this, o);
    Object.freeze(this);
  }
}

/** Prepares `model` for QAT under `config` (msModelSlim's qsin_qat). */
export function qsinQat(model: Model, config: QatConfig = new QatConfig()): QatNetwork {
  if (!(config instanceof QatConfig)) throw invalidArgument('config', config, 'a QatConfig');
  const perChannel = config.opset_version === 13;
  let ranges: ReturnType<typeof takeInitialQuantization>['ranges'] | undefined;
  if (config.has_init_quant) ({ model, ranges } = takeInitialQuantization(model));
  else if (hasQdq(model)) throw new QuantbookError('INVALID_ARGUMENT', 'has_init_quant: false, but the model already has QuantizeLinear/DequantizeLinear nodes; set has_init_quant: true to start QAT from that quantization, or pass the float model');
  const net = new QatNetwork(model, {
    activation: {
      spec: { numBits: 8, signed: config.a_sym, symmetric: config.a_sym, narrowRange: false, perChannel: false, channelAxis: 1 },
      // ema 1.0 would freeze the first batch's range for ever: read it as "no averaging"
      ema: config.ema >= 1 ? undefined : config.ema,
      quantDelay: config.quant_mode ? 0 : Number.POSITIVE_INFINITY,
      learnScale: config.grad_scale > 0 ? config.grad_scale : undefined,
    },
    weight: { spec: { numBits: 8, signed: true, symmetric: true, narrowRange: false, perChannel, channelAxis: 0 }, quantDelay: config.quant_mode ? 0 : Number.POSITIVE_INFINITY },
    disableNames: config.disable_names ?? [],
    ignoreHeadTail: config.ignore_head_tail_node,
    fusion: true,
    bnFold: 'one-conv',
    freezeBn: Number.POSITIVE_INFINITY,
  });
  // initialised ranges: the first training step continues them (EMA) instead of starting over
  for (const [t, q] of net.activations) {
    const r = ranges?.get(t);
    if (r) [q.min, q.max] = [r.min, r.max];
  }
  return net;
}

/**
 * One batch as the model's feeds. is_forward: an mmdetection test-pipeline batch
 * { img: tensor | [tensor, …], img_metas? } run as forward(img, img_metas, return_loss=False):
 * the first image tensor (the single-scale test input) feeds the model's one input.
 */
function batchFeeds(batch: unknown, config: QatConfig, inputs: string[], index: number): Record<string, FeedValue> {
  if (!batch || typeof batch !== 'object' || Array.isArray(batch)) throw invalidArgument(`data[${index}]`, batch, config.is_forward ? 'an mmdetection batch { img, img_metas }' : 'an object of feeds by input name');
  if (!config.is_forward) return batch as Record<string, FeedValue>;
  const b = batch as Record<string, unknown>;
  const extra = Object.keys(b).filter((k) => k !== 'img' && k !== 'img_metas');
  if (!('img' in b) || extra.length) throw invalidArgument(`data[${index}]`, batch, `an mmdetection batch { img, img_metas } (is_forward: true)${extra.length ? `; unexpected key${extra.length > 1 ? 's' : ''} ${extra.map((k) => `"${k}"`).join(', ')}` : ''}`);
  if (inputs.length !== 1) throw new QuantbookError('INVALID_ARGUMENT', `is_forward: mmdetection batches feed one image input; the model has ${inputs.length} inputs (${inputs.map((n) => `"${n}"`).join(', ')})`);
  const img = Array.isArray(b.img) ? b.img[0] : b.img;
  if (!img) throw invalidArgument(`data[${index}].img`, b.img, 'an image tensor or a non-empty list of them');
  return { [inputs[0]]: img as FeedValue };
}

export interface SaveQatOptions {
  /** overrides config.save_onnx_name */
  file?: string;
  /**
   * batches for amp_num's sensitivity measurement (needed when amp_num > 0): feeds by input
   * name, or with is_forward mmdetection batches { img: [tensor, …], img_metas }
   */
  data?: Array<Record<string, FeedValue> | { img: FeedValue | FeedValue[]; img_metas?: unknown }>;
}

export interface SavedQat {
  /** the exported model: QDQ, or with quant_mode false the float model */
  qdq: string;
  /** absent with quant_mode false (nothing is quantized) */
  fakeQuant?: string;
  /** false with quant_mode false: the file at `qdq` is the float model */
  quantized: boolean;
  params?: string;
  checkpoint?: string;
  /** layers that fell back to float (amp_num) */
  fallback: string[];
  records: LayerRecord[];
}

/** Exports a trained QAT network the way config asks (msModelSlim's save_qsin_qat_model). */
export function saveQsinQatModel(net: QatNetwork, config: QatConfig, options: SaveQatOptions = {}): SavedQat {
  const file = options.file ?? config.save_onnx_name;
  if (!file) throw new QuantbookError('INVALID_ARGUMENT', 'save_onnx_name: no output file; set QatConfig.save_onnx_name or pass { file }');
  const base = file.replace(/\.onnx$/i, '');
  if (!config.quant_mode) {
    // quantization mode off: the network trained in float, and the export is the float model
    const model = net.toFloatModel();
    if ((model.opsetVersion('') ?? 0) > config.opset_version) throw new QuantbookError('INVALID_ARGUMENT', `opset_version ${config.opset_version}: the model already uses opset ${model.opsetVersion('')}; quantbook does not downgrade opsets`);
    upgradeOpset(model, config.opset_version);
    renameIo(model, config.input_names, 'input_names', model.graph.inputNames);
    renameIo(model, config.output_names, 'output_names', model.graph.outputNames);
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    model.save(file);
    const saved: SavedQat = { qdq: file, fallback: [], records: [], quantized: false };
    if (config.compressed_model_checkpoint) {
      net.writeCheckpoint(config.compressed_model_checkpoint, { source: 'saveQsinQatModel' });
      saved.checkpoint = config.compressed_model_checkpoint;
    }
    return saved;
  }
  let fallback: string[] = [];
  if (config.amp_num > 0) {
    if (!options.data?.length) throw new QuantbookError('INVALID_ARGUMENT', `amp_num ${config.amp_num}: fallback needs data to measure layer sensitivity; pass { data: [${config.is_forward ? '{ img, img_metas }' : 'feeds'}, …] }`);
    const inputs = net.graph.inputNames;
    fallback = net.fallBack(config.amp_num, config.steps, options.data.map((b, i) => batchFeeds(b, config, inputs, i)));
  }
  const { model, records } = net.toQdqModel(config.opset_version);
  renameIo(model, config.input_names, 'input_names', model.graph.inputNames);
  renameIo(model, config.output_names, 'output_names', model.graph.outputNames);
  const fakeQuantFile = `${base}_fake_quant.onnx`;
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  model.save(file);
  toFakeQuant(model).save(fakeQuantFile);
  const saved: SavedQat = { qdq: file, fakeQuant: fakeQuantFile, fallback, records, quantized: true };
  if (config.save_params) saved.params = saveParams(`${base}_params`, records);
  if (config.compressed_model_checkpoint) {
    net.writeCheckpoint(config.compressed_model_checkpoint, { source: 'saveQsinQatModel' });
    saved.checkpoint = config.compressed_model_checkpoint;
  }
  return saved;
}

function renameIo(model: Model, names: string[] | null, what: string, current: string[]): void {
  if (!names) return;
  if (names.length !== current.length) throw invalidArgument(what, names, `${current.length} name${current.length > 1 ? 's' : ''} (the model's ${what.replace('_names', 's')} are ${current.map((n) => `"${n}"`).join(', ')})`);
  names.forEach((n, i) => { if (n !== current[i]) model.graph.renameTensor(current[i], n); });
}

/** msModelSlim's parameter names, one .npy per layer and quantity. */
function saveParams(dir: string, records: LayerRecord[]): string {
  fs.mkdirSync(dir, { recursive: true });
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');
  for (const r of records) {
    const put = (what: string, data: Float32Array | Int32Array | Int8Array | Uint8Array, dims: number[]) => writeNpy(path.join(dir, `${safe(r.name)}.${what}.npy`), data, dims);
    if (r.input) {
      put('input_scale', Float32Array.of(r.input.scale), [1]);
      put('input_offset', Int32Array.of(r.input.zeroPoint), [1]);
    }
    if (r.weight) {
      put('weight_scale', r.weight.scale, [r.weight.scale.length]);
      put('weight_offset', r.weight.zeroPoint ?? new Int32Array(r.weight.scale.length), [r.weight.scale.length]);
      put('weight', r.weight.int8, r.weight.dims);
    }
    if (r.bias) {
      put('quant_bias', r.bias.int32, [r.bias.int32.length]);
      put('deq_scale', r.bias.scale, [r.bias.scale.length]);
    }
  }
  return dir;
}
