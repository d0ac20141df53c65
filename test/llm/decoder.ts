/**
 * A deterministic generator of Llama-style decoder ONNX models (no downloads): the model the
 * streaming/LLM work of issue 26 is tested and benchmarked on.
 *
 * Graph (opset 17, IR 8), laid out like an Optimum / Transformers.js "decoder with past" export:
 *   inputs  input_ids [batch_size, sequence_length] int64,
 *           attention_mask [batch_size, past_sequence_length + sequence_length] int64,
 *           position_ids [batch_size, sequence_length] int64,
 *           past_key_values.<i>.key / .value [batch_size, kv_heads, past_sequence_length, head_dim]
 *   outputs logits [batch_size, sequence_length, vocab],
 *           present.<i>.key / .value [batch_size, kv_heads, past_sequence_length + sequence_length, head_dim]
 *   - token embedding: Gather;
 *   - RMSNorm written out: Pow → ReduceMean → Add eps → Sqrt → Div → Mul weight
 *     (SimplifiedLayerNormalization is an ORT contrib op; standard ops keep the model portable);
 *   - rotary embeddings: cos/sin computed in the graph from position_ids (Cast · inv_freq), applied
 *     with rotate_half (Split, Neg, Concat) as Hugging Face's Llama does;
 *   - grouped-query attention with standard ops: MatMul, Reshape, Transpose, KV cache Concat,
 *     KV heads shared by Unsqueeze → Expand → Reshape, scaled scores + causal/padding mask, Softmax;
 *   - causal mask from attention_mask, valid for prefill and decode: query i (absolute position
 *     past + i) sees key j when j ≤ past + i and attention_mask[b, j] = 1 (else float32 min, as HF);
 *   - SwiGLU MLP: down(silu(gate(x)) · up(x)), silu = x · Sigmoid(x);
 *   - final RMSNorm, LM head untied (`lm_head.weight`) or tied to the embedding (Transpose).
 * MatMul weights are stored [in, out] (the transpose of the PyTorch Linear weight) under the
 * Hugging Face parameter names (`model.layers.0.self_attn.q_proj.weight`); node names follow
 * Optimum (`/model/layers.0/self_attn/q_proj/MatMul`), node outputs are `<node name>_output_<k>`.
 *
 * Weights: every weight tensor is ONNX external data, in one file `<model>.data` or in parts of at
 * most `partBytes` (`<model>.data-00001-of-00003`, …), offsets aligned to 4096. The layout is
 * planned from the shape first; the values are then generated and written chunk by chunk, so the
 * generator's memory does not grow with the model (a 7B-shape model is 27 GB of fp32).
 * Values are seeded: one stream per tensor (mulberry32 from a hash of seed and tensor name),
 * normal (Box–Muller) with std 0.02 for projections and embeddings; RMSNorm weights 1 + 0.05·N(0,1).
 * Activation outliers as in trained LLMs: OUTLIER_GAINS.length hidden channels (seeded choice,
 * the same in every layer) have their input_layernorm and post_attention_layernorm weights
 * multiplied by 30–100, so the activations entering q/k/v and gate/up have a few channels 20–100×
 * larger than the rest. The final norm has none (the logits then depend on all channels).
 */
import * as fs from 'fs';
import * as path from 'path';
import { DataType } from '../../sdk/onnx/dtype';
import { makeAttribute } from '../../sdk/onnx/graph';
import { NodeProto, TensorProto, ValueInfoProto, encodeModel, newGraph, newModel, newNode, newTensor, newValueInfo } from '../../sdk/onnx/proto';
import { DATA_LOCATION_EXTERNAL, makeTensor } from '../../sdk/onnx/tensor';
import { writeAll, writeFilesAtomically } from '../../sdk/util/atomic-write';

export interface DecoderShape {
  layers: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  ropeTheta: number;
  rmsEps: number;
}

