/**
 * The CNN half of the model corpus: small stand-ins for the classic ImageNet CNNs that old
 * model zoos ship (AlexNet/CaffeNet, VGG, GoogLeNet, ResNet, DenseNet, SqueezeNet, ShuffleNet,
 * MobileNet V1/V2/V3, EfficientNet, FPN/U-Net heads, an MLP), written at the opsets and IR
 * versions those zoos used and with their quirks (initializers listed as inputs, Dropout ratio
 * attributes, BatchNormalization spatial=1, LRN, Sum, BatchNorm as Mul/Add, Clip/Pad/Upsample
 * attributes, Constant-node weights, external data, float16, dynamic batch).
 *
 * Weights are He-initialised from a seed; then every normalisation (BatchNorm, Caffe's Mul/Add,
 * or the conv itself in nets without BN) is set from the statistics of a fixed batch of smooth
 * synthetic images, in topological order, so activations look like a trained network's
 * (normalize.ts). The same bytes on every run on a given machine and ONNX Runtime build (the
 * statistics come from ONNX Runtime's float arithmetic).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType, numberToFloat16Bits } from '../../sdk/onnx/dtype';
import { loadModel } from '../../sdk/onnx/model';
import { AttributeType, ModelProto, NodeProto, TensorProto, encodeModel, newAttribute, newNode, newTensor } from '../../sdk/onnx/proto';
import { makeTensor, readTensorAsFloat32 } from '../../sdk/onnx/tensor';
import { seededNormal } from '../../sdk/util/seeded-random';
import { AttrValue, GraphBuilder } from './builder';
import { NormPoint, float16Tensor, normalizeFromBatchStats, normalizedTensor, smoothImages, toNhwc } from './normalize';
import { CorpusEntry, Feeds } from './types';

/** A tensor while building: its name and its per-image shape (C×H×W, or C when flat). */
interface T { n: string; c: number; h: number; w: number; flat?: boolean }
type Act = 'relu' | 'relu6' | 'hswish' | 'swish' | 'none';
type Gate = 'sigmoid' | 'hsigmoid' | 'hsigmoid-clip';

/** Attributes that ONNX types as float (the builder writes integral numbers as INT). */
const FLOAT_ATTRS = new Set(['min', 'max', 'value', 'alpha', 'beta', 'bias', 'ratio', 'epsilon', 'momentum', 'scales']);

/** The calibration batch: 8 smooth images from a seed no test feed uses. */
const CALIBRATION_IMAGES = 8;
const CALIBRATION_SEED = 1_000_003;

class Net {
  readonly b: GraphBuilder;
  readonly points: NormPoint[] = [];
  private readonly normal: () => number;
  private readonly scalars = new Map<string, string>();

  constructor(name: string, readonly opset: number, readonly batch: number | string, seed: number) {
    this.b = new GraphBuilder(name, seed);
    this.normal = seededNormal(this.b.random);
  }

  /** A node with one output; float-typed attributes written as FLOAT/FLOATS. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, name?: string): string {
    return this.node(op, inputs, attrs, { name })[0];
  }

  node(op: string, inputs: string[], attrs: Record<string, AttrValue>, opts: { name?: string; outputs?: number }): string[] {
    const outs = this.b.node(op, inputs, attrs, opts);
    const node = this.b.nodes[this.b.nodes.length - 1];
    node.attribute = node.attribute.map((a) => {
      if (!FLOAT_ATTRS.has(a.name!)) return a;
      if (a.type === AttributeType.INT) return newAttribute({ name: a.name, type: AttributeType.FLOAT, f: Number(a.i) });
      if (a.type === AttributeType.INTS) return newAttribute({ name: a.name, type: AttributeType.FLOATS, floats: a.ints.map(Number) });
      return a;
    });
    return outs;
  }

  private fresh(base: string): string { return this.b.fresh(base); }

  /** A float32 scalar initializer (shared per value). */
  scalar(v: number): string {
    const key = `f${v}`;
    let name = this.scalars.get(key);
    if (!name) {
      name = this.b.constant(this.fresh('const'), DataType.FLOAT, [], [v]);
      this.scalars.set(key, name);
    }
    return name;
  }

  int64s(values: number[], base = 'shape'): string {
    return this.b.constant(this.fresh(base), DataType.INT64, [values.length], BigInt64Array.from(values.map(BigInt)));
  }

  floats(values: number[], base = 'const'): string {
    return this.b.constant(this.fresh(base), DataType.FLOAT, [values.length], values);
  }

  /** gamma of a normalisation: around 1, channels differ (e^N(0, 0.2²) within [0.65, 1.5]). */
  private gammas(n: number, logits = false): Float32Array {
    return Float32Array.from({ length: n }, () => (logits ? 1.3 + 0.6 * this.b.random() : Math.min(1.5, Math.max(0.65, Math.exp(0.2 * this.normal())))));
  }

  private betas(n: number, logits = false): Float32Array {
    return Float32Array.from({ length: n }, () => Math.max(-0.6, Math.min(0.6, (logits ? 0.3 : 0.25) * this.normal())));
  }

  input(name: string, n: number | string, c: number, h: number, w: number, nhwc = false): T {
    if (!nhwc) return { n: this.b.input(name, DataType.FLOAT, [n, c, h, w]), c, h, w };
    this.b.input(name, DataType.FLOAT, [n, h, w, c]);
    return { n: this.op('Transpose', [name], { perm: [0, 3, 1, 2] }), c, h, w };
  }

  output(t: T): void {
    this.b.output(t.n, DataType.FLOAT, t.flat ? [this.batch, t.c] : [this.batch, t.c, t.h, t.w]);
  }

  /**
   * Conv with He-initialised weights. `norm`: 'linear' or 'logits' makes the conv its own
   * normalisation (weights and bias set from batch statistics; nets without BN); `bias`:
   * false (no bias, a BN follows), true (zeros), or 'constant-of-shape' (zeros from a
   * ConstantOfShape node, as some exporters write it).
   */
  conv(x: T, cout: number, k: number | [number, number], o: { s?: number; p?: number | [number, number]; g?: number; bias?: boolean | 'constant-of-shape'; norm?: 'linear' | 'logits'; name?: string } = {}): T {
    const [kh, kw] = Array.isArray(k) ? k : [k, k];
    const s = o.s ?? 1;
    const [ph, pw] = o.p === undefined ? [kh >> 1, kw >> 1] : Array.isArray(o.p) ? o.p : [o.p, o.p];
    const g = o.g ?? 1;
    const name = o.name ?? this.fresh('conv');
    const fanIn = (x.c / g) * kh * kw;
    const w = this.b.gaussian(`${name}.weight`, [cout, x.c / g, kh, kw], Math.sqrt(2 / fanIn));
    const inputs = [x.n, w];
    const bias = o.bias ?? o.norm !== undefined;
    if (bias === 'constant-of-shape') inputs.push(this.zerosFromShape(cout));
    else if (bias) inputs.push(this.b.constant(`${name}.bias`, DataType.FLOAT, [cout], new Float32Array(cout)));
    const attrs: Record<string, AttrValue> = { kernel_shape: [kh, kw], strides: [s, s], pads: [ph, pw, ph, pw] };
    if (g > 1) attrs.group = g;
    const out = this.op('Conv', inputs, attrs, name);
    if (o.norm) {
      if (bias !== true) throw new Error('a conv that normalises itself needs a bias initializer');
      this.points.push({ kind: 'linear', nodes: [name], output: out, weight: w, bias: inputs[2], weightChannelAxis: 0, gamma: this.gammas(cout, o.norm === 'logits'), beta: this.betas(cout, o.norm === 'logits') });
    }
    return { n: out, c: cout, h: Math.floor((x.h + 2 * ph - kh) / s) + 1, w: Math.floor((x.w + 2 * pw - kw) / s) + 1 };
  }

