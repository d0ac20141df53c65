/**
 * MindSpore Golden Stick's SimulatedQuantizationAwareTraining for ONNX models: the config
 * dict with its (activation, weight) pairs, the set_* methods, and the TypeError / ValueError
 * rules of its API page; apply(model) returns a QatNetwork to train, convert(net, ckptPath)
 * the deployable QDQ model.
 *
 * Mapping onto quantbook: enable_fusion treats Conv → BatchNormalization and Dense (Gemm, 2-D
 * MatMul) → BatchNormalization as one layer, and quantizes a fused layer followed by a ReLU at
 * the ReLU's output only (Golden Stick's Conv/Dense [+ BN] + ReLU patterns);
 * bn_fold with one_conv_fold folds with running statistics ('one-conv'), bn_fold alone is the
 * two-convolution form with batch statistics until freeze_bn steps ('two-conv'), fusion without
 * bn_fold keeps BN after the quantized Conv ('none'). Activation ranges follow an EMA (decay
 * 0.999, Golden Stick's), weights their per-step min/max.
 */
import * as fs from 'fs';
import { QuantbookError, describe } from '../errors';
import { Model } from '../onnx/model';
import { QuantSpec } from '../observers/qparams';
import { BnFoldMode, QatNetwork } from './qat-network';

/** Golden Stick's QuantDtype; SimQAT accepts INT8 only (ValueError for the others). */
export const QuantDtype = { INT2: 'INT2', INT3: 'INT3', INT4: 'INT4', INT5: 'INT5', INT6: 'INT6', INT7: 'INT7', INT8: 'INT8', UINT8: 'UINT8' } as const;
export type QuantDtype = (typeof QuantDtype)[keyof typeof QuantDtype];
const DTYPES = new Set<string>(Object.values(QuantDtype));

/** Golden Stick raises ValueError for a value of the right type outside what is allowed. */
export class ValueError extends QuantbookError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
    this.name = 'ValueError';
  }
}

type Pair<T> = [T, T];

export interface SimQatConfig {
  quant_delay?: number | number[];
  quant_dtype?: QuantDtype | QuantDtype[];
  per_channel?: boolean | boolean[];
  symmetric?: boolean | boolean[];
  narrow_range?: boolean | boolean[];
  enable_fusion?: boolean;
  freeze_bn?: number;
  bn_fold?: boolean;
  one_conv_fold?: boolean;
}

interface Resolved {
  quantDelay: Pair<number>;
  quantDtype: Pair<QuantDtype>;
  perChannel: Pair<boolean>;
  symmetric: Pair<boolean>;
  narrowRange: Pair<boolean>;
  enableFusion: boolean;
  freezeBn: number;
  bnFold: boolean;
  oneConvFold: boolean;
}

const KEYS = ['quant_delay', 'quant_dtype', 'per_channel', 'symmetric', 'narrow_range', 'enable_fusion', 'freeze_bn', 'bn_fold', 'one_conv_fold'];

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function checkBool(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new TypeError(`${name}: got ${describe(v)}; expected a bool`);
  return v;
}

function checkInt(name: string, v: unknown): number {
  if (!isInt(v)) throw new TypeError(`${name}: got ${describe(v)}; expected an int`);
  if (v < 0) throw new ValueError(`${name}: got ${v}; expected an int ≥ 0`);
  return v;
}

function checkDtype(name: string, v: unknown): QuantDtype {
  if (typeof v !== 'string' || !DTYPES.has(v)) throw new TypeError(`${name}: got ${describe(v)}; expected a QuantDtype`);
  if (v !== QuantDtype.INT8) throw new ValueError(`${name}: got QuantDtype.${v}; only QuantDtype.INT8 is supported`);
  return v as QuantDtype;
}