export const SHAPES = {
  /** a few MB: the test model */
  tiny: { layers: 2, hidden: 64, intermediate: 172, heads: 4, kvHeads: 2, vocab: 512, ropeTheta: 10000, rmsEps: 1e-5 },
  /** TinyLlama-1.1B's shape */
  tinyllama: { layers: 22, hidden: 2048, intermediate: 5632, heads: 32, kvHeads: 4, vocab: 32000, ropeTheta: 10000, rmsEps: 1e-5 },
  /** Llama-2-7B's shape */
  '7b': { layers: 32, hidden: 4096, intermediate: 11008, heads: 32, kvHeads: 32, vocab: 32000, ropeTheta: 10000, rmsEps: 1e-5 },
} satisfies Record<string, DecoderShape>;
export type ShapeName = keyof typeof SHAPES;

/** Gains of the planted outlier channels of the decoder layers' RMSNorm weights. */
export const OUTLIER_GAINS = [30, 45, 70, 100];
export const WEIGHT_STD = 0.02;
export const NORM_STD = 0.05;
const ALIGN = 4096;
const FLOAT32_MIN = -3.4028234663852886e38;

export interface DecoderOptions {
  shape: ShapeName | DecoderShape;
  /** default 0 */
  seed?: number;
  /** LM head shares the embedding matrix (default false, as TinyLlama and Llama 2) */
  tiedEmbeddings?: boolean;
  /** split the external data into files of at most this many bytes (default: one file) */
  partBytes?: number;
  /** model file name inside the output folder (default model.onnx) */
  modelName?: string;
  /** elements generated and written at a time (default 1 Mi = 4 MiB); even */
  chunkElements?: number;
  /** called after each chunk of weight bytes is written (progress, tests of the streaming) */
  onChunk?: (tensor: string, bytes: number, done: number, total: number) => void;
}

export interface WeightSpec {
  name: string;
  dims: number[];
  /** normal(0, std), or an RMSNorm weight (1 + NORM_STD·normal, outlier channels × gain) */
  init: { kind: 'normal'; std: number } | { kind: 'norm'; outliers: boolean };
}

export interface PlannedWeight extends WeightSpec { file: string; offset: number; length: number }

export interface DecoderResult {
  modelPath: string;
  /** data file names (relative to the model's folder), in order */
  dataFiles: string[];
  weights: PlannedWeight[];
  params: number;
  dataBytes: number;
  outlierChannels: number[];
  shape: DecoderShape;
}

export function resolveShape(shape: ShapeName | DecoderShape): DecoderShape {
  if (typeof shape === 'string') {
    const s = (SHAPES as Record<string, DecoderShape>)[shape];
    if (!s) throw new Error(`shape: got "${shape}"; expected one of ${Object.keys(SHAPES).join(', ')} or a DecoderShape object`);
    return s;
  }
  const s = shape;
  for (const k of ['layers', 'hidden', 'intermediate', 'heads', 'kvHeads', 'vocab'] as const) {
    if (!Number.isInteger(s[k]) || s[k] <= 0) throw new Error(`shape.${k}: got ${s[k]}; expected a positive integer`);
  }
  if (s.hidden % s.heads !== 0 || (s.hidden / s.heads) % 2 !== 0) throw new Error(`shape: hidden ${s.hidden} must split into ${s.heads} heads of an even size`);
  if (s.heads % s.kvHeads !== 0) throw new Error(`shape: heads ${s.heads} must be a multiple of kvHeads ${s.kvHeads}`);
  if (s.hidden < OUTLIER_GAINS.length * 4) throw new Error(`shape.hidden: got ${s.hidden}; expected at least ${OUTLIER_GAINS.length * 4}`);
  return s;
}

/** The decoder's parameter count, from its shape alone. */
export function decoderParamCount(shape: ShapeName | DecoderShape, tiedEmbeddings = false): number {
  const s = resolveShape(shape);
  const hd = s.hidden / s.heads;
  const perLayer = 2 * s.hidden + 2 * s.hidden * s.heads * hd + 2 * s.hidden * s.kvHeads * hd + 3 * s.hidden * s.intermediate;
  return s.vocab * s.hidden * (tiedEmbeddings ? 1 : 2) + s.hidden + s.layers * perLayer;
}

