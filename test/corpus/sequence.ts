/**
 * The sequence half of the model corpus: transformers (BERT-style encoders, a GPT-style decoder
 * with a KV cache, an fp16 sentence encoder, a classifier saved with external data), recurrent
 * models (LSTM/GRU/RNN ops with a classifier head) and control flow (If with conv branches,
 * Loop and Scan bodies holding MatMuls, and a Silero-VAD-like model whose If branches each
 * hold an STFT front end, conv encoder and stateful LSTM).
 *
 * Every model is built here from seeded weights (same bytes on every run), scaled so that the
 * hidden activations of a batch from `feeds` have a std of about 0.3–3, as in trained networks.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType, numberToFloat16Bits } from '../../sdk/onnx/dtype';
import { minIrForOpset } from '../../sdk/onnx/ir-version';
import { loadModel } from '../../sdk/onnx/model';
import { GraphProto, ModelProto, TensorProto, encodeModel } from '../../sdk/onnx/proto';
import { makeTensor } from '../../sdk/onnx/tensor';
import { seededNormal, seededRandom } from '../../sdk/util/seeded-random';
import { GraphBuilder } from './builder';
import { CorpusEntry, Feeds } from './types';

// ---------------------------------------------------------------------------------------------
// Graph-building helpers: a GraphBuilder with an opset, a float type and a name prefix.

type Attrs = Record<string, number | number[] | string | string[] | TensorProto | GraphProto>;

class Net {
  private readonly normal: () => number;
  private readonly consts = new Map<string, string>();

  constructor(
    readonly g: GraphBuilder,
    readonly opset: number,
    /** prefix of node and constant names (subgraph names must not shadow the outer graph's) */
    readonly prefix = '',
    /** the float type of weights and activations */
    readonly dtype: DataType = DataType.FLOAT,
  ) {
    this.normal = seededNormal(g.random);
  }

  op(type: string, inputs: string[], attrs: Attrs = {}): string {
    return this.g.op(type, inputs, attrs, this.g.fresh(`${this.prefix}${type}`));
  }

  ops(type: string, inputs: string[], attrs: Attrs, outputs: number): string[] {
    return this.g.node(type, inputs, attrs, { name: this.g.fresh(`${this.prefix}${type}`), outputs });
  }

  gaussianValues(n: number, std: number, mean = 0): Float32Array {
    return Float32Array.from({ length: n }, () => mean + std * this.normal());
  }

  /** An initializer of the net's float type. */
  tensor(name: string, dims: number[], values: ArrayLike<number>): string {
    if (this.dtype === DataType.FLOAT16) return this.g.constant(name, DataType.FLOAT16, dims, Uint16Array.from(values as ArrayLike<number>, (v) => numberToFloat16Bits(v)));
    return this.g.constant(name, DataType.FLOAT, dims, Float32Array.from(values as ArrayLike<number>));
  }

  weight(name: string, dims: number[], std: number, mean = 0): string {
    return this.tensor(name, dims, this.gaussianValues(dims.reduce((a, b) => a * b, 1), std, mean));
  }

  /** A float scalar constant (one initializer per value). */
  scalar(v: number): string {
    const key = `f${v}`;
    if (!this.consts.has(key)) this.consts.set(key, this.tensor(`${this.prefix}const_${this.consts.size}`, [], [v]));
    return this.consts.get(key)!;
  }

  /** An int64 constant (1-D unless dims says otherwise). */
  ints(values: number[], dims: number[] = [values.length]): string {
    const key = `i${values.join(',')}:${dims.join(',')}`;
    if (!this.consts.has(key)) this.consts.set(key, this.g.constant(`${this.prefix}const_${this.consts.size}`, DataType.INT64, dims, BigInt64Array.from(values.map(BigInt))));
    return this.consts.get(key)!;
  }

  unsqueeze(x: string, axes: number[]): string {
    return this.opset >= 13 ? this.op('Unsqueeze', [x, this.ints(axes)]) : this.op('Unsqueeze', [x], { axes });
  }

  squeeze(x: string, axes: number[]): string {
    return this.opset >= 13 ? this.op('Squeeze', [x, this.ints(axes)]) : this.op('Squeeze', [x], { axes });
  }

  reduceSum(x: string, axes: number[], keepdims: number): string {
    return this.opset >= 13 ? this.op('ReduceSum', [x, this.ints(axes)], { keepdims }) : this.op('ReduceSum', [x], { axes, keepdims });
  }

  /** x·W + b with W [din, dout] (std 1/√din unless given). */
  linear(x: string, name: string, din: number, dout: number, std = 1 / Math.sqrt(din)): string {
    const w = this.weight(`${name}.weight`, [din, dout], std);
    const b = this.weight(`${name}.bias`, [dout], 0.02);
    return this.op('Add', [this.op('MatMul', [x, w]), b]);
  }

  /** Gemm(x, Wᵀ, b) with W [dout, din], as torch.nn.Linear exports on 2-D inputs. */
  gemm(x: string, name: string, din: number, dout: number, std = 1 / Math.sqrt(din)): string {
    const w = this.weight(`${name}.weight`, [dout, din], std);
    const b = this.weight(`${name}.bias`, [dout], 0.02);
    return this.op('Gemm', [x, w, b], { transB: 1 });
  }

  layerNorm(x: string, name: string, d: number, opts: { op: boolean; eps: number }): string {
    const gamma = this.tensor(`${name}.weight`, [d], this.gaussianValues(d, 0.05, 1));
    const beta = this.weight(`${name}.bias`, [d], 0.02);
    if (opts.op) return this.op('LayerNormalization', [x, gamma, beta], { axis: -1, epsilon: opts.eps });
    const mean = this.op('ReduceMean', [x], { axes: [-1], keepdims: 1 });
    const centered = this.op('Sub', [x, mean]);
    const variance = this.op('ReduceMean', [this.op('Pow', [centered, this.scalar(2)])], { axes: [-1], keepdims: 1 });
    const std = this.op('Sqrt', [this.op('Add', [variance, this.scalar(opts.eps)])]);
    return this.op('Add', [this.op('Mul', [this.op('Div', [centered, std]), gamma]), beta]);
  }

  /** BERT's exact GELU: x·½·(1 + erf(x/√2)). */
  geluErf(x: string): string {
    const erf = this.op('Erf', [this.op('Div', [x, this.scalar(1.4142135381698608)])]);
    return this.op('Mul', [this.op('Mul', [x, this.op('Add', [erf, this.scalar(1)])]), this.scalar(0.5)]);
  }

  /** GPT-2's tanh GELU: ½x(1 + tanh(√(2/π)(x + 0.044715x³))). */
  geluTanh(x: string): string {
    const cube = this.op('Mul', [this.op('Pow', [x, this.scalar(3)]), this.scalar(0.044715)]);
    const inner = this.op('Mul', [this.op('Add', [x, cube]), this.scalar(0.7978845608028654)]);
    return this.op('Mul', [this.op('Mul', [x, this.scalar(0.5)]), this.op('Add', [this.op('Tanh', [inner]), this.scalar(1)])]);
  }
}

function modelOf(g: GraphBuilder, opset: number, irVersion = minIrForOpset(opset)): ModelProto {
  return g.model({ opset, irVersion });
}

function writeModel(dir: string, name: string, build: () => ModelProto, externalData = false): Promise<string> {
  const file = path.join(dir, `${name}.onnx`);
  const bytes = encodeModel(build());
  if (externalData) loadModel(bytes).save(file, { externalData: { sizeThreshold: 1024 } });
  else fs.writeFileSync(file, bytes);
  return Promise.resolve(file);
}

// ---------------------------------------------------------------------------------------------
// Inputs.

function int64Tensor(values: number[], dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
}

function normalTensor(dims: number[], seed: number, std = 1): ort.Tensor {
  const normal = seededNormal(seededRandom(seed));
  return new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => std * normal()), dims);
}