  private readonly zeroBiases = new Map<number, string>();
  /** A zero bias of `c` channels made by ConstantOfShape (one per channel count). */
  private zerosFromShape(c: number): string {
    let name = this.zeroBiases.get(c);
    if (!name) {
      const shape = this.int64s([c], 'bias_shape');
      name = this.op('ConstantOfShape', [shape], { value: makeTensor('', DataType.FLOAT, [1], [0]) }, this.fresh('zero_bias'));
      this.zeroBiases.set(c, name);
    }
    return name;
  }

  /** ConvTranspose (weights [Cin, Cout, k, k]) with a zero bias; a BN follows. */
  convTranspose(x: T, cout: number, k: number, s: number): T {
    const name = this.fresh('deconv');
    const w = this.b.gaussian(`${name}.weight`, [x.c, cout, k, k], Math.sqrt(2 / ((x.c * k * k) / (s * s))));
    const b = this.b.constant(`${name}.bias`, DataType.FLOAT, [cout], new Float32Array(cout));
    const out = this.op('ConvTranspose', [x.n, w, b], { kernel_shape: [k, k], strides: [s, s] }, name);
    return { n: out, c: cout, h: (x.h - 1) * s + k, w: (x.w - 1) * s + k };
  }

  /** BatchNormalization (spatial=1 written out where the opset has it and `spatial` is asked). */
  bn(x: T, spatial = false): T {
    const name = this.fresh('bn');
    const c = x.c;
    const scale = this.b.constant(`${name}.weight`, DataType.FLOAT, [c], this.gammas(c));
    const bias = this.b.constant(`${name}.bias`, DataType.FLOAT, [c], this.betas(c));
    const mean = this.b.constant(`${name}.running_mean`, DataType.FLOAT, [c], new Float32Array(c));
    const variance = this.b.constant(`${name}.running_var`, DataType.FLOAT, [c], new Float32Array(c).fill(1));
    const attrs: Record<string, AttrValue> = { epsilon: 1e-5, momentum: 0.9 };
    if (spatial && this.opset < 9) attrs.spatial = 1;
    const out = this.op('BatchNormalization', [x.n, scale, bias, mean, variance], attrs, name);
    this.points.push({ kind: 'bn', node: name, input: x.n, output: out, mean, variance });
    return { ...x, n: out };
  }

  /** BatchNorm as a converted Caffe model has it: Mul and Add with per-channel [C,1,1] constants. */
  affine(x: T): T {
    const name = this.fresh('scale');
    const c = x.c;
    const scale = this.b.constant(`${name}.multiplier`, DataType.FLOAT, [c, 1, 1], new Float32Array(c).fill(1));
    const bias = this.b.constant(`${name}.addend`, DataType.FLOAT, [c, 1, 1], new Float32Array(c));
    const mul = this.op('Mul', [x.n, scale], {}, `${name}_mul`);
    const out = this.op('Add', [mul, bias], {}, name);
    this.points.push({ kind: 'affine', nodes: [`${name}_mul`, name], input: x.n, output: out, scale, bias, gamma: this.gammas(c), beta: this.betas(c) });
    return { ...x, n: out };
  }

  clip(x: T, lo: number, hi: number): T {
    if (this.opset < 11) return { ...x, n: this.op('Clip', [x.n], { min: lo, max: hi }) };
    return { ...x, n: this.op('Clip', [x.n, this.scalar(lo), this.scalar(hi)]) };
  }

  act(x: T, kind: Act): T {
    switch (kind) {
      case 'none': return x;
      case 'relu': return { ...x, n: this.op('Relu', [x.n]) };
      case 'relu6': return this.clip(x, 0, 6);
      case 'swish': return this.mul(x, { ...x, n: this.op('Sigmoid', [x.n]) });
      case 'hswish':
        if (this.opset >= 14) return { ...x, n: this.op('HardSwish', [x.n]) };
        return this.mul(x, this.gate(x, 'hsigmoid'));
    }
  }

  /** A gate in [0, 1]: Sigmoid, HardSigmoid(α=1/6, β=1/2), or Clip(x + 3, 0, 6) / 6. */
  gate(x: T, kind: Gate): T {
    if (kind === 'sigmoid') return { ...x, n: this.op('Sigmoid', [x.n]) };
    if (kind === 'hsigmoid') return { ...x, n: this.op('HardSigmoid', [x.n], { alpha: 1 / 6, beta: 0.5 }) };
    const shifted = { ...x, n: this.op('Add', [x.n, this.scalar(3)]) };
    return { ...x, n: this.op('Div', [this.clip(shifted, 0, 6).n, this.scalar(6)]) };
  }

  /** conv (no bias) → BN → activation */
  cba(x: T, cout: number, k: number | [number, number], o: { s?: number; p?: number | [number, number]; g?: number; act?: Act; spatial?: boolean; bias?: boolean | 'constant-of-shape' } = {}): T {
    return this.act(this.bn(this.conv(x, cout, k, { s: o.s, p: o.p, g: o.g, bias: o.bias ?? false }), o.spatial), o.act ?? 'relu');
  }

  maxpool(x: T, k: number, s: number, p = 0): T {
    const attrs: Record<string, AttrValue> = { kernel_shape: [k, k], strides: [s, s] };
    if (p) attrs.pads = [p, p, p, p];
    return { n: this.op('MaxPool', [x.n], attrs), c: x.c, h: Math.floor((x.h + 2 * p - k) / s) + 1, w: Math.floor((x.w + 2 * p - k) / s) + 1 };
  }

  avgpool(x: T, k: number, s: number, p = 0, countIncludePad = false): T {
    const attrs: Record<string, AttrValue> = { kernel_shape: [k, k], strides: [s, s] };
    if (p) attrs.pads = [p, p, p, p];
    if (countIncludePad) attrs.count_include_pad = 1;
    return { n: this.op('AveragePool', [x.n], attrs), c: x.c, h: Math.floor((x.h + 2 * p - k) / s) + 1, w: Math.floor((x.w + 2 * p - k) / s) + 1 };
  }

  gap(x: T): T { return { n: this.op('GlobalAveragePool', [x.n]), c: x.c, h: 1, w: 1 }; }

  lrn(x: T): T { return { ...x, n: this.op('LRN', [x.n], { size: 5, alpha: 1e-4, beta: 0.75, bias: 1 }) }; }

  concat(xs: T[]): T { return { n: this.op('Concat', xs.map((t) => t.n), { axis: 1 }), c: xs.reduce((a, t) => a + t.c, 0), h: xs[0].h, w: xs[0].w }; }

  add(a: T, b: T): T { return { ...a, n: this.op('Add', [a.n, b.n]) }; }

  sum(xs: T[]): T { return { ...xs[0], n: this.op('Sum', xs.map((t) => t.n)) }; }

  mul(a: T, b: T): T { return { ...a, n: this.op('Mul', [a.n, b.n]) }; }