/** The weight tensors in file order: embedding, then layer by layer, then final norm and LM head. */
export function decoderWeights(shape: ShapeName | DecoderShape, tiedEmbeddings = false): WeightSpec[] {
  const s = resolveShape(shape);
  const hd = s.hidden / s.heads;
  const normal = { kind: 'normal' as const, std: WEIGHT_STD };
  const w: WeightSpec[] = [{ name: 'model.embed_tokens.weight', dims: [s.vocab, s.hidden], init: normal }];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    w.push(
      { name: `${p}.input_layernorm.weight`, dims: [s.hidden], init: { kind: 'norm', outliers: true } },
      { name: `${p}.self_attn.q_proj.weight`, dims: [s.hidden, s.heads * hd], init: normal },
      { name: `${p}.self_attn.k_proj.weight`, dims: [s.hidden, s.kvHeads * hd], init: normal },
      { name: `${p}.self_attn.v_proj.weight`, dims: [s.hidden, s.kvHeads * hd], init: normal },
      { name: `${p}.self_attn.o_proj.weight`, dims: [s.heads * hd, s.hidden], init: normal },
      { name: `${p}.post_attention_layernorm.weight`, dims: [s.hidden], init: { kind: 'norm', outliers: true } },
      { name: `${p}.mlp.gate_proj.weight`, dims: [s.hidden, s.intermediate], init: normal },
      { name: `${p}.mlp.up_proj.weight`, dims: [s.hidden, s.intermediate], init: normal },
      { name: `${p}.mlp.down_proj.weight`, dims: [s.intermediate, s.hidden], init: normal },
    );
  }
  w.push({ name: 'model.norm.weight', dims: [s.hidden], init: { kind: 'norm', outliers: false } });
  if (!tiedEmbeddings) w.push({ name: 'lm_head.weight', dims: [s.hidden, s.vocab], init: normal });
  return w;
}

// ---- seeded values ----

function hashString(seed: number, s: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** mulberry32: a 32-bit generator with good statistics; one stream per tensor. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `out` with standard normals, two per Box–Muller draw (out.length even). */
function fillNormal(out: Float32Array, next: () => number): void {
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next()));
    const th = 2 * Math.PI * next();
    out[i] = r * Math.cos(th);
    out[i + 1] = r * Math.sin(th);
  }
}

/** The hidden channels that carry activation outliers (seeded, sorted). */
export function outlierChannels(hidden: number, seed = 0): number[] {
  const next = mulberry32(hashString(seed, 'outlier-channels'));
  const chosen = new Set<number>();
  while (chosen.size < OUTLIER_GAINS.length) chosen.add(Math.floor(next() * hidden));
  return [...chosen].sort((a, b) => a - b);
}

/** Generates one tensor's values chunk by chunk; `sink` gets each chunk (reused buffer). */
function generateTensor(spec: WeightSpec, seed: number, outliers: number[], chunk: Float32Array, sink: (values: Float32Array) => void): void {
  const next = mulberry32(hashString(seed, spec.name));
  const count = spec.dims.reduce((a, b) => a * b, 1);
  for (let start = 0; start < count; start += chunk.length) {
    const n = Math.min(chunk.length, count - start);
    fillNormal(chunk, next);
    const values = chunk.subarray(0, n);
    if (spec.init.kind === 'normal') {
      const std = spec.init.std;
      for (let i = 0; i < n; i++) values[i] *= std;
    } else {
      for (let i = 0; i < n; i++) values[i] = 1 + NORM_STD * values[i];
      if (spec.init.outliers) outliers.forEach((c, k) => {
        if (c >= start && c < start + n) values[c - start] *= OUTLIER_GAINS[k];
      });
    }
    sink(values);
  }
}