/** Token batches as a tokenizer gives them: [CLS] words [SEP], the second row padded. */
function textBatch(seed: number, batch: number, seq: number, vocab: number): { ids: number[]; mask: number[]; types: number[] } {
  const r = seededRandom(seed * 7919 + 17);
  const ids: number[] = [];
  const mask: number[] = [];
  const types: number[] = [];
  for (let b = 0; b < batch; b++) {
    const len = b % 2 === 0 ? seq : Math.max(3, seq - 3 - Math.floor(r() * (seq / 2)));
    const split = Math.floor(len / 2);
    for (let t = 0; t < seq; t++) {
      const id = t === 0 ? 1 : t === len - 1 ? 2 : t < len ? 5 + Math.floor(r() * (vocab - 5)) : 0;
      ids.push(id);
      mask.push(t < len ? 1 : 0);
      types.push(t >= split && t < len ? 1 : 0);
    }
  }
  return { ids, mask, types };
}

/** Feature sequences [batch, seq, features] like normalized filterbank frames: slow sinusoids plus noise, std ≈ 1. */
function frameSequence(seed: number, batch: number, seq: number, features: number): ort.Tensor {
  const r = seededRandom(seed * 104729 + 3);
  const normal = seededNormal(r);
  const data = new Float32Array(batch * seq * features);
  for (let b = 0; b < batch; b++) {
    for (let f = 0; f < features; f++) {
      const w1 = 0.1 + 0.6 * r();
      const w2 = 0.02 + 0.2 * r();
      const p1 = 2 * Math.PI * r();
      const p2 = 2 * Math.PI * r();
      const offset = 0.3 * normal();
      for (let t = 0; t < seq; t++) {
        data[(b * seq + t) * features + f] = offset + 0.9 * Math.sin(w1 * t + p1) + 0.7 * Math.sin(w2 * t + p2) + 0.4 * normal();
      }
    }
  }
  return new ort.Tensor('float32', data, [batch, seq, features]);
}

// ---------------------------------------------------------------------------------------------
// Transformer encoders (BERT-style).

interface EncoderSpec {
  seed: number;
  opset: number;
  vocab: number;
  maxPos: number;
  d: number;
  heads: number;
  ff: number;
  layers: number;
  /** LayerNormalization op (opset 17) or the ReduceMean/Sub/Pow/Sqrt/Div decomposition */
  layerNormOp: boolean;
  dtype: DataType;
  tokenTypes: boolean;
  head: 'bert-model' | 'token-classifier' | 'sequence-classifier' | 'mean-pool';
  classes: number;
}

function buildEncoder(name: string, s: EncoderSpec): ModelProto {
  const g = new GraphBuilder(name, s.seed);
  const n = new Net(g, s.opset, '', s.dtype);
  const floatType = s.dtype === DataType.FLOAT16 ? 10 : 1;
  const hd = s.d / s.heads;
  const ln = (x: string, at: string) => n.layerNorm(x, at, s.d, { op: s.layerNormOp, eps: s.dtype === DataType.FLOAT16 ? 1e-5 : 1e-12 });

  const ids = g.input('input_ids', DataType.INT64, ['batch', 'seq']);
  const mask = g.input('attention_mask', DataType.INT64, ['batch', 'seq']);
  const types = s.tokenTypes ? g.input('token_type_ids', DataType.INT64, ['batch', 'seq']) : undefined;

  // Embeddings: word + position (a slice of the position_ids buffer, as HF BERT exports) + token type.
  const word = n.op('Gather', [n.weight('embeddings.word_embeddings.weight', [s.vocab, s.d], 0.6), ids]);
  const positionIds = g.constant('embeddings.position_ids', DataType.INT64, [1, s.maxPos], BigInt64Array.from({ length: s.maxPos }, (_, i) => BigInt(i)));
  const seqLen = n.op('Slice', [n.op('Shape', [ids]), n.ints([1]), n.ints([2])]);
  const pos = n.op('Gather', [n.weight('embeddings.position_embeddings.weight', [s.maxPos, s.d], 0.6), n.op('Slice', [positionIds, n.ints([0]), seqLen, n.ints([1])])]);
  let x = n.op('Add', [word, pos]);
  if (types) x = n.op('Add', [x, n.op('Gather', [n.weight('embeddings.token_type_embeddings.weight', [2, s.d], 0.4), types])]);
  x = ln(x, 'embeddings.LayerNorm');

  // Extended attention mask: (1 − mask) · −10000, broadcast over heads and query positions.
  const maskF = n.op('Cast', [n.unsqueeze(mask, [1, 2])], { to: floatType });
  const maskBias = n.op('Mul', [n.op('Sub', [n.scalar(1), maskF]), n.scalar(-10000)]);
  const headShape = n.ints([0, 0, s.heads, hd]);
  const mergedShape = n.ints([0, 0, s.d]);

  for (let l = 0; l < s.layers; l++) {
    const p = `encoder.layer.${l}.`;
    const q = n.op('Transpose', [n.op('Reshape', [n.linear(x, `${p}attention.self.query`, s.d, s.d, 1.4 / Math.sqrt(s.d)), headShape])], { perm: [0, 2, 1, 3] });
    const k = n.op('Transpose', [n.op('Reshape', [n.linear(x, `${p}attention.self.key`, s.d, s.d, 1.4 / Math.sqrt(s.d)), headShape])], { perm: [0, 2, 3, 1] });
    const v = n.op('Transpose', [n.op('Reshape', [n.linear(x, `${p}attention.self.value`, s.d, s.d), headShape])], { perm: [0, 2, 1, 3] });
    const scores = n.op('Add', [n.op('Div', [n.op('MatMul', [q, k]), n.scalar(Math.sqrt(hd))]), maskBias]);
    const context = n.op('MatMul', [n.op('Softmax', [scores], { axis: -1 }), v]);
    const merged = n.op('Reshape', [n.op('Transpose', [context], { perm: [0, 2, 1, 3] }), mergedShape]);
    const attn = n.linear(merged, `${p}attention.output.dense`, s.d, s.d, 1.6 / Math.sqrt(s.d));
    x = ln(n.op('Add', [attn, x]), `${p}attention.output.LayerNorm`);
    const inter = n.geluErf(n.linear(x, `${p}intermediate.dense`, s.d, s.ff));
    x = ln(n.op('Add', [n.linear(inter, `${p}output.dense`, s.ff, s.d, 1.6 / Math.sqrt(s.ff)), x]), `${p}output.LayerNorm`);
  }

  const cls = () => n.op('Gather', [x, n.ints([0], [])], { axis: 1 });
  switch (s.head) {
    case 'bert-model': {
      const pooled = n.op('Tanh', [n.gemm(cls(), 'pooler.dense', s.d, s.d)]);
      rename(g, x, 'last_hidden_state');
      g.output('last_hidden_state', s.dtype, ['batch', 'seq', s.d]);
      rename(g, pooled, 'pooler_output');
      g.output('pooler_output', s.dtype, ['batch', s.d]);
      break;
    }
    case 'token-classifier':
      rename(g, n.linear(x, 'classifier', s.d, s.classes), 'logits');
      g.output('logits', s.dtype, ['batch', 'seq', s.classes]);
      break;
    case 'sequence-classifier': {
      const pre = n.op('Relu', [n.gemm(cls(), 'pre_classifier', s.d, s.d, Math.sqrt(2 / s.d))]);
      rename(g, n.gemm(pre, 'classifier', s.d, s.classes), 'logits');
      g.output('logits', s.dtype, ['batch', s.classes]);
      break;
    }
    case 'mean-pool': {
      // sentence-transformers pooling: Σ(x·mask)/Σmask, then L2 normalization; output cast to float32.
      const m = n.op('Cast', [n.unsqueeze(mask, [-1])], { to: floatType });
      const summed = n.reduceSum(n.op('Mul', [x, m]), [1], 0);
      const count = n.op('Max', [n.reduceSum(m, [1], 0), n.scalar(1e-4)]);
      const mean = n.op('Div', [summed, count]);
      const norm = n.op('Max', [n.op('ReduceL2', [mean], { axes: [1], keepdims: 1 }), n.scalar(1e-4)]);
      g.op('Cast', [n.op('Div', [mean, norm])], { to: 1 }, 'sentence_embedding');
      g.output('sentence_embedding', DataType.FLOAT, ['batch', s.d]);
      break;
    }
  }
  return modelOf(g, s.opset);
}