/** A value or a list/tuple of one or two: (activation, weight). */
function pair<T>(name: string, v: unknown, check: (name: string, x: unknown) => T, typeWord: string): Pair<T> {
  if (Array.isArray(v)) {
    if (v.length > 2) throw new ValueError(`${name}: got ${v.length} elements; expected at most 2 (activation, weight)`);
    if (v.length === 0) throw new ValueError(`${name}: got an empty list; expected ${typeWord} or a list of 1–2`);
    const items = v.map((x, i) => {
      try {
        return check(name, x);
      } catch (e) {
        if (e instanceof TypeError) throw new TypeError(`${name}: element ${i} is ${describe(x)}; expected ${typeWord}`);
        throw e;
      }
    });
    return [items[0], items[items.length - 1]];
  }
  const one = check(name, v);
  return [one, one];
}

function checkActPerChannel(pc: Pair<boolean>): void {
  if (pc[0]) throw new ValueError('per_channel: the activation element (first) must be False; per-channel activations are not supported');
}

export class SimulatedQuantizationAwareTraining {
  private readonly c: Resolved = {
    quantDelay: [0, 0], quantDtype: [QuantDtype.INT8, QuantDtype.INT8], perChannel: [false, false], symmetric: [false, false], narrowRange: [false, false],
    enableFusion: false, freezeBn: 10_000_000, bnFold: false, oneConvFold: true,
  };

  constructor(config: SimQatConfig | null = null) {
    if (config === null || config === undefined) return;
    if (typeof config !== 'object' || Array.isArray(config)) throw new TypeError(`config: got ${describe(config)}; expected a dict`);
    const unknown = Object.keys(config).filter((k) => !KEYS.includes(k));
    if (unknown.length) throw new ValueError(`config: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')}; supported: ${KEYS.join(', ')}`);
    const cfg = config as Record<string, unknown>;
    for (const k of ['bn_fold', 'one_conv_fold', 'enable_fusion']) if (k in cfg) checkBool(k, cfg[k]);
    if ('freeze_bn' in cfg) this.c.freezeBn = checkInt('freeze_bn', cfg.freeze_bn);
    if ('quant_delay' in cfg) this.c.quantDelay = pair('quant_delay', cfg.quant_delay, checkInt, 'an int');
    if ('quant_dtype' in cfg) this.c.quantDtype = pair('quant_dtype', cfg.quant_dtype, checkDtype, 'a QuantDtype');
    if ('per_channel' in cfg) {
      this.c.perChannel = pair('per_channel', cfg.per_channel, checkBool, 'a bool');
      checkActPerChannel(this.c.perChannel);
    }
    if ('symmetric' in cfg) this.c.symmetric = pair('symmetric', cfg.symmetric, checkBool, 'a bool');
    if ('narrow_range' in cfg) this.c.narrowRange = pair('narrow_range', cfg.narrow_range, checkBool, 'a bool');
    if ('enable_fusion' in cfg) this.c.enableFusion = cfg.enable_fusion as boolean;
    if ('bn_fold' in cfg) this.c.bnFold = cfg.bn_fold as boolean;
    if ('one_conv_fold' in cfg) this.c.oneConvFold = cfg.one_conv_fold as boolean;
  }

  set_act_narrow_range(v: boolean): void { this.c.narrowRange[0] = checkBool('act_narrow_range', v); }
  set_act_per_channel(v: boolean): void {
    checkBool('act_per_channel', v);
    if (v) throw new ValueError('act_per_channel: only False is supported');
  }
  set_act_quant_delay(v: number): void { this.c.quantDelay[0] = checkInt('act_quant_delay', v); }
  set_act_quant_dtype(v: QuantDtype): void { this.c.quantDtype[0] = checkDtype('act_quant_dtype', v); }
  set_act_symmetric(v: boolean): void { this.c.symmetric[0] = checkBool('act_symmetric', v); }
  set_bn_fold(v: boolean): void { this.c.bnFold = checkBool('bn_fold', v); }
  set_enable_fusion(v: boolean): void { this.c.enableFusion = checkBool('enable_fusion', v); }
  set_freeze_bn(v: number): void { this.c.freezeBn = checkInt('freeze_bn', v); }
  set_one_conv_fold(v: boolean): void { this.c.oneConvFold = checkBool('one_conv_fold', v); }
  set_weight_narrow_range(v: boolean): void { this.c.narrowRange[1] = checkBool('weight_narrow_range', v); }
  set_weight_per_channel(v: boolean): void { this.c.perChannel[1] = checkBool('weight_per_channel', v); }
  set_weight_quant_delay(v: number): void { this.c.quantDelay[1] = checkInt('weight_quant_delay', v); }
  set_weight_quant_dtype(v: QuantDtype): void { this.c.quantDtype[1] = checkDtype('weight_quant_dtype', v); }
  set_weight_symmetric(v: boolean): void { this.c.symmetric[1] = checkBool('weight_symmetric', v); }

