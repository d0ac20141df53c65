/**
 * Realistic activation statistics for corpus models built with random weights: smooth
 * synthetic images (a few low-frequency sinusoids per channel, not white noise) and
 * `normalizeFromBatchStats`, which walks the model's normalisation points in topological order,
 * runs the model in ONNX Runtime on a fixed calibration batch, reads what each point sees and
 * sets its constants so the output is about zero-mean, unit-variance per channel (times a
 * per-channel gamma drawn around 1, plus a beta drawn around 0) — what a trained network's
 * BatchNorm does on its own data. Deterministic: one thread, fixed inputs, fixed order.
 */
import * as ort from 'onnxruntime-node';
import { DataType, numberToFloat16Bits } from '../../sdk/onnx/dtype';
import { GraphProto, ModelProto, NodeProto, encodeModel } from '../../sdk/onnx/proto';
import { ConvGeometry, alignConvToData, alignable } from './align';
import { makeTensor, readTensorAsFloat32 } from '../../sdk/onnx/tensor';
import { seededNormal, seededRandom } from '../../sdk/util/seeded-random';
import { valueInfo } from './builder';
import { Feeds } from './types';

/**
 * `n` images of `c`×`h`×`w` (NCHW, float32): per image, three sinusoidal waves shared by all
 * channels with per-channel gains (channels correlate, as RGB does), one wave of each
 * channel's own, a per-channel offset and a little noise. Values are roughly within ±2, like
 * ImageNet-normalised pixels. The same seed gives the same images on every machine.
 */
export function smoothImages(n: number, c: number, h: number, w: number, seed: number): Float32Array {
  const random = seededRandom((Math.imul(seed + 1, 0x9e3779b1) ^ 0x5bd1e995) >>> 0);
  const normal = seededNormal(random);
  const out = new Float32Array(n * c * h * w);
  // a 1/f spectrum, as natural images have: a few broad shapes and many finer details. Smooth
  // images alone (a handful of sinusoids of 1–3 cycles) make every first-layer channel a mix of
  // the same three signals; a random network then amplifies the small differences between them,
  // and any perturbation with them (measured: 11 dB SQNR from one 8-bit Conv of AlexNet).
  const wave = () => {
    const f = 0.5 + 15 * random() ** 2;
    const angle = 2 * Math.PI * random();
    return { fx: f * Math.cos(angle), fy: f * Math.sin(angle), phase: random() * 2 * Math.PI, amp: 1.2 / (0.6 + f) };
  };
  for (let i = 0; i < n; i++) {
    const shared = Array.from({ length: 10 }, wave);
    for (let ch = 0; ch < c; ch++) {
      const gains = shared.map(() => 0.5 + 0.7 * random());
      const own = [wave(), wave(), wave()];
      const offset = 0.3 * normal();
      const base = (i * c + ch) * h * w;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          let v = offset;
          for (const o of own) v += 0.6 * o.amp * Math.sin(2 * Math.PI * (o.fx * x / w + o.fy * y / h) + o.phase);
          for (let k = 0; k < shared.length; k++) {
            const s = shared[k];
            v += gains[k] * s.amp * Math.sin(2 * Math.PI * (s.fx * x / w + s.fy * y / h) + s.phase);
          }
          out[base + y * w + x] = v + 0.1 * normal();
        }
      }
    }
  }
  return out;
}

/** NCHW → NHWC (for models that take channels-last input). */
export function toNhwc(data: Float32Array, n: number, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < n; i++) for (let ch = 0; ch < c; ch++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    out[((i * h + y) * w + x) * c + ch] = data[((i * c + ch) * h + y) * w + x];
  }
  return out;
}

/** float32 values as an ORT float16 tensor. */
export function float16Tensor(data: Float32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float16', Uint16Array.from(data, (v) => numberToFloat16Bits(v)), dims);
}

/** A tensor's values as float32 (float16 decoded). */
export function tensorFloats(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') {
    const bits = t.data as Uint16Array;
    const f = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) f[i] = halfToFloat(bits[i]);
    return f;
  }
  throw new Error(`tensor type ${t.type}: expected float32 or float16`);
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** Per-channel (axis 1) mean and variance accumulated over batches, in float64. */
export class ChannelStats {
  private sum?: Float64Array;
  private sumSq?: Float64Array;
  private count = 0;

  add(t: ort.Tensor): void {
    const dims = t.dims.map(Number);
    if (dims.length < 2) throw new Error(`per-channel statistics need rank ≥ 2, got [${dims}]`);
    const data = tensorFloats(t);
    const [n, c] = dims;
    const inner = dims.slice(2).reduce((a, b) => a * b, 1);
    this.sum ??= new Float64Array(c);
    this.sumSq ??= new Float64Array(c);
    if (this.sum.length !== c) throw new Error(`channel count changed: ${this.sum.length} → ${c}`);
    for (let i = 0; i < n; i++) {
      for (let ch = 0; ch < c; ch++) {
        const base = (i * c + ch) * inner;
        let s = 0;
        let s2 = 0;
        for (let k = 0; k < inner; k++) {
          const v = data[base + k];
          s += v;
          s2 += v * v;
        }
        this.sum[ch] += s;
        this.sumSq[ch] += s2;
      }
    }
    this.count += n * inner;
  }