/** Renames tensor `from` to `to` wherever the graph's nodes produce or read it (graph outputs get their export names). */
function rename(g: GraphBuilder, from: string, to: string): void {
  for (const node of g.nodes) {
    node.input = node.input.map((t) => (t === from ? to : t));
    node.output = node.output.map((t) => (t === from ? to : t));
  }
}

function encoderFeeds(s: Pick<EncoderSpec, 'vocab' | 'tokenTypes'>, seed: number, batch = 2, seq = 16): Feeds {
  const t = textBatch(seed, batch, seq, s.vocab);
  const feeds: Feeds = { input_ids: int64Tensor(t.ids, [batch, seq]), attention_mask: int64Tensor(t.mask, [batch, seq]) };
  if (s.tokenTypes) feeds.token_type_ids = int64Tensor(t.types, [batch, seq]);
  return feeds;
}

function encoderEntry(e: { name: string; description: string; spec: EncoderSpec; features: string[]; floor: { static: number; dynamic: number }; externalData?: boolean }): CorpusEntry {
  return {
    name: e.name,
    family: 'transformer',
    description: e.description,
    opset: e.spec.opset,
    irVersion: minIrForOpset(e.spec.opset),
    write: (dir) => writeModel(dir, e.name, () => buildEncoder(e.name, e.spec), e.externalData),
    feeds: (seed) => encoderFeeds(e.spec, seed),
    sqnrFloor: e.floor,
    features: e.features,
  };
}

// ---------------------------------------------------------------------------------------------
// GPT-style decoder with a KV cache.

export const GPT = { vocab: 1000, d: 64, heads: 4, layers: 2, ff: 256, maxPos: 256 } as const;
const GPT_OPSET = 14;

function buildGpt(name: string): ModelProto {
  const { vocab, d, heads, layers, ff, maxPos } = GPT;
  const hd = d / heads;
  const g = new GraphBuilder(name, 303);
  const n = new Net(g, GPT_OPSET);
  const ln = (x: string, at: string) => n.layerNorm(x, at, d, { op: false, eps: 1e-5 });

  const ids = g.input('input_ids', DataType.INT64, ['batch', 'seq']);
  const pasts = Array.from({ length: layers }, (_, l) => ({
    key: g.input(`past_key.${l}`, DataType.FLOAT, ['batch', heads, 'past_seq', hd]),
    value: g.input(`past_value.${l}`, DataType.FLOAT, ['batch', heads, 'past_seq', hd]),
  }));

  // Lengths: past from the cache's shape, new tokens from input_ids; positions past … past+seq−1.
  const pastLen = n.op('Gather', [n.op('Shape', [pasts[0].key]), n.ints([2], [])], { axis: 0 });
  const seqLen = n.op('Gather', [n.op('Shape', [ids]), n.ints([1], [])], { axis: 0 });
  const total = n.op('Add', [pastLen, seqLen]);
  const positions = n.op('Range', [pastLen, total, n.ints([1], [])]);
  const wteValues = n.gaussianValues(vocab * d, 0.5);
  const wte = n.tensor('transformer.wte.weight', [vocab, d], wteValues);
  let x = n.op('Add', [n.op('Gather', [wte, ids]), n.op('Gather', [n.weight('transformer.wpe.weight', [maxPos, d], 0.3), positions])]);

  // Causal mask [seq, past+seq]: query i (at position past+i) sees keys j ≤ past+i: Trilu with k = past.
  const maskShape = n.op('Concat', [n.unsqueeze(seqLen, [0]), n.unsqueeze(total, [0])], { axis: 0 });
  const ones = n.op('ConstantOfShape', [maskShape], { value: makeTensor('value', DataType.FLOAT, [1], [1]) });
  const causal = n.op('Cast', [n.op('Trilu', [ones, pastLen], { upper: 0 })], { to: DataType.BOOL });
  const maskValue = n.scalar(-3.4028234663852886e38);
  const headShape = n.ints([0, 0, heads, hd]);

  for (let l = 0; l < layers; l++) {
    const p = `transformer.h.${l}.`;
    const h = ln(x, `${p}ln_1`);
    const [q, k, v] = n.ops('Split', [n.linear(h, `${p}attn.c_attn`, d, 3 * d, 1.3 / Math.sqrt(d))], { axis: 2 }, 3);
    const toHeads = (t: string) => n.op('Transpose', [n.op('Reshape', [t, headShape])], { perm: [0, 2, 1, 3] });
    const presentKey = g.op('Concat', [pasts[l].key, toHeads(k)], { axis: 2 }, `present_key.${l}`);
    const presentValue = g.op('Concat', [pasts[l].value, toHeads(v)], { axis: 2 }, `present_value.${l}`);
    const scores = n.op('Div', [n.op('MatMul', [toHeads(q), n.op('Transpose', [presentKey], { perm: [0, 1, 3, 2] })]), n.scalar(Math.sqrt(hd))]);
    const probs = n.op('Softmax', [n.op('Where', [causal, scores, maskValue])], { axis: -1 });
    const context = n.op('Reshape', [n.op('Transpose', [n.op('MatMul', [probs, presentValue])], { perm: [0, 2, 1, 3] }), n.ints([0, 0, d])]);
    x = n.op('Add', [x, n.linear(context, `${p}attn.c_proj`, d, d)]);
    const mlp = n.linear(n.geluTanh(n.linear(ln(x, `${p}ln_2`), `${p}mlp.c_fc`, d, ff)), `${p}mlp.c_proj`, ff, d, 0.8 / Math.sqrt(ff));
    x = n.op('Add', [x, mlp]);
  }
  // Tied LM head: the embedding matrix transposed.
  const lmHead = new Float32Array(d * vocab);
  for (let i = 0; i < vocab; i++) for (let j = 0; j < d; j++) lmHead[j * vocab + i] = wteValues[i * d + j];
  g.op('MatMul', [ln(x, 'transformer.ln_f'), n.tensor('lm_head.weight', [d, vocab], lmHead)], {}, 'logits');
  g.output('logits', DataType.FLOAT, ['batch', 'seq', vocab]);
  for (let l = 0; l < layers; l++) {
    g.output(`present_key.${l}`, DataType.FLOAT, ['batch', heads, 'total_seq', hd]);
    g.output(`present_value.${l}`, DataType.FLOAT, ['batch', heads, 'total_seq', hd]);
  }
  return modelOf(g, GPT_OPSET);
}


/** GPT feeds: `ids` [batch, seq] after a cache of `past` positions (zeros-length cache when past = 0). */
export function gptFeeds(ids: number[][], past: Record<string, ort.Tensor> | number, seed = 0): Feeds {
  const batch = ids.length;
  const seq = ids[0].length;
  const feeds: Feeds = { input_ids: int64Tensor(ids.flat(), [batch, seq]) };
  const hd = GPT.d / GPT.heads;
  for (let l = 0; l < GPT.layers; l++) {
    for (const kind of ['key', 'value']) {
      if (typeof past === 'number') feeds[`past_${kind}.${l}`] = normalTensor([batch, GPT.heads, past, hd], seed * 31 + l * 2 + (kind === 'key' ? 0 : 1), 1);
      else feeds[`past_${kind}.${l}`] = past[`present_${kind}.${l}`];
    }
  }
  return feeds;
}

function gptIds(seed: number, batch: number, seq: number): number[][] {
  const r = seededRandom(seed * 6151 + 5);
  return Array.from({ length: batch }, () => Array.from({ length: seq }, () => 3 + Math.floor(r() * (GPT.vocab - 3))));
}

// ---------------------------------------------------------------------------------------------
// Recurrent models (ONNX LSTM/GRU/RNN ops).

/** W, R, B of an LSTM (gates iofc), GRU (zrh) or RNN, scaled to the input's std, with the LSTM forget bias at +1. */
function recurrentWeights(n: Net, name: string, kind: 'LSTM' | 'GRU' | 'RNN', dirs: number, input: number, hidden: number, inputStd: number): [string, string, string] {
  const gates = kind === 'LSTM' ? 4 : kind === 'GRU' ? 3 : 1;
  const w = n.weight(`${name}.W`, [dirs, gates * hidden, input], 1.5 / Math.sqrt(input) / inputStd);
  const r = n.weight(`${name}.R`, [dirs, gates * hidden, hidden], (kind === 'RNN' ? 0.9 : 1) / Math.sqrt(hidden));
  const b = n.gaussianValues(dirs * 2 * gates * hidden, 0.05);
  if (kind === 'LSTM') for (let dd = 0; dd < dirs; dd++) for (let j = 0; j < hidden; j++) b[dd * 8 * hidden + 2 * hidden + j] += 1;
  return [w, r, n.tensor(`${name}.B`, [dirs, 2 * gates * hidden], b)];
}