  /** The resolved configuration, as Golden Stick's config dict reads back. */
  get config(): Required<Omit<SimQatConfig, 'quant_delay' | 'quant_dtype' | 'per_channel' | 'symmetric' | 'narrow_range'>> & Record<'quant_delay' | 'quant_dtype' | 'per_channel' | 'symmetric' | 'narrow_range', unknown[]> {
    const c = this.c;
    return {
      quant_delay: [...c.quantDelay], quant_dtype: [...c.quantDtype], per_channel: [...c.perChannel], symmetric: [...c.symmetric], narrow_range: [...c.narrowRange],
      enable_fusion: c.enableFusion, freeze_bn: c.freezeBn, bn_fold: c.bnFold, one_conv_fold: c.oneConvFold,
    };
  }

  /** BN handling the flags select: none without fusion or bn_fold, else one- or two-convolution folding. */
  get foldMode(): BnFoldMode {
    if (!this.c.enableFusion || !this.c.bnFold) return 'none';
    return this.c.oneConvFold ? 'one-conv' : 'two-conv';
  }

  private spec(i: 0 | 1): QuantSpec {
    // int8 grids: symmetric → signed, zero point 0; asymmetric activations as uint8 (the same
    // grid shifted by 128, which ONNX Runtime's integer kernels prefer)
    const signed = i === 1 || this.c.symmetric[0];
    return { numBits: 8, signed, symmetric: this.c.symmetric[i], narrowRange: this.c.narrowRange[i], perChannel: i === 1 && this.c.perChannel[1], channelAxis: i === 1 ? 0 : 1 };
  }

  /** Prepares `network` (an ONNX model) for quantization-aware training. */
  apply(network: Model): QatNetwork {
    if (!(network instanceof Model)) throw new TypeError(`network: got ${describe(network)}; expected a Model (loadModel(...))`);
    return new QatNetwork(network, {
      activation: { spec: this.spec(0), ema: 0.999, quantDelay: this.c.quantDelay[0] },
      weight: { spec: this.spec(1), quantDelay: this.c.quantDelay[1] },
      // Golden Stick's fusion patterns: Conv2d + BatchNorm2d + ReLU, Conv2d + ReLU, Dense +
      // BatchNorm2d + ReLU, Dense + BatchNorm2d, Dense + ReLU (quantized at the ReLU output)
      fusion: this.c.enableFusion,
      fuseDense: this.c.enableFusion,
      fuseRelu: this.c.enableFusion,
      bnFold: this.foldMode,
      freezeBn: this.c.freezeBn,
    });
  }

  /**
   * The trained network as a standard (QDQ ONNX) model for deployment; with `ckptPath`, the
   * checkpoint (written by fit or net.writeCheckpoint) is loaded first.
   */
  convert(netOpt: QatNetwork, ckptPath = ''): Model {
    if (!(netOpt instanceof QatNetwork)) throw new TypeError(`net_opt: got ${describe(netOpt)}; expected the QatNetwork apply() returned`);
    if (typeof ckptPath !== 'string') throw new TypeError(`ckpt_path: got ${describe(ckptPath)}; expected a str`);
    if (ckptPath) {
      if (!fs.existsSync(ckptPath) || !fs.statSync(ckptPath).isFile()) throw new ValueError(`ckpt_path: "${ckptPath}" is not an existing file`);
      netOpt.loadCheckpoint(ckptPath);
    }
    return netOpt.toQdqModel().model;
  }
}