  get channels(): number { return this.sum?.length ?? 0; }

  mean(): Float64Array { return this.sum!.map((s) => s / this.count); }

  variance(): Float64Array {
    const m = this.mean();
    return this.sumSq!.map((s2, c) => Math.max(0, s2 / this.count - m[c] * m[c]));
  }

  std(): Float64Array { return this.variance().map(Math.sqrt); }
}

/**
 * A place where a trained network normalises its activations, and the constants that set it.
 * - `bn`: a BatchNormalization node; running mean/var are set to what its input shows.
 * - `affine`: BatchNorm written as Mul then Add with per-channel constants (converted Caffe
 *   models); the constants become gamma/std and beta − mean·gamma/std.
 * - `linear`: a Conv/ConvTranspose/Gemm (or MatMul+Add) without a norm after it: its weights
 *   are scaled per output channel and its bias shifted so its output has std gamma, mean beta.
 */
export type NormPoint =
  | { kind: 'bn'; node: string; input: string; output: string; mean: string; variance: string }
  | { kind: 'affine'; nodes: string[]; input: string; output: string; scale: string; bias: string; gamma: Float32Array; beta: Float32Array }
  | { kind: 'linear'; nodes: string[]; output: string; weight: string; bias: string; weightChannelAxis: number; gamma: Float32Array; beta: Float32Array };

/** The tensor each point normalises (the one whose per-channel std should be near gamma). */
export function normalizedTensor(p: NormPoint): string {
  return p.output;
}

function observed(p: NormPoint): string {
  return p.kind === 'linear' ? p.output : p.input;
}

function mutated(p: NormPoint): string[] {
  return p.kind === 'bn' ? [p.node] : p.nodes;
}

/** `model` with extra graph outputs (untyped shape, element type `type`), as bytes. */
export function withOutputs(model: ModelProto, names: string[], type: DataType = DataType.FLOAT): Uint8Array {
  const graph = model.graph!;
  const have = new Set(graph.output.map((o) => o.name));
  const extra = [...new Set(names)].filter((n) => !have.has(n)).map((n) => valueInfo(n, type));
  return encodeModel({ ...model, graph: { ...graph, output: [...graph.output, ...extra] } as GraphProto } as ModelProto);
}

/**
 * Runs `model` (bytes) on each feed and hands `visit` the outputs `names`. One thread and no
 * graph optimisations, so the numbers do not depend on the thread count or on which fusions an
 * ONNX Runtime version applies (they still depend on the CPU's kernels).
 */
async function forEachBatch(model: Uint8Array, names: string[], batches: Feeds[], visit: (out: Record<string, ort.Tensor>) => void): Promise<void> {
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'disabled', logSeverityLevel: 3 });
  try {
    for (const feeds of batches) visit(await session.run(feeds, names));
  } finally {
    await session.release();
  }
}

/** Per-channel statistics of `names` accumulated over the batches. */
export async function batchStats(model: Uint8Array, names: string[], batches: Feeds[]): Promise<Map<string, ChannelStats>> {
  const stats = new Map(names.map((n) => [n, new ChannelStats()]));
  await forEachBatch(model, names, batches, (out) => { for (const n of names) stats.get(n)!.add(out[n]); });
  return stats;
}

/** `names` concatenated over the batches (axis 0). */
async function batchTensors(model: Uint8Array, names: string[], batches: Feeds[]): Promise<Map<string, { data: Float32Array; dims: number[] }>> {
  const parts = new Map<string, ort.Tensor[]>(names.map((n) => [n, []]));
  await forEachBatch(model, names, batches, (out) => { for (const n of names) parts.get(n)!.push(out[n]); });
  const joined = new Map<string, { data: Float32Array; dims: number[] }>();
  for (const [n, ts] of parts) {
    const dims = ts[0].dims.map(Number);
    dims[0] = ts.reduce((a, t) => a + Number(t.dims[0]), 0);
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    let at = 0;
    for (const t of ts) {
      const f = tensorFloats(t);
      data.set(f, at);
      at += f.length;
    }
    joined.set(n, { data, dims });
  }
  return joined;
}

/**
 * Sets every point's constants from the batch statistics it sees, in topological order: the
 * points whose inputs no pending point can still change are measured together in one run, then
 * the next such set, until none is left. Mutates `model`'s float32 initializers in place.
 * Throws on a channel that is (nearly) constant on the batch: a dead channel would make the
 * normalisation meaningless, and the model's author should change the architecture or seed.
 */