interface RecurrentSpec {
  kind: 'LSTM' | 'GRU' | 'RNN';
  opset: number;
  seed: number;
  features: number;
  hidden: number;
  layers: number;
  bidirectional: boolean;
  /** initial_h (and initial_c) as model inputs */
  stateInputs: boolean;
  /** 'utterance': classify the last state; 'frames': a MatMul head on every frame */
  head: 'utterance' | 'frames';
  classes: number;
  extraAttrs?: Attrs;
}

function buildRecurrent(name: string, s: RecurrentSpec): ModelProto {
  const g = new GraphBuilder(name, s.seed);
  const n = new Net(g, s.opset);
  const dirs = s.bidirectional ? 2 : 1;
  const x = g.input('x', DataType.FLOAT, ['batch', 'seq', s.features]);
  const h0 = s.stateInputs ? g.input('initial_h', DataType.FLOAT, [s.layers * dirs, 'batch', s.hidden]) : '';
  const c0 = s.stateInputs && s.kind === 'LSTM' ? g.input('initial_c', DataType.FLOAT, [s.layers * dirs, 'batch', s.hidden]) : '';
  let seq = n.op('Transpose', [x], { perm: [1, 0, 2] });
  let input = s.features;
  const finals: string[][] = [];
  let y = '';
  for (let l = 0; l < s.layers; l++) {
    const [w, r, b] = recurrentWeights(n, `${s.kind.toLowerCase()}.${l}`, s.kind, dirs, input, s.hidden, l === 0 ? 1 : 0.4);
    const layerState = (state: string) => (state && s.layers > 1 ? n.op('Slice', [state, n.ints([l * dirs]), n.ints([(l + 1) * dirs]), n.ints([0])]) : state);
    const inputs = [seq, w, r, b, '', layerState(h0)];
    if (s.kind === 'LSTM') inputs.push(layerState(c0));
    while (inputs[inputs.length - 1] === '') inputs.pop();
    const outs = n.ops(s.kind, inputs, { hidden_size: s.hidden, ...(s.bidirectional ? { direction: 'bidirectional' } : {}), ...(s.extraAttrs ?? {}) }, s.kind === 'LSTM' ? 3 : 2);
    y = outs[0];
    finals.push(outs.slice(1));
    input = s.hidden * dirs;
    // Y [seq, dirs, batch, hidden] → [seq, batch, dirs·hidden] for the next layer.
    seq = dirs === 1 ? n.squeeze(y, [1]) : n.op('Reshape', [n.op('Transpose', [y], { perm: [0, 2, 1, 3] }), n.ints([0, 0, -1])]);
  }
  if (s.head === 'utterance') {
    const last = finals[finals.length - 1][0];
    const flat = dirs === 1 ? n.squeeze(last, [0]) : n.op('Reshape', [n.op('Transpose', [last], { perm: [1, 0, 2] }), n.ints([0, -1])]);
    g.op('Gemm', [flat, n.weight('classifier.weight', [s.classes, s.hidden * dirs], 2.5 / Math.sqrt(s.hidden * dirs)), n.weight('classifier.bias', [s.classes], 0.02)], { transB: 1 }, 'logits');
    g.output('logits', DataType.FLOAT, ['batch', s.classes]);
  } else {
    const frames = n.op('Transpose', [seq], { perm: [1, 0, 2] });
    const logits = n.linear(frames, 'classifier', s.hidden * dirs, s.classes, 2.5 / Math.sqrt(s.hidden * dirs));
    if (s.kind === 'RNN') {
      g.op('LogSoftmax', [logits], { axis: -1 }, 'log_probs');
      g.output('log_probs', DataType.FLOAT, ['batch', 'seq', s.classes]);
    } else {
      rename(g, logits, 'logits');
      g.output('logits', DataType.FLOAT, ['batch', 'seq', s.classes]);
    }
  }
  if (s.stateInputs) {
    const concat = (i: number) => (s.layers === 1 ? finals[0][i] : n.op('Concat', finals.map((f) => f[i]), { axis: 0 }));
    rename(g, concat(0), 'hn');
    g.output('hn', DataType.FLOAT, [s.layers * dirs, 'batch', s.hidden]);
    if (s.kind === 'LSTM') {
      rename(g, concat(1), 'cn');
      g.output('cn', DataType.FLOAT, [s.layers * dirs, 'batch', s.hidden]);
    }
  }
  return g.model({ opset: s.opset, irVersion: minIrForOpset(s.opset) });
}

function recurrentFeeds(s: RecurrentSpec, seed: number, batch = 2, seq = 20): Feeds {
  const feeds: Feeds = { x: frameSequence(seed, batch, seq, s.features) };
  const dirs = s.bidirectional ? 2 : 1;
  if (s.stateInputs) {
    feeds.initial_h = normalTensor([s.layers * dirs, batch, s.hidden], seed * 13 + 1, 0.3);
    if (s.kind === 'LSTM') feeds.initial_c = normalTensor([s.layers * dirs, batch, s.hidden], seed * 13 + 2, 0.6);
  }
  return feeds;
}

function recurrentEntry(e: { name: string; description: string; spec: RecurrentSpec; features: string[]; floor: { static: number; dynamic: number } }): CorpusEntry {
  return {
    name: e.name,
    family: 'recurrent',
    description: e.description,
    opset: e.spec.opset,
    irVersion: minIrForOpset(e.spec.opset),
    write: (dir) => writeModel(dir, e.name, () => buildRecurrent(e.name, e.spec)),
    feeds: (seed) => recurrentFeeds(e.spec, seed),
    sqnrFloor: e.floor,
    features: e.features,
  };
}

// ---------------------------------------------------------------------------------------------
// Control flow.

/** A small image batch [batch, 3, 32, 32]: smooth patterns; odd seeds brighter (mean > 0), even darker. */
function imageBatch(seed: number, batch = 2, size = 32): ort.Tensor {
  const r = seededRandom(seed * 2749 + 11);
  const normal = seededNormal(r);
  const data = new Float32Array(batch * 3 * size * size);
  const shift = seed % 2 === 1 ? 0.35 : -0.35;
  for (let b = 0; b < batch; b++) for (let c = 0; c < 3; c++) {
    const fx = 0.1 + 0.4 * r();
    const fy = 0.1 + 0.4 * r();
    const ph = 2 * Math.PI * r();
    for (let i = 0; i < size; i++) for (let j = 0; j < size; j++) {
      data[((b * 3 + c) * size + i) * size + j] = shift + 0.8 * Math.sin(fx * i + fy * j + ph) + 0.3 * normal();
    }
  }
  return new ort.Tensor('float32', data, [batch, 3, size, size]);
}