/** Where each weight goes: data files and 4096-aligned offsets. */
export function planLayout(weights: WeightSpec[], modelName: string, partBytes?: number): { weights: PlannedWeight[]; files: string[] } {
  if (partBytes !== undefined && !(Number.isInteger(partBytes) && partBytes > 0)) throw new Error(`partBytes: got ${partBytes}; expected a positive integer`);
  const parts: Array<Array<{ spec: WeightSpec; offset: number; length: number }>> = [[]];
  let offset = 0;
  for (const spec of weights) {
    const length = spec.dims.reduce((a, b) => a * b, 1) * 4;
    let at = Math.ceil(offset / ALIGN) * ALIGN;
    if (partBytes !== undefined && parts[parts.length - 1].length > 0 && at + length > partBytes) {
      parts.push([]);
      at = 0;
    }
    parts[parts.length - 1].push({ spec, offset: at, length });
    offset = at + length;
  }
  const n = parts.length;
  const pad = (k: number) => String(k).padStart(5, '0');
  const files = n === 1 ? [`${modelName}.data`] : parts.map((_, k) => `${modelName}.data-${pad(k + 1)}-of-${pad(n)}`);
  return { files, weights: parts.flatMap((p, k) => p.map((w) => ({ ...w.spec, file: files[k], offset: w.offset, length: w.length }))) };
}

// ---- graph ----

type Dim = number | string;

class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly constants: TensorProto[] = [];
  private names = new Map<string, number>();
  private constNames = new Map<string, string>();

  /** Adds a node named `<scope>/<op>[_k]` (Optimum style); returns its outputs. */
  op(scope: string, op: string, inputs: string[], attrs: Record<string, number | number[]> = {}, outputs: number | string[] = 1): string[] {
    const base = `${scope}/${op}`;
    const k = this.names.get(base) ?? 0;
    this.names.set(base, k + 1);
    const name = k === 0 ? base : `${base}_${k}`;
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, (_, i) => `${name}_output_${i}`) : outputs;
    this.nodes.push(newNode({ name, op_type: op, input: inputs, output: outs, attribute: Object.entries(attrs).map(([a, v]) => makeAttribute(a, v)) }));
    return outs;
  }

  one(scope: string, op: string, inputs: string[], attrs: Record<string, number | number[]> = {}): string {
    return this.op(scope, op, inputs, attrs)[0];
  }

  /** A small constant initializer kept inside the model (deduplicated). */
  constant(type: DataType.INT64 | DataType.FLOAT, dims: number[], values: number[]): string {
    const key = `${type}:${dims.join('x')}:${values.join(',')}`;
    let name = this.constNames.get(key);
    if (!name) {
      name = `/model/constants/${type === DataType.INT64 ? 'int64' : 'float'}_${this.constNames.size}`;
      this.constNames.set(key, name);
      this.constants.push(type === DataType.INT64 ? makeTensor(name, type, dims, BigInt64Array.from(values.map(BigInt))) : makeTensor(name, type, dims, Float32Array.from(values)));
    }
    return name;
  }
  ints(values: number[]): string { return this.constant(DataType.INT64, [values.length], values); }
  int(value: number): string { return this.constant(DataType.INT64, [], [value]); }
  float(value: number): string { return this.constant(DataType.FLOAT, [], [value]); }
}

function valueInfo(name: string, type: DataType, dims: Dim[]): ValueInfoProto {
  return newValueInfo({ name, type: { tensor_type: { elem_type: type, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } } });
}

const TOTAL = 'past_sequence_length + sequence_length';

function rmsNorm(g: GraphBuilder, scope: string, x: string, weight: string, eps: number): string {
  const sq = g.one(scope, 'Pow', [x, g.float(2)]);
  const mean = g.one(scope, 'ReduceMean', [sq], { axes: [-1], keepdims: 1 });
  const plus = g.one(scope, 'Add', [mean, g.float(eps)]);
  const root = g.one(scope, 'Sqrt', [plus]);
  const normed = g.one(scope, 'Div', [x, root]);
  return g.one(scope, 'Mul', [normed, weight]);
}