  /** Dropout as the opset writes it: a `ratio` attribute up to opset 11, an input from 12. */
  dropout(x: T, ratio: number): T {
    if (this.opset <= 11) return { ...x, n: this.op('Dropout', [x.n], { ratio }) };
    return { ...x, n: this.op('Dropout', [x.n, this.scalar(ratio)]) };
  }

  flatten(x: T): T { return { n: this.op('Flatten', [x.n]), c: x.c * x.h * x.w, h: 1, w: 1, flat: true }; }

  /** Reshape to [batch, C·H·W] with a shape initializer (old exports spell the batch out). */
  reshapeFlat(x: T, batchDim: number): T {
    return { n: this.op('Reshape', [x.n, this.int64s([batchDim, x.c * x.h * x.w])]), c: x.c * x.h * x.w, h: 1, w: 1, flat: true };
  }

  /** Gemm (weights [out, in], transB=1) that normalises itself (hidden) or gives the logits. */
  gemm(x: T, out: number, norm: 'linear' | 'logits', name = this.fresh('fc')): T {
    const w = this.b.gaussian(`${name}.weight`, [out, x.c], Math.sqrt(2 / x.c));
    const b = this.b.constant(`${name}.bias`, DataType.FLOAT, [out], new Float32Array(out));
    const y = this.op('Gemm', [x.n, w, b], { transB: 1 }, name);
    this.points.push({ kind: 'linear', nodes: [name], output: y, weight: w, bias: b, weightChannelAxis: 0, gamma: this.gammas(out, norm === 'logits'), beta: this.betas(out, norm === 'logits') });
    return { n: y, c: out, h: 1, w: 1, flat: true };
  }

  softmax(x: T, name?: string): T { return { ...x, n: this.op('Softmax', [x.n], {}, name) }; }

  /** Zero padding: the `pads` attribute up to opset 10, an input from 11. */
  pad(x: T, p: number): T {
    const pads = [0, 0, p, p, 0, 0, p, p];
    const n = this.opset < 11 ? this.op('Pad', [x.n], { pads, mode: 'constant', value: 0 }) : this.op('Pad', [x.n, this.int64s(pads, 'pads')], { mode: 'constant' });
    return { ...x, n, h: x.h + 2 * p, w: x.w + 2 * p };
  }