/** If whose branches (two conv stacks + MatMul/Gemm heads) read the outer graph's weights. */
function buildIfConv(name: string): ModelProto {
  const opset = 13;
  const g = new GraphBuilder(name, 404);
  const n = new Net(g, opset);
  const x = g.input('x', DataType.FLOAT, ['batch', 3, 32, 32]);
  const conv = (net: Net, input: string, w: string, b: string, attrs: Attrs) => net.op('Relu', [net.op('Conv', [input, w, b], attrs)]);
  const he = (cout: number, cin: number, k: number, at: string) => [n.weight(`${at}.weight`, [cout, cin, k, k], Math.sqrt(2 / (cin * k * k))), n.weight(`${at}.bias`, [cout], 0.05)];

  const [sw, sb] = he(16, 3, 3, 'stem.conv');
  const stem = conv(n, x, sw, sb, { pads: [1, 1, 1, 1] });
  const cond = n.op('Greater', [n.op('ReduceMean', [x], { keepdims: 0 }), n.scalar(0)]);

  // Weights of both branches live in the outer graph (outer-scope references from the bodies).
  const [t1w, t1b] = he(32, 16, 3, 'bright.conv1');
  const [t2w, t2b] = he(32, 32, 3, 'bright.conv2');
  const tfc = [n.weight('bright.fc.weight', [32, 10], 1 / Math.sqrt(32)), n.weight('bright.fc.bias', [10], 0.02)];
  const [e1w, e1b] = he(32, 16, 1, 'dark.conv1');
  const [e2w, e2b] = he(32, 32, 3, 'dark.conv2');
  const efc = [n.weight('dark.fc.weight', [10, 32], 1 / Math.sqrt(32)), n.weight('dark.fc.bias', [10], 0.02)];

  const tg = new GraphBuilder('bright_branch', 405);
  const t = new Net(tg, opset, 'bright/');
  let y = conv(t, stem, t1w, t1b, { pads: [1, 1, 1, 1], strides: [2, 2] });
  y = conv(t, y, t2w, t2b, { pads: [1, 1, 1, 1] });
  y = t.op('Flatten', [t.op('GlobalAveragePool', [y])], { axis: 1 });
  tg.op('Add', [t.op('MatMul', [y, tfc[0]]), tfc[1]], {}, 'bright/logits');
  tg.output('bright/logits', DataType.FLOAT);

  const eg = new GraphBuilder('dark_branch', 406);
  const e = new Net(eg, opset, 'dark/');
  let z = conv(e, stem, e1w, e1b, {});
  z = e.op('MaxPool', [z], { kernel_shape: [2, 2], strides: [2, 2] });
  z = conv(e, z, e2w, e2b, { pads: [1, 1, 1, 1] });
  z = e.op('Flatten', [e.op('GlobalAveragePool', [z])], { axis: 1 });
  eg.op('Gemm', [z, efc[0], efc[1]], { transB: 1 }, 'dark/logits');
  eg.output('dark/logits', DataType.FLOAT);

  g.node('If', [cond], { then_branch: tg.graph(), else_branch: eg.graph() }, { name: 'branch', outputs: ['logits'] });
  g.output('logits', DataType.FLOAT, ['batch', 10]);
  return modelOf(g, opset);
}

/** Loop: a hidden state refined `steps` times by a body with its own weights; per-step outputs stacked. */
function buildLoop(name: string): ModelProto {
  const opset = 17;
  const H = 64;
  const g = new GraphBuilder(name, 505);
  const n = new Net(g, opset);
  const z = g.input('z', DataType.FLOAT, ['batch', 32]);
  const steps = g.input('steps', DataType.INT64, []);
  const h0 = n.op('Tanh', [n.gemm(z, 'encoder', 32, H, 1.2 / Math.sqrt(32))]);
  const cond = g.constant('loop.cond', DataType.BOOL, [], Uint8Array.of(1));

  const bg = new GraphBuilder('refine_body', 506);
  const b = new Net(bg, opset, 'body/');
  const iter = bg.input('body/iter', DataType.INT64, []);
  const condIn = bg.input('body/cond_in', DataType.BOOL, []);
  const hIn = bg.input('body/h_in', DataType.FLOAT, ['batch', H]);
  // h ← h + ½·tanh(h·W + b + t·e), t = 0.1·iteration; y = h·Wo + bo.
  const time = b.op('Mul', [b.op('Mul', [b.op('Cast', [iter], { to: 1 }), b.scalar(0.1)]), b.weight('body.time_embedding', [H], 1)]);
  const update = b.op('Tanh', [b.op('Add', [b.linear(hIn, 'body.cell', H, H, 1.5 / Math.sqrt(H)), time])]);
  bg.op('Add', [hIn, b.op('Mul', [update, b.scalar(0.5)])], {}, 'body/h_out');
  bg.op('Identity', [condIn], {}, 'body/cond_out');
  const normed = b.op('LayerNormalization', ['body/h_out', b.tensor('body.norm.weight', [H], b.gaussianValues(H, 0.05, 1)), b.weight('body.norm.bias', [H], 0.02)], { axis: -1, epsilon: 1e-5 });
  bg.op('Add', [b.op('MatMul', [normed, b.weight('body.out.weight', [H, 16], 1 / Math.sqrt(H))]), b.weight('body.out.bias', [16], 0.02)], {}, 'body/y');
  bg.output('body/cond_out', DataType.BOOL, []);
  bg.output('body/h_out', DataType.FLOAT, ['batch', H]);
  bg.output('body/y', DataType.FLOAT, ['batch', 16]);

  g.node('Loop', [steps, cond, h0], { body: bg.graph() }, { name: 'refine', outputs: ['h_final', 'trajectory'] });
  g.op('Gemm', [n.op('LayerNormalization', ['h_final', n.tensor('head.norm.weight', [H], n.gaussianValues(H, 0.05, 1)), n.weight('head.norm.bias', [H], 0.02)], { axis: -1, epsilon: 1e-5 }), n.weight('head.weight', [10, H], 1 / Math.sqrt(H)), n.weight('head.bias', [10], 0.02)], { transB: 1 }, 'logits');
  g.output('logits', DataType.FLOAT, ['batch', 10]);
  g.output('trajectory', DataType.FLOAT, ['steps', 'batch', 16]);
  return modelOf(g, opset);
}

/** Scan: an Elman RNN written as a Scan over axis 1 of x [batch, seq, F]; the body reads outer-scope weights. */
function buildScan(name: string): ModelProto {
  const opset = 9;
  const F = 32;
  const H = 64;
  const g = new GraphBuilder(name, 606);
  const n = new Net(g, opset);
  const x = g.input('x', DataType.FLOAT, ['batch', 'seq', F]);
  const wx = n.weight('rnn.weight_ih', [F, H], 1 / Math.sqrt(F));
  const wh = n.weight('rnn.weight_hh', [H, H], 0.9 / Math.sqrt(H));
  const bias = n.weight('rnn.bias', [H], 0.05);
  const batch = n.op('Unsqueeze', [n.op('Gather', [n.op('Shape', [x]), n.ints([0], [])], { axis: 0 })], { axes: [0] });
  const h0 = n.op('ConstantOfShape', [n.op('Concat', [batch, n.ints([H])], { axis: 0 })]);

  const bg = new GraphBuilder('rnn_body', 607);
  const b = new Net(bg, opset, 'body/');
  const hIn = bg.input('body/h_in', DataType.FLOAT, ['batch', H]);
  const xt = bg.input('body/x_t', DataType.FLOAT, ['batch', F]);
  const pre = b.op('Add', [b.op('Add', [b.op('MatMul', [xt, wx]), b.op('MatMul', [hIn, wh])]), bias]);
  bg.op('Tanh', [pre], {}, 'body/h_out');
  bg.op('Identity', ['body/h_out'], {}, 'body/y_t');
  bg.output('body/h_out', DataType.FLOAT, ['batch', H]);
  bg.output('body/y_t', DataType.FLOAT, ['batch', H]);

  const [hT, ys] = g.node('Scan', [h0, x], { body: bg.graph(), num_scan_inputs: 1, scan_input_axes: [1], scan_output_axes: [1] }, { name: 'rnn', outputs: ['h_last', 'states'] });
  g.op('Add', [n.op('MatMul', [ys, n.weight('frame_head.weight', [H, 8], 1 / Math.sqrt(H))]), n.weight('frame_head.bias', [8], 0.02)], {}, 'frame_logits');
  g.op('Gemm', [hT, n.weight('head.weight', [5, H], 1 / Math.sqrt(H)), n.weight('head.bias', [5], 0.02)], { transB: 1 }, 'logits');
  g.output('frame_logits', DataType.FLOAT, ['batch', 'seq', 8]);
  g.output('logits', DataType.FLOAT, ['batch', 5]);
  return modelOf(g, opset);
}

// ---------------------------------------------------------------------------------------------
// Silero-VAD-like model: If (sr == 16000) over two full pipelines, each STFT-conv → log magnitude →
// conv encoder → 2-layer LSTM carrying h/c → conv decoder + sigmoid.

export const VAD_OPSET = 16;
export const VAD_CHUNK = 512;
const VAD_HIDDEN = 64;