function rotary(g: GraphBuilder, scope: string, x: string, cos: string, sin: string): string {
  const [x1, x2] = g.op(scope, 'Split', [x], { axis: -1 }, 2);
  const neg = g.one(scope, 'Neg', [x2]);
  const rot = g.one(scope, 'Concat', [neg, x1], { axis: -1 });
  return g.one(scope, 'Add', [g.one(scope, 'Mul', [x, cos]), g.one(scope, 'Mul', [rot, sin])]);
}

/** The ModelProto, with every weight an external-data reference per `layout`. */
export function decoderModelProto(shape: DecoderShape, weights: PlannedWeight[], tiedEmbeddings: boolean) {
  const s = shape;
  const hd = s.hidden / s.heads;
  const groups = s.heads / s.kvHeads;
  const g = new GraphBuilder();
  const inputs: ValueInfoProto[] = [
    valueInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length']),
    valueInfo('attention_mask', DataType.INT64, ['batch_size', TOTAL]),
    valueInfo('position_ids', DataType.INT64, ['batch_size', 'sequence_length']),
  ];
  const outputs: ValueInfoProto[] = [valueInfo('logits', DataType.FLOAT, ['batch_size', 'sequence_length', s.vocab])];
  for (let i = 0; i < s.layers; i++) for (const kv of ['key', 'value']) {
    inputs.push(valueInfo(`past_key_values.${i}.${kv}`, DataType.FLOAT, ['batch_size', s.kvHeads, 'past_sequence_length', hd]));
    outputs.push(valueInfo(`present.${i}.${kv}`, DataType.FLOAT, ['batch_size', s.kvHeads, TOTAL, hd]));
  }

  // embedding
  let h = g.one('/model/embed_tokens', 'Gather', ['model.embed_tokens.weight', 'input_ids'], { axis: 0 });

  // rotary tables from position_ids: [batch, 1, seq, head_dim]
  const invFreq = Array.from({ length: hd / 2 }, (_, j) => 1 / s.ropeTheta ** ((2 * j) / hd));
  const re = '/model/rotary_emb';
  const pos = g.one(re, 'Cast', ['position_ids'], { to: DataType.FLOAT });
  const freqs = g.one(re, 'Mul', [g.one(re, 'Unsqueeze', [pos, g.ints([-1])]), g.constant(DataType.FLOAT, [hd / 2], invFreq)]);
  const emb = g.one(re, 'Concat', [freqs, freqs], { axis: -1 });
  const cos = g.one(re, 'Unsqueeze', [g.one(re, 'Cos', [emb]), g.ints([1])]);
  const sin = g.one(re, 'Unsqueeze', [g.one(re, 'Sin', [emb]), g.ints([1])]);

  // causal + padding mask: [batch, 1, seq, total], 0 where attended, float32 min elsewhere
  const ms = '/model/attn_mask';
  const seqLen = g.one(ms, 'Gather', [g.one(ms, 'Shape', ['input_ids']), g.int(1)], { axis: 0 });
  const total = g.one(ms, 'Gather', [g.one(ms, 'Shape', ['attention_mask']), g.int(1)], { axis: 0 });
  const past = g.one(ms, 'Sub', [total, seqLen]);
  const keyIdx = g.one(ms, 'Range', [g.int(0), total, g.int(1)]);
  const queryIdx = g.one(ms, 'Unsqueeze', [g.one(ms, 'Range', [past, total, g.int(1)]), g.ints([1])]);
  const causal = g.one(ms, 'LessOrEqual', [keyIdx, queryIdx]);
  const padding = g.one(ms, 'Unsqueeze', [g.one(ms, 'Cast', ['attention_mask'], { to: DataType.BOOL }), g.ints([1, 2])]);
  const allowed = g.one(ms, 'And', [causal, padding]);
  const mask = g.one(ms, 'Where', [allowed, g.float(0), g.float(FLOAT32_MIN)]);

  const scale = g.float(1 / Math.sqrt(hd));
  for (let i = 0; i < s.layers; i++) {
    const L = `/model/layers.${i}`;
    const P = `model.layers.${i}`;
    const x = rmsNorm(g, `${L}/input_layernorm`, h, `${P}.input_layernorm.weight`, s.rmsEps);
    const heads = (proj: string, n: number) => {
      const y = g.one(`${L}/self_attn/${proj}`, 'MatMul', [x, `${P}.self_attn.${proj}.weight`]);
      const r = g.one(`${L}/self_attn`, 'Reshape', [y, g.ints([0, 0, n, hd])]);
      return g.one(`${L}/self_attn`, 'Transpose', [r], { perm: [0, 2, 1, 3] });
    };
    const q = rotary(g, `${L}/self_attn/rotary_q`, heads('q_proj', s.heads), cos, sin);
    const k = rotary(g, `${L}/self_attn/rotary_k`, heads('k_proj', s.kvHeads), cos, sin);
    const v = heads('v_proj', s.kvHeads);
    const presentK = g.op(`${L}/self_attn`, 'Concat', [`past_key_values.${i}.key`, k], { axis: 2 }, [`present.${i}.key`])[0];
    const presentV = g.op(`${L}/self_attn`, 'Concat', [`past_key_values.${i}.value`, v], { axis: 2 }, [`present.${i}.value`])[0];
    const share = (t: string) => {
      if (groups === 1) return t;
      const u = g.one(`${L}/self_attn/repeat_kv`, 'Unsqueeze', [t, g.ints([2])]);
      const e = g.one(`${L}/self_attn/repeat_kv`, 'Expand', [u, g.ints([1, 1, groups, 1, 1])]);
      return g.one(`${L}/self_attn/repeat_kv`, 'Reshape', [e, g.ints([0, s.heads, -1, hd])]);
    };
    const kt = g.one(`${L}/self_attn`, 'Transpose', [share(presentK)], { perm: [0, 1, 3, 2] });
    const scores = g.one(`${L}/self_attn`, 'Mul', [g.one(`${L}/self_attn`, 'MatMul', [q, kt]), scale]);
    const probs = g.one(`${L}/self_attn`, 'Softmax', [g.one(`${L}/self_attn`, 'Add', [scores, mask])], { axis: -1 });
    const ctx = g.one(`${L}/self_attn`, 'MatMul', [probs, share(presentV)]);
    const merged = g.one(`${L}/self_attn`, 'Reshape', [g.one(`${L}/self_attn`, 'Transpose', [ctx], { perm: [0, 2, 1, 3] }), g.ints([0, 0, s.heads * hd])]);
    const attnOut = g.one(`${L}/self_attn/o_proj`, 'MatMul', [merged, `${P}.self_attn.o_proj.weight`]);
    h = g.one(L, 'Add', [h, attnOut]);

    const m = rmsNorm(g, `${L}/post_attention_layernorm`, h, `${P}.post_attention_layernorm.weight`, s.rmsEps);
    const gate = g.one(`${L}/mlp/gate_proj`, 'MatMul', [m, `${P}.mlp.gate_proj.weight`]);
    const up = g.one(`${L}/mlp/up_proj`, 'MatMul', [m, `${P}.mlp.up_proj.weight`]);
    const act = g.one(`${L}/mlp/act_fn`, 'Mul', [gate, g.one(`${L}/mlp/act_fn`, 'Sigmoid', [gate])]);
    const down = g.one(`${L}/mlp/down_proj`, 'MatMul', [g.one(`${L}/mlp`, 'Mul', [act, up]), `${P}.mlp.down_proj.weight`]);
    h = g.one(L, 'Add', [h, down]);
  }
  const final = rmsNorm(g, '/model/norm', h, 'model.norm.weight', s.rmsEps);
  const head = tiedEmbeddings ? g.one('/lm_head', 'Transpose', ['model.embed_tokens.weight'], { perm: [1, 0] }) : 'lm_head.weight';
  g.op('/lm_head', 'MatMul', [final, head], {}, ['logits']);

  const initializer = [
    ...weights.map((w) => newTensor({
      name: w.name, dims: w.dims, data_type: DataType.FLOAT, data_location: DATA_LOCATION_EXTERNAL,
      external_data: [{ key: 'location', value: w.file }, { key: 'offset', value: String(w.offset) }, { key: 'length', value: String(w.length) }],
    })),
    ...g.constants,
  ];
  const graph = newGraph({ name: 'llama_decoder', node: g.nodes, initializer, input: inputs, output: outputs });
  return newModel({
    ir_version: 8, opset_import: [{ domain: '', version: 17 }], producer_name: 'quantbook test/llm/decoder.ts', graph,
    metadata_props: [{ key: 'shape', value: JSON.stringify(s) }, { key: 'tied_embeddings', value: String(tiedEmbeddings) }],
  });
}