  /**
   * Nearest (or bilinear) ×f upsampling as each opset spells it: Upsample with a `scales`
   * attribute (7–8), Upsample with a scales input (9–10), Resize (11: empty roi tensor; 13+: no roi).
   */
  upsample(x: T, f: number, mode: 'nearest' | 'linear' = 'nearest'): T {
    const scales = [1, 1, f, f];
    let n: string;
    if (this.opset < 9) n = this.op('Upsample', [x.n], { mode, scales });
    else if (this.opset < 11) n = this.op('Upsample', [x.n, this.floats(scales, 'scales')], { mode });
    else {
      const roi = this.opset < 13 ? this.b.constant(this.fresh('roi'), DataType.FLOAT, [0], []) : '';
      const attrs: Record<string, AttrValue> = mode === 'nearest'
        ? { mode, coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' }
        : { mode, coordinate_transformation_mode: 'pytorch_half_pixel' };
      n = this.op('Resize', [x.n, roi, this.floats(scales, 'scales')], attrs);
    }
    return { ...x, n, h: x.h * f, w: x.w * f };
  }

  /** Split along channels: a `split` attribute before opset 13, an input from 13. */
  split(x: T, sizes: number[]): T[] {
    const name = this.fresh('split');
    const outs = this.opset < 13
      ? this.node('Split', [x.n], { axis: 1, split: sizes }, { name, outputs: sizes.length })
      : this.node('Split', [x.n, this.int64s(sizes, 'split_sizes')], { axis: 1 }, { name, outputs: sizes.length });
    return outs.map((n, i) => ({ ...x, n, c: sizes[i] }));
  }

  /** ShuffleNet's channel shuffle: Reshape [N, g, C/g, H, W] → Transpose → Reshape [N, C, H, W]. */
  shuffle(x: T, groups: number): T {
    const batch = this.batch as number;
    const r1 = this.op('Reshape', [x.n, this.int64s([batch, groups, x.c / groups, x.h, x.w])]);
    const t = this.op('Transpose', [r1], { perm: [0, 2, 1, 3, 4] });
    return { ...x, n: this.op('Reshape', [t, this.int64s([batch, x.c, x.h, x.w])]) };
  }

  /** Squeeze-and-excitation: GlobalAveragePool → Conv → act → Conv → gate → Mul. */
  se(x: T, reduced: number, inner: Act, gate: Gate): T {
    const s = this.gap(x);
    const r = this.act(this.conv(s, reduced, 1, { p: 0, bias: true }), inner);
    const e = this.conv(r, x.c, 1, { p: 0, bias: true });
    return this.mul(x, this.gate(e, gate));
  }
}

// ---------------------------------------------------------------------------------------------
// Entries

interface Spec {
  name: string;
  description: string;
  opset: number;
  irVersion: number;
  features: string[];
  inputName: string;
  /** N (a number, or a dim_param for dynamic batch), C, H, W */
  input: [number | string, number, number, number];
  /** batch of `feeds(seed)` where N is dynamic */
  feedBatch?: number;
  nhwc?: boolean;
  fp16?: boolean;
  /** list initializers as graph inputs past IR 3 (IR 3 always lists them) */
  listInitializers?: boolean;
  constantNodes?: boolean;
  externalData?: boolean;
  sqnrFloor?: { static: number; dynamic: number };
  seed: number;
  build(net: Net, x: T): void;
}

/** A corpus entry with what its normalisation test needs. */
export interface CnnEntry extends CorpusEntry {
  /** the tensors each normalisation point sets, in order; their per-channel std is ~gamma ∈ [0.65, 1.9] on the calibration batch */
  normalizedTensors(): string[];
  /** the calibration batch the normalisation ran on, as feeds for the written model */
  calibrationFeeds(): Feeds[];
  /** element type of the model's input and output (float32, or float16 for the fp16 entry) */
  elementType: 'float32' | 'float16';
  /** the same network on `scale`× larger images (the bench's realistic sizes; the layers track their shapes; batch as it was) */
  scaled(scale: number): CnnEntry;
}

function buildPlain(spec: Spec): { model: ModelProto; points: NormPoint[] } {
  const [n, c, h, w] = spec.input;
  const net = new Net(spec.name, spec.opset, n, spec.seed);
  const x = net.input(spec.inputName, n, c, h, w, spec.nhwc);
  spec.build(net, x);
  const model = net.b.model({ opset: spec.opset, irVersion: spec.irVersion, initializersAsInputs: spec.listInitializers });
  return { model, points: net.points };
}

function imageFeeds(spec: Spec, images: Float32Array, batch: number, fp16: boolean): Feeds {
  const [, c, h, w] = spec.input;
  const data = spec.nhwc ? toNhwc(images, batch, c, h, w) : images;
  const dims = spec.nhwc ? [batch, h, w, c] : [batch, c, h, w];
  return { [spec.inputName]: fp16 ? float16Tensor(data, dims) : new ort.Tensor('float32', data, dims) };
}

function calibration(spec: Spec, fp16: boolean): Feeds[] {
  const [n, c, h, w] = spec.input;
  const batch = typeof n === 'number' ? n : CALIBRATION_IMAGES;
  const images = smoothImages(CALIBRATION_IMAGES, c, h, w, CALIBRATION_SEED);
  const feeds: Feeds[] = [];
  for (let i = 0; i < CALIBRATION_IMAGES; i += batch) feeds.push(imageFeeds(spec, images.slice(i * c * h * w, (i + batch) * c * h * w), batch, fp16));
  return feeds;
}

/** Every initializer becomes a Constant node placed just before its first reader (exporters without initializers). */
function toConstantNodes(model: ModelProto): void {
  const g = model.graph!;
  const inits = new Map(g.initializer.map((t) => [t.name!, t]));
  const nodes: NodeProto[] = [];
  const done = new Set<string>();
  let k = 0;
  for (const node of g.node) {
    for (const input of node.input) {
      const t = inits.get(input);
      if (!t || done.has(input)) continue;
      done.add(input);
      const value = newTensor({ data_type: t.data_type, dims: t.dims, raw_data: t.raw_data });
      nodes.push(newNode({ op_type: 'Constant', name: `Constant_${k++}`, input: [], output: [input], attribute: [newAttribute({ name: 'value', type: AttributeType.TENSOR, t: value })] }));
    }
    nodes.push(node);
  }
  g.node = nodes;
  g.initializer = [];
}

function float16Of(t: TensorProto): TensorProto {
  const f = readTensorAsFloat32(t);
  return makeTensor(t.name ?? '', DataType.FLOAT16, t.dims.map(Number), Uint16Array.from(f, (v) => numberToFloat16Bits(v)));
}

/** float32 → float16 everywhere: initializers, Constant/ConstantOfShape tensors, graph inputs and outputs. */
function toFloat16(model: ModelProto): void {
  const g = model.graph!;
  g.initializer = g.initializer.map((t) => (t.data_type === DataType.FLOAT ? float16Of(t) : t));
  for (const node of g.node) {
    node.attribute = node.attribute.map((a) => (a.type === AttributeType.TENSOR && a.t?.data_type === DataType.FLOAT ? newAttribute({ name: a.name, type: AttributeType.TENSOR, t: float16Of(a.t) }) : a));
  }
  for (const v of [...g.input, ...g.output]) {
    if (v.type?.tensor_type?.elem_type === DataType.FLOAT) v.type.tensor_type.elem_type = DataType.FLOAT16;
  }
}

function entry(spec: Spec): CnnEntry {
  const [n, c, h, w] = spec.input;
  const feedBatch = typeof n === 'number' ? n : spec.feedBatch ?? 2;
  return {
    name: spec.name,
    family: 'cnn',
    description: spec.description,
    opset: spec.opset,
    irVersion: spec.irVersion,
    features: spec.features,
    sqnrFloor: spec.sqnrFloor ?? { static: 25, dynamic: 25 },
    elementType: spec.fp16 ? 'float16' : 'float32',
    async write(dir: string): Promise<string> {
      const { model, points } = buildPlain(spec);
      await normalizeFromBatchStats(model, points, calibration(spec, false), { alignConvs: true, seed: spec.seed });
      if (spec.constantNodes) toConstantNodes(model);
      if (spec.fp16) toFloat16(model);
      const file = path.join(dir, `${spec.name}.onnx`);
      if (spec.externalData) loadModel(encodeModel(model)).save(file, { externalData: { sizeThreshold: 1024 } });
      else fs.writeFileSync(file, encodeModel(model));
      return file;
    },
    feeds(seed: number): Feeds {
      return imageFeeds(spec, smoothImages(feedBatch, c, h, w, seed), feedBatch, !!spec.fp16);
    },
    normalizedTensors: () => buildPlain(spec).points.map(normalizedTensor),
    calibrationFeeds: () => calibration(spec, !!spec.fp16),
    scaled: (scale: number) => entry({ ...spec, name: `${spec.name}@${h * scale}px`, input: [n, c, h * scale, w * scale] }),
  };
}

// --- building blocks shared by several entries ------------------------------------------------

/** ResNet BasicBlock: 3×3 conv-BN-ReLU, 3×3 conv-BN, projection shortcut where the shape changes, Add, ReLU. */
function basicBlock(net: Net, x: T, out: number, s: number): T {
  const a = net.bn(net.conv(net.cba(x, out, 3, { s }), out, 3, { bias: false }));
  const sc = s !== 1 || x.c !== out ? net.bn(net.conv(x, out, 1, { s, p: 0, bias: false })) : x;
  return net.act(net.add(a, sc), 'relu');
}

/** A ResNet of BasicBlocks on a 16-channel stem: (channels, stride) per block, then GAP → Flatten → Gemm(10). */
function basicResNet(net: Net, x: T, blocks: number[][]): void {
  let t = net.cba(x, 16, 3);
  for (const [c, s] of blocks) t = basicBlock(net, t, c, s);
  net.output(net.gemm(net.flatten(net.gap(t)), 10, 'logits', 'fc'));
}

/** ResNet Bottleneck (torchvision v1.5: stride on the 3×3). */
function bottleneck(net: Net, x: T, mid: number, out: number, s: number): T {
  let a = net.cba(x, mid, 1, { p: 0 });
  a = net.cba(a, mid, 3, { s });
  a = net.bn(net.conv(a, out, 1, { p: 0, bias: false }));
  const sc = s !== 1 || x.c !== out ? net.bn(net.conv(x, out, 1, { s, p: 0, bias: false })) : x;
  return net.act(net.add(a, sc), 'relu');
}

/** MobileNetV2 inverted residual / MobileNetV3 bneck / EfficientNet MBConv. */
function invertedResidual(net: Net, x: T, o: { expand: number; k: number; out: number; s: number; act: Act; se?: { reduced: number; inner: Act; gate: Gate } }): T {
  let h = o.expand !== x.c ? net.cba(x, o.expand, 1, { p: 0, act: o.act }) : x;
  h = net.cba(h, h.c, o.k, { s: o.s, g: h.c, act: o.act });
  if (o.se) h = net.se(h, o.se.reduced, o.se.inner, o.se.gate);
  h = net.bn(net.conv(h, o.out, 1, { p: 0, bias: false }));
  return o.s === 1 && x.c === o.out ? net.add(x, h) : h;
}

// --- the entries --------------------------------------------------------------------------------

const SPECS: Spec[] = [
  {
    name: 'alexnet-op7-ir3',
    description: 'AlexNet/CaffeNet as the Caffe2 zoo ships it: Conv+Relu+LRN+MaxPool, grouped convs (group=2), Reshape with a shape initializer, Gemm+Relu+Dropout(ratio), Softmax; no BN (conv weights scaled from batch statistics); initializers listed as inputs',
    opset: 7, irVersion: 3, seed: 101, inputName: 'data', input: [1, 3, 64, 64],
    features: ['ir3-initializer-inputs', 'lrn', 'group-conv', 'dropout-ratio', 'reshape-initializer', 'gemm', 'softmax'],
    build(net, x) {
      let t = net.maxpool(net.lrn(net.act(net.conv(x, 32, 7, { s: 2, p: 3, norm: 'linear' }), 'relu')), 3, 2);
      t = net.maxpool(net.lrn(net.act(net.conv(t, 64, 5, { p: 2, g: 2, norm: 'linear' }), 'relu')), 3, 2);
      t = net.act(net.conv(t, 96, 3, { norm: 'linear' }), 'relu');
      t = net.act(net.conv(t, 96, 3, { g: 2, norm: 'linear' }), 'relu');
      t = net.maxpool(net.act(net.conv(t, 64, 3, { g: 2, norm: 'linear' }), 'relu'), 3, 2);
      t = net.reshapeFlat(t, 1);
      t = net.dropout(net.act(net.gemm(t, 128, 'linear'), 'relu'), 0.5);
      t = net.dropout(net.act(net.gemm(t, 128, 'linear'), 'relu'), 0.5);
      net.output(net.softmax(net.gemm(t, 10, 'logits', 'fc8'), 'prob'));
    },
  },
  {
    name: 'caffe-resnet-op7-ir3',
    description: 'ResNet-50-style bottlenecks converted from Caffe: BatchNorm+Scale folded into Mul/Add with [C,1,1] constants, Sum for the skip connections, 6×6 AveragePool as the global pool, Flatten, Gemm, Softmax; initializers listed as inputs',
    opset: 7, irVersion: 3, seed: 102, inputName: 'data', input: [1, 3, 48, 48],
    features: ['ir3-initializer-inputs', 'bn-as-mul-add', 'sum', 'flatten', 'softmax'],
    build(net, x) {
      const cma = (t: T, c: number, k: number, s = 1, relu = true) => {
        const y = net.affine(net.conv(t, c, k, { s, bias: false }));
        return relu ? net.act(y, 'relu') : y;
      };
      const block = (t: T, mid: number, out: number, s: number) => {
        let a = cma(t, mid, 1, s);
        a = cma(a, mid, 3);
        a = cma(a, out, 1, 1, false);
        const sc = s !== 1 || t.c !== out ? cma(t, out, 1, s, false) : t;
        return net.act(net.sum([sc, a]), 'relu');
      };
      let t = net.maxpool(cma(x, 16, 7, 2), 3, 2, 1);
      t = block(t, 8, 32, 1);
      t = block(t, 8, 32, 1);
      t = block(t, 16, 64, 2);
      t = block(t, 16, 64, 1);
      t = net.flatten(net.avgpool(t, t.h, 1));
      net.output(net.softmax(net.gemm(t, 20, 'logits', 'fc1000'), 'prob'));
    },
  },
  {
    name: 'fpn-upsample-op7-ir3',
    description: 'FPN-like segmentation net at opset 7: conv-BN(spatial=1)-Relu backbone, 1×1 laterals, Upsample with a scales attribute, Sum of 2 and of 3 maps, per-pixel logits (12 classes at 1/2 resolution); initializers listed as inputs',
    opset: 7, irVersion: 3, seed: 103, inputName: 'data', input: [1, 3, 64, 64],
    features: ['ir3-initializer-inputs', 'bn-spatial', 'upsample', 'upsample-scales-attribute', 'sum', 'segmentation'],
    build(net, x) {
      const c1 = net.cba(net.cba(x, 16, 3, { s: 2, spatial: true }), 16, 3, { spatial: true });
      const c2 = net.cba(c1, 32, 3, { s: 2, spatial: true });
      const c3 = net.cba(net.cba(c2, 48, 3, { s: 2, spatial: true }), 48, 3, { spatial: true });
      const lateral = (t: T) => net.bn(net.conv(t, 32, 1, { p: 0, bias: true }), true);
      const p3 = lateral(c3);
      const p2 = net.sum([lateral(c2), net.upsample(p3, 2)]);
      const p1 = net.sum([lateral(c1), net.upsample(p2, 2)]);
      const f = net.sum([p1, net.upsample(p2, 2), net.upsample(p3, 4)]);
      const hdn = net.cba(f, 32, 3, { spatial: true });
      net.output(net.conv(hdn, 12, 1, { p: 0, norm: 'logits', name: 'seg_logits' }));
    },
  },
  {
    name: 'vgg-bn-op8-ir3',
    description: 'VGG-BN-style: explicit Pad (pads attribute) before each 3×3 conv, BatchNormalization with spatial=1, MaxPool, Flatten, Gemm+Relu+Dropout(ratio) ×2, Gemm; initializers listed as inputs',
    opset: 8, irVersion: 3, seed: 104, inputName: 'data', input: [1, 3, 32, 32],
    features: ['ir3-initializer-inputs', 'bn-spatial', 'pad-attribute', 'dropout-ratio', 'flatten', 'gemm'],
    build(net, x) {
      let t = x;
      for (const c of [16, 16, 0, 32, 32, 0, 64, 64, 0]) {
        t = c === 0 ? net.maxpool(t, 2, 2) : net.act(net.bn(net.conv(net.pad(t, 1), c, 3, { p: 0, bias: true }), true), 'relu');
      }
      t = net.flatten(t);
      t = net.dropout(net.act(net.gemm(t, 128, 'linear'), 'relu'), 0.5);
      t = net.dropout(net.act(net.gemm(t, 128, 'linear'), 'relu'), 0.5);
      net.output(net.gemm(t, 10, 'logits', 'classifier'));
    },
  },
  {
    name: 'squeezenet-op8-ir3',
    description: 'SqueezeNet 1.1-style: fire modules (1×1 squeeze, 1×1 and 3×3 expand → Concat), MaxPool, Dropout(ratio), 1×1 classifier conv + Relu, GlobalAveragePool, Flatten, Softmax; no BN (conv weights scaled from batch statistics); initializers listed as inputs',
    opset: 8, irVersion: 3, seed: 105, inputName: 'data', input: [1, 3, 64, 64],
    features: ['ir3-initializer-inputs', 'concat', 'dropout-ratio', 'flatten', 'softmax'],
    build(net, x) {
      const cr = (t: T, c: number, k: number, s = 1) => net.act(net.conv(t, c, k, { s, p: k === 3 && s === 1 ? 1 : 0, norm: 'linear' }), 'relu');
      const fire = (t: T, sq: number, e: number) => {
        const s = cr(t, sq, 1);
        return net.concat([cr(s, e, 1), cr(s, e, 3)]);
      };
      let t = net.maxpool(cr(x, 32, 3, 2), 3, 2);
      t = fire(fire(t, 8, 32), 8, 32);
      t = net.maxpool(t, 3, 2);
      t = fire(fire(t, 16, 48), 16, 48);
      t = net.maxpool(t, 3, 2);
      t = fire(fire(t, 24, 64), 24, 64);
      t = net.dropout(t, 0.5);
      t = net.act(net.conv(t, 20, 1, { p: 0, norm: 'logits', name: 'conv10' }), 'relu');
      net.output(net.softmax(net.flatten(net.gap(t)), 'softmaxout'));
    },
  },
  {
    name: 'googlenet-op9-ir3',
    description: 'GoogLeNet/Inception-v1-style: 7×7 stem, LRN, inception modules (1×1 | 1×1→3×3 | 1×1→5×5 | 3×3 MaxPool→1×1 → Concat), AveragePool, Dropout(ratio), Gemm, Softmax; no BN (conv weights scaled from batch statistics); opset 9 with IR 3 and initializers listed as inputs',
    opset: 9, irVersion: 3, seed: 106, inputName: 'data_0', input: [1, 3, 64, 64],
    features: ['ir3-initializer-inputs', 'lrn', 'inception', 'concat', 'dropout-ratio', 'softmax'],
    build(net, x) {
      const cr = (t: T, c: number, k: number, s = 1) => net.act(net.conv(t, c, k, { s, norm: 'linear' }), 'relu');
      const inception = (t: T, c1: number, c3r: number, c3: number, c5r: number, c5: number, pp: number) =>
        net.concat([cr(t, c1, 1), cr(cr(t, c3r, 1), c3, 3), cr(cr(t, c5r, 1), c5, 5), cr(net.maxpool(t, 3, 1, 1), pp, 1)]);
      let t = net.lrn(net.maxpool(cr(x, 16, 7, 2), 3, 2));
      t = net.maxpool(net.lrn(cr(cr(t, 16, 1), 48, 3)), 3, 2);
      t = inception(t, 16, 24, 32, 4, 8, 8);
      t = inception(t, 32, 32, 48, 8, 24, 16);
      t = net.maxpool(t, 3, 2);
      t = inception(t, 48, 24, 52, 4, 12, 16);
      t = net.flatten(net.dropout(net.avgpool(t, t.h, 1), 0.4));
      net.output(net.softmax(net.gemm(t, 50, 'logits', 'loss3_classifier'), 'prob_1'));
    },
  },
  {
    name: 'shufflenet-v1-op9-ir3',
    description: 'ShuffleNet-v1-style (g=3): grouped 1×1 convs, channel shuffle as Reshape-Transpose-Reshape with constant 5-D shapes, depthwise 3×3, Add (stride 1) or Concat with AveragePool (stride 2); opset 9 with IR 3 and initializers listed as inputs',
    opset: 9, irVersion: 3, seed: 107, inputName: 'gpu_0/data_0', input: [1, 3, 64, 64],
    features: ['ir3-initializer-inputs', 'group-conv', 'channel-shuffle', 'depthwise', 'concat'],
    build(net, x) {
      const g = 3;
      const unit = (t: T, out: number, s: number) => {
        const branchOut = s === 2 ? out - t.c : out;
        const mid = branchOut / 4;
        let a = net.cba(t, mid, 1, { p: 0, g });
        a = net.shuffle(a, g);
        a = net.bn(net.conv(a, mid, 3, { s, g: mid, bias: false }));
        a = net.bn(net.conv(a, branchOut, 1, { p: 0, g, bias: false }));
        return net.act(s === 2 ? net.concat([net.avgpool(t, 3, 2, 1), a]) : net.add(t, a), 'relu');
      };
      let t = net.maxpool(net.cba(x, 24, 3, { s: 2 }), 3, 2, 1);
      t = unit(unit(t, 60, 2), 60, 1);
      t = unit(unit(t, 120, 2), 120, 1);
      net.output(net.gemm(net.flatten(net.gap(t)), 10, 'logits', 'fc'));
    },
  },
  {
    name: 'resnet-basic-op9-ir4',
    description: 'ResNet-18-style (BasicBlocks, projection shortcuts, Add skips, GlobalAveragePool, Flatten, Gemm), exported by an early PyTorch with keep_initializers_as_inputs: IR 4 but every initializer still listed as a graph input',
    opset: 9, irVersion: 4, seed: 108, inputName: 'input.1', input: [1, 3, 32, 32], listInitializers: true,
    features: ['initializer-inputs-ir4', 'resnet-basic', 'flatten'],
    build(net, x) {
      basicResNet(net, x, [[16, 1], [16, 1], [32, 2], [32, 1], [64, 2], [64, 1]]);
    },
  },
  {
    name: 'fpn-upsample-op9-ir4',
    description: 'FPN-like segmentation net at opset 9: conv-BN-Relu backbone, 1×1 laterals, Upsample with a scales input, Add merges, Concat of the pyramid, per-pixel logits (8 classes at 1/2 resolution)',
    opset: 9, irVersion: 4, seed: 109, inputName: 'input', input: [1, 3, 64, 64],
    features: ['upsample', 'upsample-scales-input', 'concat', 'segmentation'],
    build(net, x) {
      const c1 = net.cba(x, 16, 3, { s: 2 });
      const c2 = net.cba(net.cba(c1, 32, 3, { s: 2 }), 32, 3);
      const c3 = net.cba(net.cba(c2, 64, 3, { s: 2 }), 64, 3);
      const lateral = (t: T) => net.bn(net.conv(t, 24, 1, { p: 0, bias: false }));
      const p3 = lateral(c3);
      const p2 = net.add(lateral(c2), net.upsample(p3, 2));
      const p1 = net.add(lateral(c1), net.upsample(p2, 2));
      const f = net.concat([p1, net.upsample(net.cba(p2, 16, 3), 2), net.upsample(net.cba(p3, 16, 3), 4)]);
      net.output(net.conv(net.cba(f, 32, 3), 8, 1, { p: 0, norm: 'logits', name: 'seg_logits' }));
    },
  },
  {
    name: 'mobilenetv2-op10-ir5',
    description: 'MobileNetV2-style: inverted residuals (1×1 expand, depthwise 3×3, linear 1×1 project, Add skips), ReLU6 as Clip with min/max attributes, GlobalAveragePool, Reshape with a shape initializer, Gemm to 100 classes',
    opset: 10, irVersion: 5, seed: 110, inputName: 'input', input: [1, 3, 64, 64],
    features: ['depthwise', 'clip-attributes', 'inverted-residual', 'reshape-initializer'],
    build(net, x) {
      let t = net.cba(x, 16, 3, { s: 2, act: 'relu6' });
      for (const [e, c, n, s] of [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 2, 2], [4, 32, 2, 2]]) {
        for (let i = 0; i < n; i++) t = invertedResidual(net, t, { expand: t.c * e, k: 3, out: c, s: i === 0 ? s : 1, act: 'relu6' });
      }
      t = net.cba(t, 128, 1, { p: 0, act: 'relu6' });
      net.output(net.gemm(net.reshapeFlat(net.gap(t), 1), 100, 'logits', 'classifier'));
    },
  },
  {
    name: 'densenet-op10-ir5',
    description: 'DenseNet-BC-style: dense blocks of BN-Relu-Conv1×1-BN-Relu-Conv3×3 layers growing by Concat (growth 8), transitions BN-Relu-Conv1×1 + AveragePool 2×2, final BN-Relu-GlobalAveragePool, Flatten, Gemm',
    opset: 10, irVersion: 5, seed: 111, inputName: 'data', input: [1, 3, 32, 32],
    features: ['concat', 'dense-block', 'avgpool', 'flatten'],
    build(net, x) {
      const brc = (t: T, c: number, k: number) => net.conv(net.act(net.bn(t), 'relu'), c, k, { bias: false });
      const block = (t: T) => {
        for (let i = 0; i < 4; i++) t = net.concat([t, brc(brc(t, 32, 1), 8, 3)]);
        return t;
      };
      const transition = (t: T) => net.avgpool(brc(t, Math.floor(t.c / 2), 1), 2, 2);
      let t = net.conv(x, 16, 3, { bias: false });
      t = transition(block(t));
      t = transition(block(t));
      t = net.act(net.bn(block(t)), 'relu');
      net.output(net.gemm(net.flatten(net.gap(t)), 10, 'logits', 'classifier'));
    },
  },
  {
    name: 'efficientnet-op11-ir6',
    description: 'EfficientNet-B0-style: MBConv blocks (expand, depthwise 3×3/5×5, SE with Swish and Sigmoid gate, linear project, Add skips), Swish as x*Sigmoid(x), GlobalAveragePool, Flatten, Dropout(ratio), Gemm to 100 classes',
    opset: 11, irVersion: 6, seed: 112, inputName: 'images', input: [1, 3, 64, 64],
    features: ['depthwise', 'se-block', 'swish', 'dropout-ratio', 'inverted-residual'],
    build(net, x) {
      let t = net.cba(x, 16, 3, { s: 2, act: 'swish' });
      for (const [e, k, c, s] of [[1, 3, 16, 1], [4, 3, 24, 2], [4, 3, 24, 1], [4, 5, 40, 2], [4, 5, 40, 1], [4, 3, 64, 2]]) {
        t = invertedResidual(net, t, { expand: t.c * e, k, out: c, s, act: 'swish', se: { reduced: Math.max(4, t.c / 4), inner: 'swish', gate: 'sigmoid' } });
      }
      t = net.cba(t, 192, 1, { p: 0, act: 'swish' });
      net.output(net.gemm(net.dropout(net.flatten(net.gap(t)), 0.2), 100, 'logits', 'classifier'));
    },
  },
  {
    name: 'shufflenet-v2-op11-ir6',
    description: 'ShuffleNet-v2-style: Split (split attribute) into halves, 1×1-depthwise-1×1 branch, Concat, channel shuffle as Reshape-Transpose-Reshape; stride-2 units with two branches; GlobalAveragePool, Flatten, Gemm',
    opset: 11, irVersion: 6, seed: 113, inputName: 'input', input: [1, 3, 64, 64],
    features: ['split', 'channel-shuffle', 'depthwise', 'concat'],
    build(net, x) {
      const dw = (t: T, s: number) => net.bn(net.conv(t, t.c, 3, { s, g: t.c, bias: false }));
      const right = (t: T, half: number, s: number) => net.cba(dw(net.cba(t, half, 1, { p: 0 }), s), half, 1, { p: 0 });
      const unit1 = (t: T) => {
        const [a, b] = net.split(t, [t.c / 2, t.c / 2]);
        return net.shuffle(net.concat([a, right(b, t.c / 2, 1)]), 2);
      };
      const unit2 = (t: T, out: number) => net.shuffle(net.concat([net.cba(dw(t, 2), out / 2, 1, { p: 0 }), right(t, out / 2, 2)]), 2);
      let t = net.maxpool(net.cba(x, 24, 3, { s: 2 }), 3, 2, 1);
      t = unit1(unit2(t, 48));
      t = unit1(unit1(unit2(t, 96)));
      t = net.cba(t, 128, 1, { p: 0 });
      net.output(net.gemm(net.flatten(net.gap(t)), 10, 'logits', 'fc'));
    },
  },
  {
    name: 'fpn-resize-op11-ir6',
    description: 'Semantic-FPN-like segmentation net at opset 11: ResNet BasicBlock backbone, 1×1 laterals, nearest Resize (roi as an empty tensor, scales input) for the top-down path, Add merges, bilinear Resize of the 21-class logits back to input size',
    opset: 11, irVersion: 6, seed: 114, inputName: 'input', input: [1, 3, 48, 48],
    features: ['resize', 'resize-roi-empty', 'resnet-basic', 'segmentation'],
    build(net, x) {
      const c1 = basicBlock(net, net.cba(x, 16, 3, { s: 2 }), 16, 1);
      const c2 = basicBlock(net, c1, 32, 2);
      const c3 = basicBlock(net, c2, 48, 2);
      const lateral = (t: T) => net.bn(net.conv(t, 32, 1, { p: 0, bias: false }));
      const p3 = lateral(c3);
      const p2 = net.add(lateral(c2), net.upsample(p3, 2));
      const p1 = net.add(lateral(c1), net.upsample(p2, 2));
      const logits = net.conv(net.cba(p1, 32, 3), 21, 1, { p: 0, norm: 'logits', name: 'seg_logits' });
      net.output(net.upsample(logits, 2, 'linear'));
    },
  },
  {
    name: 'mobilenetv3-op12-ir7',
    description: 'MobileNetV3-Small-style as exported before HardSwish existed: HardSwish as x*HardSigmoid(x), SE blocks GlobalAveragePool→Conv→Relu→Conv→hard sigmoid as Clip(x+3,0,6)/6→Mul, depthwise 3×3/5×5, 1×1 head conv on the pooled features, Dropout with a ratio input, Gemm to 100 classes',
    opset: 12, irVersion: 7, seed: 115, inputName: 'input', input: [1, 3, 64, 64],
    features: ['depthwise', 'se-block', 'hardswish', 'hardsigmoid-clip', 'dropout-ratio-input', 'inverted-residual'],
    build(net, x) {
      let t = net.cba(x, 16, 3, { s: 2, act: 'hswish' });
      const cfg: Array<[number, number, number, boolean, Act, number]> = [
        [3, 16, 16, true, 'relu', 2], [3, 64, 24, false, 'relu', 2], [3, 72, 24, false, 'relu', 1], [5, 96, 40, true, 'hswish', 2], [5, 120, 40, true, 'hswish', 1],
      ];
      for (const [k, e, c, se, act, s] of cfg) t = invertedResidual(net, t, { expand: e, k, out: c, s, act, se: se ? { reduced: Math.max(8, e / 4), inner: 'relu', gate: 'hsigmoid-clip' } : undefined });
      t = net.gap(net.cba(t, 240, 1, { p: 0, act: 'hswish' }));
      t = net.act(net.conv(t, 256, 1, { p: 0, norm: 'linear' }), 'hswish');
      net.output(net.gemm(net.dropout(net.flatten(t), 0.2), 100, 'logits', 'classifier'));
    },
  },
  {
    name: 'mobilenetv1-tf-op12-ir7',
    description: 'MobileNetV1-style as a TensorFlow conversion writes it: NHWC input with a Transpose, every weight from a Constant node (no initializers), conv biases from ConstantOfShape (zeros), BatchNormalization, ReLU6 as Clip with min/max inputs, depthwise-separable convs, Reshape, Gemm, Softmax',
    opset: 12, irVersion: 7, seed: 116, inputName: 'input_1', input: [1, 3, 64, 64], nhwc: true, constantNodes: true,
    features: ['constant-node-weights', 'constant-of-shape', 'nhwc-input', 'depthwise', 'reshape-initializer', 'softmax'],
    build(net, x) {
      const o = { act: 'relu6' as Act, bias: 'constant-of-shape' as const };
      let t = net.cba(x, 16, 3, { s: 2, ...o });
      for (const [c, s] of [[32, 1], [64, 2], [64, 1], [128, 2], [128, 1]]) {
        t = net.cba(t, t.c, 3, { s, g: t.c, ...o });
        t = net.cba(t, c, 1, { p: 0, ...o });
      }
      net.output(net.softmax(net.gemm(net.reshapeFlat(net.gap(t), 1), 10, 'logits', 'predictions'), 'Softmax'));
    },
  },
  {
    name: 'resnet50-extdata-op13-ir7',
    description: 'ResNet-50-style (torchvision Bottlenecks, stride on the 3×3, projection shortcuts, Add skips, GlobalAveragePool, Flatten, Gemm to 100 classes) saved with external data: tensors of 1 KiB or more in resnet50-extdata-op13-ir7.onnx.data',
    opset: 13, irVersion: 7, seed: 117, inputName: 'input', input: [1, 3, 64, 64], externalData: true,
    features: ['external-data', 'resnet-bottleneck', 'flatten'],
    build(net, x) {
      let t = net.maxpool(net.cba(x, 32, 7, { s: 2 }), 3, 2, 1);
      for (const [mid, out, s] of [[16, 64, 1], [16, 64, 1], [32, 128, 2], [32, 128, 1], [64, 256, 2], [64, 256, 1]]) t = bottleneck(net, t, mid, out, s);
      net.output(net.gemm(net.flatten(net.gap(t)), 100, 'logits', 'fc'));
    },
  },
  {
    name: 'inception-bn-op13-ir7',
    description: 'Inception-v3/BN-Inception-style on a batch of 2: every conv BN-Relu; mixed blocks (1×1 | 1×1→3×3 | 1×1→3×3→3×3 | AveragePool→1×1 → Concat), a grid reduction (stride-2 3×3 | 1×1→3×3→3×3 s2 | MaxPool → Concat), GlobalAveragePool, Flatten, Gemm',
    opset: 13, irVersion: 7, seed: 118, inputName: 'input', input: [2, 3, 48, 48],
    features: ['inception', 'concat', 'batch-2'],
    build(net, x) {
      const mixed = (t: T, c1: number, c3r: number, c3: number, cdr: number, cd: number, pp: number) => net.concat([
        net.cba(t, c1, 1), net.cba(net.cba(t, c3r, 1), c3, 3), net.cba(net.cba(net.cba(t, cdr, 1), cd, 3), cd, 3), net.cba(net.avgpool(t, 3, 1, 1, true), pp, 1),
      ]);
      let t = net.maxpool(net.cba(net.cba(x, 24, 3, { s: 2 }), 32, 3), 3, 2);
      t = mixed(t, 16, 16, 24, 8, 12, 8);
      t = mixed(t, 24, 24, 32, 12, 16, 16);
      t = net.concat([net.cba(t, 48, 3, { s: 2, p: 0 }), net.cba(net.cba(net.cba(t, 16, 1), 24, 3), 24, 3, { s: 2, p: 0 }), net.maxpool(t, 3, 2)]);
      t = mixed(t, 32, 24, 48, 16, 24, 24);
      net.output(net.gemm(net.flatten(net.gap(t)), 20, 'logits', 'fc'));
    },
  },
  {
    name: 'resnet-fp16-op17-ir8',
    description: 'ResNet-style BasicBlock net converted to float16 throughout: float16 input, weights, BN constants and output (no Casts; ONNX Runtime CPU computes it through its own fp16 kernels/casts)',
    opset: 17, irVersion: 8, seed: 119, inputName: 'input', input: [1, 3, 32, 32], fp16: true,
    features: ['fp16', 'resnet-basic', 'flatten'],
    build(net, x) {
      basicResNet(net, x, [[16, 1], [32, 2], [32, 1], [64, 2]]);
    },
  },
  {
    name: 'mobilenetv3-op17-ir8',
    description: 'MobileNetV3-Small-style at opset 17: HardSwish and HardSigmoid operators, SE blocks GlobalAveragePool→Conv→Relu→Conv→HardSigmoid→Mul, depthwise 3×3/5×5, 1×1 head conv on the pooled features, Flatten, Gemm to 50 classes',
    opset: 17, irVersion: 8, seed: 120, inputName: 'input', input: [1, 3, 64, 64],
    features: ['depthwise', 'se-block', 'hardswish', 'hardsigmoid', 'inverted-residual'],
    build(net, x) {
      let t = net.cba(x, 16, 3, { s: 2, act: 'hswish' });
      const cfg: Array<[number, number, number, boolean, Act, number]> = [
        [3, 16, 16, true, 'relu', 2], [3, 72, 24, false, 'relu', 2], [3, 88, 24, false, 'relu', 1], [5, 96, 40, true, 'hswish', 2], [5, 240, 40, true, 'hswish', 1], [5, 120, 48, true, 'hswish', 1],
      ];
      for (const [k, e, c, se, act, s] of cfg) t = invertedResidual(net, t, { expand: e, k, out: c, s, act, se: se ? { reduced: Math.max(8, e / 4), inner: 'relu', gate: 'hsigmoid' } : undefined });
      t = net.gap(net.cba(t, 288, 1, { p: 0, act: 'hswish' }));
      t = net.act(net.conv(t, 256, 1, { p: 0, norm: 'linear' }), 'hswish');
      net.output(net.gemm(net.flatten(t), 50, 'logits', 'classifier'));
    },
  },
  {
    name: 'unet-convtranspose-op17-ir8',
    description: 'U-Net-style segmentation net: conv-BN-Relu encoder with MaxPool, ConvTranspose 2×2 stride-2 upsampling + BN-Relu, Concat skips, per-pixel logits (10 classes at input resolution)',
    opset: 17, irVersion: 8, seed: 121, inputName: 'input', input: [1, 3, 48, 48],
    features: ['conv-transpose', 'concat', 'segmentation'],
    build(net, x) {
      const e1 = net.cba(net.cba(x, 16, 3), 16, 3);
      const e2 = net.cba(net.cba(net.maxpool(e1, 2, 2), 32, 3), 32, 3);
      const e3 = net.cba(net.cba(net.maxpool(e2, 2, 2), 64, 3), 64, 3);
      const up = (t: T, c: number) => net.act(net.bn(net.convTranspose(t, c, 2, 2)), 'relu');
      const d2 = net.cba(net.cba(net.concat([up(e3, 32), e2]), 32, 3), 32, 3);
      const d1 = net.cba(net.concat([up(d2, 16), e1]), 16, 3);
      net.output(net.conv(d1, 10, 1, { p: 0, norm: 'logits', name: 'seg_logits' }));
    },
  },
  {
    name: 'preact-resnet-dynbatch-op21-ir10',
    description: 'Pre-activation ResNet (BN-Relu-Conv blocks, projection shortcuts, Add) with a dynamic batch dimension N on input and output, as a recent exporter writes it at opset 21 / IR 10; feeds use N=2',
    opset: 21, irVersion: 10, seed: 122, inputName: 'input', input: ['N', 3, 32, 32], feedBatch: 2,
    features: ['dynamic-batch', 'pre-activation', 'flatten'],
    build(net, x) {
      const br = (t: T) => net.act(net.bn(t), 'relu');
      const block = (t: T, out: number, s: number) => {
        const pre = br(t);
        const h = net.conv(br(net.conv(pre, out, 3, { s, bias: false })), out, 3, { bias: false });
        const sc = s !== 1 || t.c !== out ? net.conv(pre, out, 1, { s, p: 0, bias: false }) : t;
        return net.add(h, sc);
      };
      let t = net.conv(x, 16, 3, { bias: false });
      for (const [c, s] of [[16, 1], [32, 2], [32, 1], [64, 2], [64, 1]]) t = block(t, c, s);
      net.output(net.gemm(net.flatten(net.gap(br(t))), 10, 'logits', 'fc'));
    },
  },
  {
    name: 'mlp-op21-ir10',
    description: 'Gemm-only MLP on flattened 3×32×32 images (batch 2): Flatten, Gemm+Relu ×2, Gemm to 10 classes; no convolutions at all',
    opset: 21, irVersion: 10, seed: 123, inputName: 'input', input: [2, 3, 32, 32],
    features: ['gemm-only', 'flatten', 'batch-2'],
    build(net, x) {
      let t = net.flatten(x);
      t = net.act(net.gemm(t, 96, 'linear'), 'relu');
      t = net.act(net.gemm(t, 64, 'linear'), 'relu');
      net.output(net.gemm(t, 10, 'logits', 'logits'));
    },
  },
];

export const CNN_CORPUS: CnnEntry[] = SPECS.map(entry);