interface VadBranch {
  tag: string;
  seed: number;
  nfft: number;
  hop: number;
  /**
   * What training would have taught the network, set by hand from the statistics of `vadStream`:
   * per encoder conv, the gain of a loudness path (the channel mean of its input, added to every
   * output channel) and the input level it is centred on; per LSTM layer, the same for the cell
   * candidate; the decoder's scale and bias over the mean ReLU of the last LSTM's outputs.
   */
  encoderLevel: Array<[number, number]>;
  lstmLevel: Array<[number, number]>;
  decoder: [number, number];
}

// Levels measured on vadStream (seeds 1–5), 16 kHz / 8 kHz: mean log-magnitude ≈ 3.0 / 2.8 in
// silence and ≥ 3.7 in speech; the encoder output's mean ≈ 0.06 / 0.10 in silence and ≥ 0.11 / 0.23
// in speech; the first LSTM's mean output ≈ −0.28 in silence, +0.3 in speech; the decoder's mean
// ReLU feature ≈ 0.01–0.12 in silence (the hangover after speech included) and 0.25–0.35 in speech,
// which the decoder maps to p ≈ 0.01–0.15 and 0.95–0.99.
const VAD_BRANCHES: Record<'16k' | '8k', VadBranch> = {
  '16k': { tag: '16k', seed: 716, nfft: 256, hop: 128, encoderLevel: [[1, 3.4], [0, 0], [0, 0], [0, 0]], lstmLevel: [[16, 0.085], [10, 0.02]], decoder: [32, -5.3] },
  '8k': { tag: '8k', seed: 708, nfft: 128, hop: 64, encoderLevel: [[1, 3.2], [0, 0], [0, 0], [0, 0]], lstmLevel: [[12, 0.15], [10, 0.02]], decoder: [24, -4] },
};

function vadBranch(spec: VadBranch, outerInput: string, outerH: string, outerC: string): GraphProto {
  const g = new GraphBuilder(`vad_${spec.tag}`, spec.seed);
  const n = new Net(g, VAD_OPSET, `${spec.tag}/`);
  const p = `_model_${spec.tag}.`;
  const bins = spec.nfft / 2 + 1;
  const H = VAD_HIDDEN;

  // STFT as a strided Conv1d with Hann-windowed cos / −sin kernels, on reflect-padded audio.
  const kernel = new Float32Array(2 * bins * spec.nfft);
  for (let k = 0; k < bins; k++) for (let t = 0; t < spec.nfft; t++) {
    const w = 0.5 - 0.5 * Math.cos((2 * Math.PI * t) / spec.nfft);
    kernel[k * spec.nfft + t] = w * Math.cos((2 * Math.PI * k * t) / spec.nfft);
    kernel[(bins + k) * spec.nfft + t] = -w * Math.sin((2 * Math.PI * k * t) / spec.nfft);
  }
  const audio = n.op('Pad', [n.unsqueeze(outerInput, [1]), n.ints([0, 0, spec.nfft / 2, 0, 0, spec.nfft / 2])], { mode: 'reflect' });
  const stft = n.op('Conv', [audio, n.tensor(`${p}feature_extractor.forward_basis_buffer`, [2 * bins, 1, spec.nfft], kernel)], { strides: [spec.hop] });
  const re = n.op('Slice', [stft, n.ints([0]), n.ints([bins]), n.ints([1])]);
  const im = n.op('Slice', [stft, n.ints([bins]), n.ints([2 * bins]), n.ints([1])]);
  const magnitude = n.op('Sqrt', [n.op('Add', [n.op('Pow', [re, n.scalar(2)]), n.op('Pow', [im, n.scalar(2)])])]);
  const logMag = n.op('Log', [n.op('Add', [n.op('Mul', [magnitude, n.scalar(1000)]), n.scalar(1)])]);

  // Encoder: four Conv1d + ReLU, two of them strided.
  let x = logMag;
  const layers: Array<[number, number, number]> = [[bins, H, 1], [H, H, 2], [H, H, 2], [H, H, 1]];
  layers.forEach(([cin, cout, stride], i) => {
    const [gain, level] = spec.encoderLevel[i];
    const w = n.gaussianValues(cout * cin * 3, (i === 0 ? 0.25 : 0.7) * Math.sqrt(2 / (cin * 3)));
    for (let j = 0; j < w.length; j++) w[j] += gain / (cin * 3);
    const b = n.gaussianValues(cout, 0.05);
    for (let j = 0; j < cout; j++) b[j] -= gain * level;
    const conv = n.op('Conv', [x, n.tensor(`${p}encoder.${i}.reparam_conv.weight`, [cout, cin, 3], w), n.tensor(`${p}encoder.${i}.reparam_conv.bias`, [cout], b)], { pads: [1, 1], strides: [stride] });
    x = n.op('Relu', [conv]);
  });

  // Two LSTM layers; the state halves come from the outer-scope h/c inputs.
  const [h0, h1] = n.ops('Split', [outerH], { axis: 0 }, 2);
  const [c0, c1] = n.ops('Split', [outerC], { axis: 0 }, 2);
  let seq = n.op('Transpose', [x], { perm: [2, 0, 1] });
  const finals: string[][] = [];
  for (let l = 0; l < 2; l++) {
    const [gain, level] = spec.lstmLevel[l];
    const name = `${p}decoder.rnn.${l}`;
    const w = n.gaussianValues(4 * H * H, 1.5 / Math.sqrt(H) / (l === 0 ? 0.5 : 0.3));
    const r = n.gaussianValues(4 * H * H, 1 / Math.sqrt(H));
    const bias = n.gaussianValues(8 * H, 0.05);
    // Gates i, o, f, c: output gates mostly open, forget bias (layer 1 remembers a few chunks), the loudness path into c.
    for (let j = 0; j < H; j++) {
      bias[H + j] += 1;
      bias[2 * H + j] += l === 0 ? 1.5 : 0;
      bias[3 * H + j] -= gain * level;
      for (let k = 0; k < H; k++) w[(3 * H + j) * H + k] += gain / H;
    }
    const [y, yh, yc] = n.ops('LSTM', [seq, n.tensor(`${name}.W`, [1, 4 * H, H], w), n.tensor(`${name}.R`, [1, 4 * H, H], r), n.tensor(`${name}.B`, [1, 8 * H], bias), '', l === 0 ? h0 : h1, l === 0 ? c0 : c1], { hidden_size: H }, 3);
    finals.push([yh, yc]);
    seq = n.squeeze(y, [1]);
  }
  // Decoder: ReLU → Conv1d(64→1, k=1) → Sigmoid → mean over frames.
  const feats = n.op('Relu', [n.op('Transpose', [seq], { perm: [1, 2, 0] })]);
  const [scale, offset] = spec.decoder;
  const w = n.gaussianValues(H, 0.3 / H, 1 / H).map((v) => v * scale);
  const prob = n.op('Sigmoid', [n.op('Conv', [feats, n.tensor(`${p}decoder.decoder.2.weight`, [1, H, 1], w), n.tensor(`${p}decoder.decoder.2.bias`, [1], [offset])])]);
  g.op('ReduceMean', [n.squeeze(prob, [1])], { axes: [1], keepdims: 1 }, `${spec.tag}/output`);
  g.op('Concat', [finals[0][0], finals[1][0]], { axis: 0 }, `${spec.tag}/hn`);
  g.op('Concat', [finals[0][1], finals[1][1]], { axis: 0 }, `${spec.tag}/cn`);
  g.output(`${spec.tag}/output`, DataType.FLOAT);
  g.output(`${spec.tag}/hn`, DataType.FLOAT);
  g.output(`${spec.tag}/cn`, DataType.FLOAT);
  return g.graph();
}