/**
 * Writes the decoder into folder `dir` (created if missing): `<modelName>` and its data file(s).
 * All files appear together or none does (temporary names, then renames).
 */
export function generateDecoder(dir: string, options: DecoderOptions): DecoderResult {
  const shape = resolveShape(options.shape);
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`seed: got ${seed}; expected an integer in [0, 2^32)`);
  const tied = options.tiedEmbeddings ?? false;
  const modelName = options.modelName ?? 'model.onnx';
  if (path.basename(modelName) !== modelName) throw new Error(`modelName: got "${modelName}"; expected a file name`);
  const chunkElements = options.chunkElements ?? 1 << 20;
  if (!Number.isInteger(chunkElements) || chunkElements < 2 || chunkElements % 2) throw new Error(`chunkElements: got ${chunkElements}; expected an even integer ≥ 2`);

  const { weights, files } = planLayout(decoderWeights(shape, tied), modelName, options.partBytes);
  const outliers = outlierChannels(shape.hidden, seed);
  const modelBytes = encodeModel(decoderModelProto(shape, weights, tied));
  const dataBytes = weights.reduce((a, w) => a + w.length, 0);
  fs.mkdirSync(dir, { recursive: true });

  const chunk = new Float32Array(chunkElements);
  let done = 0;
  const pending = files.map((file) => ({
    path: path.join(dir, file),
    write: (fd: number) => {
      let at = 0;
      for (const w of weights) {
        if (w.file !== file) continue;
        if (w.offset > at) writeAll(fd, new Uint8Array(w.offset - at));
        generateTensor(w, seed, outliers, chunk, (values) => {
          writeAll(fd, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
          done += values.byteLength;
          options.onChunk?.(w.name, values.byteLength, done, dataBytes);
        });
        at = w.offset + w.length;
      }
    },
  }));
  writeFilesAtomically([...pending, { path: path.join(dir, modelName), write: (fd) => writeAll(fd, modelBytes) }]);
  return {
    modelPath: path.join(dir, modelName), dataFiles: files, weights, params: decoderParamCount(shape, tied), dataBytes, outlierChannels: outliers, shape,
  };
}

/**
 * Prefill feeds for `rows` of token ids (all rows the same length, no padding): mask of ones,
 * positions 0…n−1, an empty cache. What calibration and the bench feed the decoder.
 */
export function prefillFeeds(shape: ShapeName | DecoderShape, rows: number[][]): Record<string, import('onnxruntime-node').Tensor> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
  const s = resolveShape(shape);
  const n = rows[0].length;
  const i64 = (v: number[][]) => new ort.Tensor('int64', BigInt64Array.from(v.flat().map(BigInt)), [v.length, v[0].length]);
  const f: Record<string, import('onnxruntime-node').Tensor> = {
    input_ids: i64(rows), attention_mask: i64(rows.map(() => Array(n).fill(1))), position_ids: i64(rows.map(() => Array.from({ length: n }, (_, i) => i))),
  };
  for (let i = 0; i < s.layers; i++) for (const kv of ['key', 'value']) f[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [rows.length, s.kvHeads, 0, s.hidden / s.heads]);
  return f;
}