export async function normalizeFromBatchStats(model: ModelProto, points: NormPoint[], batches: Feeds[], options: { alignConvs?: boolean; seed?: number } = {}): Promise<void> {
  const graph = model.graph!;
  const producer = new Map<string, number>();
  graph.node.forEach((n, i) => n.output.forEach((o) => producer.set(o, i)));
  const ancestors = (tensor: string): Set<string> => {
    const seen = new Set<string>();
    const stack = [tensor];
    while (stack.length) {
      const i = producer.get(stack.pop()!);
      if (i === undefined) continue;
      const node = graph.node[i];
      if (seen.has(node.name!)) continue;
      seen.add(node.name!);
      stack.push(...node.input.filter((x) => x));
    }
    return seen;
  };
  const index = new Map(graph.initializer.map((t, i) => [t.name!, i]));
  const read = (name: string): Float32Array => {
    const i = index.get(name);
    if (i === undefined) throw new Error(`normalisation constant "${name}" is not an initializer`);
    return Float32Array.from(readTensorAsFloat32(graph.initializer[i]));
  };
  const write = (name: string, data: Float32Array): void => {
    const i = index.get(name)!;
    const t = graph.initializer[i];
    graph.initializer[i] = makeTensor(name, DataType.FLOAT, t.dims.map(Number), data);
  };

  // with alignConvs, every Conv/Gemm with float weights is redrawn from its input (align.ts)
  // before the points after it are measured: a wave aligns the layers whose inputs nothing
  // pending can change, then measures the points likewise settled
  type Layer = { node: NodeProto; dims: number[]; geometry: ConvGeometry };
  const layers: Layer[] = [];
  if (options.alignConvs) {
    for (const node of graph.node) {
      const view = alignable(node, graph.initializer[index.get(node.input[1]) ?? -1]);
      if (view) layers.push({ node, ...view });
    }
  }
  let pending = points.slice();
  let pendingLayers = layers.slice();
  const settled = (tensor: string, self: unknown): boolean => {
    const up = ancestors(tensor);
    return !pending.some((q) => q !== self && mutated(q).some((n) => up.has(n))) && !pendingLayers.some((l) => l !== self && up.has(l.node.name!));
  };
  let wave = 0;
  while (pending.length || pendingLayers.length) {
    const readyLayers = pendingLayers.filter((l) => settled(l.node.input[0], l));
    const ready = pending.filter((p) => settled(observed(p), p));
    if (!ready.length && !readyLayers.length) throw new Error('normalisation points depend on each other in a cycle');
    if (readyLayers.length) {
      const names = [...new Set(readyLayers.map((l) => l.node.input[0]))];
      const inputs = await batchTensors(withOutputs(model, names), names, batches);
      readyLayers.forEach((l, k) => {
        const x = inputs.get(l.node.input[0])!;
        const xDims = x.dims.length === 2 ? [...x.dims, 1, 1] : x.dims;
        const aligned = alignConvToData(read(l.node.input[1]), l.dims, l.geometry, x.data, xDims, (options.seed ?? 1) * 7919 + wave * 104729 + k);
        if (aligned) write(l.node.input[1], aligned);
      });
      const done = new Set(readyLayers);
      pendingLayers = pendingLayers.filter((l) => !done.has(l));
      wave++;
      continue;
    }
    wave++;
    const names = [...new Set(ready.map(observed))];
    const stats = await batchStats(withOutputs(model, names), names, batches);
    for (const p of ready) {
      const s = stats.get(observed(p))!;
      const mean = s.mean();
      const variance = s.variance();
      const dead = [...variance].findIndex((v, c) => !(v > 1e-6 * (1 + mean[c] * mean[c])));
      if (dead >= 0) throw new Error(`${observed(p)}: channel ${dead} is constant on the calibration batch (mean ${mean[dead]}, variance ${variance[dead]})`);
      if (p.kind === 'bn') {
        write(p.mean, Float32Array.from(mean));
        write(p.variance, Float32Array.from(variance));
      } else if (p.kind === 'affine') {
        const scale = Float32Array.from(p.gamma, (g, c) => g / Math.sqrt(variance[c] + 1e-5));
        write(p.scale, scale);
        write(p.bias, Float32Array.from(p.beta, (b, c) => b - mean[c] * scale[c]));
      } else {
        const w = read(p.weight);
        const b = read(p.bias);
        const dims = graph.initializer[index.get(p.weight)!].dims.map(Number);
        const channels = dims[p.weightChannelAxis];
        const outer = dims.slice(0, p.weightChannelAxis).reduce((a, x) => a * x, 1);
        const inner = dims.slice(p.weightChannelAxis + 1).reduce((a, x) => a * x, 1);
        const scale = Float64Array.from(p.gamma, (g, c) => g / Math.sqrt(variance[c]));
        for (let o = 0; o < outer; o++) for (let c = 0; c < channels; c++) for (let k = 0; k < inner; k++) w[(o * channels + c) * inner + k] *= scale[c];
        for (let c = 0; c < channels; c++) b[c] = (b[c] - mean[c]) * scale[c] + p.beta[c];
        write(p.weight, w);
        write(p.bias, b);
      }
    }
    const done = new Set(ready);
    pending = pending.filter((p) => !done.has(p));
  }
}