function buildVad(name: string): ModelProto {
  const g = new GraphBuilder(name, 700);
  const n = new Net(g, VAD_OPSET);
  const input = g.input('input', DataType.FLOAT, [1, VAD_CHUNK]);
  const sr = g.input('sr', DataType.INT64, []);
  const h = g.input('h', DataType.FLOAT, [2, 1, VAD_HIDDEN]);
  const c = g.input('c', DataType.FLOAT, [2, 1, VAD_HIDDEN]);
  const is16k = n.op('Equal', [sr, n.ints([16000], [])]);
  g.node('If', [is16k], { then_branch: vadBranch(VAD_BRANCHES['16k'], input, h, c), else_branch: vadBranch(VAD_BRANCHES['8k'], input, h, c) }, { name: 'If_sr', outputs: ['output', 'hn', 'cn'] });
  g.output('output', DataType.FLOAT, [1, 1]);
  g.output('hn', DataType.FLOAT, [2, 1, VAD_HIDDEN]);
  g.output('cn', DataType.FLOAT, [2, 1, VAD_HIDDEN]);
  return modelOf(g, VAD_OPSET);
}

/** Which chunks of `vadStream(count, seed)` hold speech (the rest is low noise). */
export function vadSpeechChunks(count: number, seed: number): boolean[] {
  const r = seededRandom(seed * 9176 + 1);
  const speech = new Array<boolean>(count).fill(false);
  // Alternating silence / speech spans of 6–14 chunks, starting with silence.
  let at = 4 + Math.floor(r() * 5);
  let on = true;
  while (at < count) {
    const len = 6 + Math.floor(r() * 9);
    for (let i = at; i < Math.min(count, at + len); i++) speech[i] = on;
    at += len;
    on = !on;
  }
  return speech;
}

/**
 * A stream of `count` chunks of 512 samples at `sr`: bursts of voiced, syllable-modulated
 * harmonic tones (f0 100–220 Hz, formant-shaped harmonics, amplitude ≈ 0.1–0.3) between spans of
 * low noise. Each feed has `input` and `sr`, and zero `h`/`c`: a caller carries `hn`/`cn` over.
 */
export function vadStream(count: number, seed: number, sr = 16000): Feeds[] {
  const speech = vadSpeechChunks(count, seed);
  const r = seededRandom(seed * 4421 + 7);
  const normal = seededNormal(r);
  const total = count * VAD_CHUNK;
  const signal = new Float32Array(total);
  const formants = [500 + 300 * r(), 1400 + 500 * r(), 2500 + 500 * r()];
  let phase0 = 0;
  let f0 = 100 + 120 * r();
  const syllableRate = 3 + 2 * r();
  for (let i = 0; i < total; i++) {
    const t = i / sr;
    const chunk = Math.floor(i / VAD_CHUNK);
    let v = 0.003 * normal();
    if (speech[chunk]) {
      // f0 drifts slowly; formants move with the syllable phase.
      f0 += (140 + 60 * Math.sin(2 * Math.PI * 0.7 * t) - f0) * 0.0005;
      phase0 += (2 * Math.PI * f0) / sr;
      const syllable = Math.sin(2 * Math.PI * syllableRate * t);
      const envelope = 0.15 + 0.85 * Math.max(0, syllable) ** 0.7;
      let voiced = 0;
      for (let k = 1; k * f0 < sr / 2 - 200 && k <= 40; k++) {
        const f = k * f0;
        let gain = 0;
        for (let j = 0; j < formants.length; j++) {
          const fc = formants[j] * (1 + 0.12 * syllable * (j === 0 ? 1 : -1));
          gain += 1 / (1 + ((f - fc) / (80 + 40 * j)) ** 2) / (j + 1);
        }
        voiced += (gain / Math.sqrt(k)) * Math.sin(k * phase0);
      }
      v += 0.3 * envelope * voiced + 0.02 * envelope * normal();
    }
    signal[i] = v;
  }
  const zeros = () => new ort.Tensor('float32', new Float32Array(2 * VAD_HIDDEN), [2, 1, VAD_HIDDEN]);
  return Array.from({ length: count }, (_, k) => ({
    input: new ort.Tensor('float32', signal.slice(k * VAD_CHUNK, (k + 1) * VAD_CHUNK), [1, VAD_CHUNK]),
    sr: new ort.Tensor('int64', BigInt64Array.of(BigInt(sr)), []),
    h: zeros(),
    c: zeros(),
  }));
}

/** Runs a VAD stream through `run`, carrying hn/cn into the next chunk's h/c; returns the probabilities. */
export async function runVadStream(run: (feeds: Feeds) => Promise<Record<string, ort.Tensor>>, stream: Feeds[]): Promise<number[]> {
  const probs: number[] = [];
  let state: { h: ort.Tensor; c: ort.Tensor } | undefined;
  for (const chunk of stream) {
    const out = await run(state ? { ...chunk, ...state } : chunk);
    probs.push((out.output.data as Float32Array)[0]);
    state = { h: out.hn, c: out.cn };
  }
  return probs;
}

function vadFeeds(seed: number): Feeds {
  const stream = vadStream(24, seed);
  const speech = vadSpeechChunks(24, seed);
  const pick = speech.lastIndexOf(true) >= 0 ? speech.lastIndexOf(true) : 23;
  return { ...stream[pick], h: normalTensor([2, 1, VAD_HIDDEN], seed * 3 + 1, 0.2), c: normalTensor([2, 1, VAD_HIDDEN], seed * 3 + 2, 0.5) };
}

// ---------------------------------------------------------------------------------------------
// The entries.

const BERT13: EncoderSpec = { seed: 113, opset: 13, vocab: 1000, maxPos: 128, d: 64, heads: 4, ff: 256, layers: 2, layerNormOp: false, dtype: DataType.FLOAT, tokenTypes: true, head: 'bert-model', classes: 0 };
const BERT17: EncoderSpec = { seed: 117, opset: 17, vocab: 1000, maxPos: 128, d: 96, heads: 6, ff: 384, layers: 2, layerNormOp: true, dtype: DataType.FLOAT, tokenTypes: true, head: 'token-classifier', classes: 9 };
const DISTIL12: EncoderSpec = { seed: 112, opset: 12, vocab: 2000, maxPos: 128, d: 64, heads: 4, ff: 256, layers: 2, layerNormOp: false, dtype: DataType.FLOAT, tokenTypes: false, head: 'sequence-classifier', classes: 2 };
const MINILM16: EncoderSpec = { seed: 116, opset: 17, vocab: 1000, maxPos: 128, d: 64, heads: 4, ff: 256, layers: 3, layerNormOp: true, dtype: DataType.FLOAT16, tokenTypes: true, head: 'mean-pool', classes: 0 };

const LSTM7: RecurrentSpec = { kind: 'LSTM', opset: 7, seed: 207, features: 40, hidden: 64, layers: 2, bidirectional: false, stateInputs: false, head: 'utterance', classes: 10 };
const LSTM14: RecurrentSpec = { kind: 'LSTM', opset: 14, seed: 214, features: 32, hidden: 48, layers: 1, bidirectional: true, stateInputs: true, head: 'frames', classes: 12 };
const GRU13: RecurrentSpec = { kind: 'GRU', opset: 13, seed: 213, features: 40, hidden: 64, layers: 2, bidirectional: false, stateInputs: false, head: 'utterance', classes: 10, extraAttrs: { linear_before_reset: 1 } };
const RNN12: RecurrentSpec = { kind: 'RNN', opset: 12, seed: 212, features: 24, hidden: 64, layers: 1, bidirectional: false, stateInputs: false, head: 'frames', classes: 20 };

const TRANSFORMER_FLOOR = { static: 20, dynamic: 25 };
const RECURRENT_FLOOR = { static: 20, dynamic: 20 };

export const SEQUENCE_CORPUS: CorpusEntry[] = [
  encoderEntry({
    name: 'bert-encoder-op13',
    description: 'BERT-base-like encoder (2 layers, d 64, 4 heads) as HF/torch export at opset 13: word+position(Slice of position_ids buffer)+token-type Gather embeddings, decomposed LayerNorm (ReduceMean/Sub/Pow/Sqrt/Div), MatMul/Reshape/Transpose/Softmax attention with a −10000 mask bias, Erf GELU; outputs last_hidden_state and Tanh pooler_output',
    spec: BERT13,
    features: ['dynamic-seq', 'attention-mask', 'token-type-ids', 'decomposed-layernorm', 'erf-gelu', 'gather-embedding'],
    floor: TRANSFORMER_FLOOR,
  }),
  encoderEntry({
    name: 'bert-ner-op17-layernorm',
    description: 'BERT token classifier (NER head, 9 tags per token; 2 layers, d 96, 6 heads) at opset 17 with the LayerNormalization op',
    spec: BERT17,
    features: ['dynamic-seq', 'attention-mask', 'token-type-ids', 'layernorm-op', 'erf-gelu', 'gather-embedding'],
    floor: TRANSFORMER_FLOOR,
  }),
  {
    name: 'gpt2-kv-cache-op14',
    family: 'transformer',
    description: 'GPT-2-like decoder (2 layers, d 64, 4 heads, vocab 1000) with KV cache at opset 14: inputs input_ids [batch, seq] and past_key.N/past_value.N [batch, 4, past_seq, 16]; Range positions from the past length, causal mask from Trilu(k = past) and Where(mask, scores, float min), fused c_attn + Split, tanh GELU, pre-LN (decomposed), tied LM head; outputs logits and present_key.N/present_value.N (Concat of past and new). feeds: 4 new tokens after a random 5-position cache',
    opset: GPT_OPSET,
    irVersion: minIrForOpset(GPT_OPSET),
    write: (dir) => writeModel(dir, 'gpt2-kv-cache-op14', () => buildGpt('gpt2-kv-cache-op14')),
    feeds: (seed) => gptFeeds(gptIds(seed, 2, 4), 5, seed),
    sqnrFloor: { static: 18, dynamic: 22 },
    features: ['kv-cache', 'dynamic-seq', 'causal-mask-trilu', 'where-mask', 'split-qkv', 'tanh-gelu', 'decomposed-layernorm', 'range-positions', 'tied-lm-head'],
  },
  encoderEntry({
    name: 'distilbert-classifier-op12-external',
    description: 'DistilBERT-like sequence classifier (2 layers, d 64, no token types, [CLS] → Gemm+ReLU → Gemm, 2 classes) at opset 12 (Unsqueeze with attribute axes), saved with external data (tensors ≥ 1 KiB in <name>.onnx.data)',
    spec: DISTIL12,
    features: ['external-data', 'attention-mask', 'decomposed-layernorm', 'erf-gelu', 'gemm-head'],
    floor: TRANSFORMER_FLOOR,
    externalData: true,
  }),
  encoderEntry({
    name: 'minilm-sentence-fp16-op17',
    description: 'MiniLM-like sentence encoder in float16 (3 layers, d 64; all weights and activations float16, LayerNormalization op, Erf GELU), masked mean pooling and L2 normalization; int64 inputs, output sentence_embedding cast to float32 (as converted with keep_io_types)',
    spec: MINILM16,
    features: ['fp16', 'layernorm-op', 'erf-gelu', 'attention-mask', 'mean-pooling', 'dynamic-seq'],
    floor: TRANSFORMER_FLOOR,
  }),
  recurrentEntry({
    name: 'lstm-op7-ir3',
    description: 'Keyword-spotting-like 2-layer LSTM (40 features, hidden 64) at opset 7 / IR 3 with every initializer also listed as a graph input (old converters); last hidden state → Gemm classifier',
    spec: LSTM7,
    features: ['lstm', 'ir3-initializer-inputs', 'stacked', 'gemm-head', 'dynamic-seq'],
    floor: RECURRENT_FLOOR,
  }),
  recurrentEntry({
    name: 'lstm-bidir-op14',
    description: 'Bidirectional LSTM tagger (32 features, hidden 48) at opset 14 with initial_h/initial_c inputs and hn/cn outputs; per-frame MatMul head on the concatenated directions',
    spec: LSTM14,
    features: ['lstm', 'bidirectional', 'state-inputs', 'dynamic-seq'],
    floor: RECURRENT_FLOOR,
  }),
  recurrentEntry({
    name: 'gru-op13',
    description: '2-layer GRU classifier (40 features, hidden 64, linear_before_reset=1 as PyTorch exports) at opset 13 (Squeeze with an axes input); last hidden state → Gemm',
    spec: GRU13,
    features: ['gru', 'stacked', 'gemm-head', 'dynamic-seq'],
    floor: RECURRENT_FLOOR,
  }),
  recurrentEntry({
    name: 'rnn-ctc-op12',
    description: 'Vanilla tanh RNN (24 features, hidden 64) at opset 12 with a per-frame MatMul head and LogSoftmax, CTC-style',
    spec: RNN12,
    features: ['rnn', 'dynamic-seq', 'log-softmax'],
    floor: RECURRENT_FLOOR,
  }),
  {
    name: 'if-conv-branches-op13',
    family: 'control-flow',
    description: 'Image classifier whose If (condition computed: mean(x) > 0) picks one of two conv stacks (Conv+ReLU, strided or MaxPool, GlobalAveragePool, MatMul or Gemm head); the branches use weights defined in the outer graph and the outer stem Conv output. feeds: odd seeds take the then-branch, even seeds the else-branch',
    opset: 13,
    irVersion: minIrForOpset(13),
    write: (dir) => writeModel(dir, 'if-conv-branches-op13', () => buildIfConv('if-conv-branches-op13')),
    feeds: (seed) => ({ x: imageBatch(seed) }),
    sqnrFloor: { static: 25, dynamic: 25 },
    features: ['if', 'computed-condition', 'outer-scope-weights', 'conv-in-body', 'matmul-in-body'],
  },
  {
    name: 'loop-refine-op17',
    family: 'control-flow',
    description: 'Iterative refinement: Loop runs `steps` (int64 scalar input) times over a hidden state; the body has its own initializers (MatMul cell, time embedding from the iteration number, LayerNormalization, output MatMul) and a scan output stacked as trajectory [steps, batch, 16]; final state → LayerNorm → Gemm. feeds: steps 6',
    opset: 17,
    irVersion: minIrForOpset(17),
    write: (dir) => writeModel(dir, 'loop-refine-op17', () => buildLoop('loop-refine-op17')),
    feeds: (seed) => ({ z: normalTensor([2, 32], seed * 17 + 4), steps: new ort.Tensor('int64', BigInt64Array.of(6n), []) }),
    sqnrFloor: { static: 20, dynamic: 20 },
    features: ['loop', 'body-initializers', 'loop-scan-output', 'iteration-number', 'matmul-in-body', 'trip-count-input'],
  },
  {
    name: 'scan-rnn-op9',
    family: 'control-flow',
    description: 'Elman RNN written as Scan (opset 9, scan_input_axes/scan_output_axes [1] over x [batch, seq, 32]); the body MatMuls read weights from the outer graph; initial state from ConstantOfShape; per-frame MatMul head on the stacked states and Gemm on the last state',
    opset: 9,
    irVersion: minIrForOpset(9),
    write: (dir) => writeModel(dir, 'scan-rnn-op9', () => buildScan('scan-rnn-op9')),
    feeds: (seed) => ({ x: frameSequence(seed + 1000, 2, 20, 32) }),
    sqnrFloor: { static: 20, dynamic: 20 },
    features: ['scan', 'outer-scope-weights', 'matmul-in-body', 'scan-axes', 'dynamic-seq'],
  },
  {
    name: 'silero-vad-like-op16',
    family: 'control-flow',
    description: 'Silero VAD v4-like at opset 16: inputs input [1, 512], sr (int64 scalar), h/c [2, 1, 64]; If(sr == 16000) between a 16 kHz and an 8 kHz pipeline, each with its own initializers: reflect Pad, STFT as Conv1d with Hann-windowed sinusoid kernels (stride = hop), magnitude (Pow/Add/Sqrt) and log, 4 Conv1d+ReLU encoder layers, 2 LSTM layers started from outer-scope h/c, ReLU → Conv1d → Sigmoid → mean; outputs output [1, 1], hn, cn. feeds: one speech chunk at 16 kHz with a random state; vadStream() gives the 60-chunk stream',
    opset: VAD_OPSET,
    irVersion: minIrForOpset(VAD_OPSET),
    write: (dir) => writeModel(dir, 'silero-vad-like-op16', () => buildVad('silero-vad-like-op16')),
    feeds: vadFeeds,
    sqnrFloor: { static: 20, dynamic: 20 },
    features: ['if', 'lstm', 'stateful', 'body-initializers', 'outer-scope-inputs', 'stft-conv', 'reflect-pad', 'sigmoid-output'],
  },
];
