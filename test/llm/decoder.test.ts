import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { loadModel, readTensor } from '../../sdk';
import { decodeModel, encodeModel, newValueInfo } from '../../sdk/onnx/proto';
import { onnxCheck, requireChecker, seededRandom, tempDir } from '../helpers';
import { DecoderResult, DecoderShape, OUTLIER_GAINS, SHAPES, decoderParamCount, generateDecoder } from './decoder';

const S = SHAPES.tiny;
const HD = S.hidden / S.heads;

type Feeds = Record<string, ort.Tensor>;

const i64 = (rows: number[][]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0].length]);

/** Feeds of one step: tokens (rows), mask over past + new tokens, positions, cache (empty when none). */
function feeds(ids: number[][], mask: number[][], positions: number[][], past?: Record<string, ort.Tensor>, shape: DecoderShape = S): Feeds {
  const f: Feeds = { input_ids: i64(ids), attention_mask: i64(mask), position_ids: i64(positions) };
  for (let i = 0; i < shape.layers; i++) for (const kv of ['key', 'value']) {
    f[`past_key_values.${i}.${kv}`] = past?.[`present.${i}.${kv}`] ?? new ort.Tensor('float32', new Float32Array(0), [ids.length, shape.kvHeads, 0, shape.hidden / shape.heads]);
  }
  return f;
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const ones = (n: number) => Array(n).fill(1);

function tokens(n: number, seed: number): number[] {
  const r = seededRandom(seed);
  return Array.from({ length: n }, () => Math.floor(r() * S.vocab));
}

/** Logits of row `b`, position `t` of a [batch, seq, vocab] output. */
function logitsAt(out: ort.Tensor, b: number, t: number): Float32Array {
  const [, seq, vocab] = out.dims;
  return (out.data as Float32Array).slice((b * seq + t) * vocab, (b * seq + t + 1) * vocab);
}

/** max |a − b| / max |b| */
function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

function filesOf(dir: string): Record<string, Buffer> {
  return Object.fromEntries(fs.readdirSync(dir).sort().map((f) => [f, fs.readFileSync(path.join(dir, f))]));
}

/**
 * The decoder computed directly from its weights (HF Llama semantics), one unpadded sequence
 * at positions 0…n−1: logits per position.
 */
function referenceLogits(model: ReturnType<typeof loadModel>, ids: number[]): Float32Array[] {
  const W = (name: string) => readTensor(model.graph.initializer(name)!).data as Float32Array;
  const n = ids.length;
  const H = S.hidden;
  const groups = S.heads / S.kvHeads;
  const matmul = (x: Float32Array[], w: Float32Array, cols: number) => x.map((row) => {
    const y = new Float32Array(cols);
    for (let i = 0; i < row.length; i++) for (let j = 0; j < cols; j++) y[j] += row[i] * w[i * cols + j];
    return y;
  });
  const rms = (x: Float32Array[], w: Float32Array) => x.map((row) => {
    const r = Math.sqrt(row.reduce((a, v) => a + v * v, 0) / row.length + S.rmsEps);
    return row.map((v, i) => (v / r) * w[i]);
  });
  const rope = (row: Float32Array, heads: number, p: number) => {
    const y = new Float32Array(row.length);
    for (let h = 0; h < heads; h++) for (let j = 0; j < HD / 2; j++) {
      const a = p / S.ropeTheta ** ((2 * j) / HD);
      const x1 = row[h * HD + j];
      const x2 = row[h * HD + j + HD / 2];
      y[h * HD + j] = x1 * Math.cos(a) - x2 * Math.sin(a);
      y[h * HD + j + HD / 2] = x2 * Math.cos(a) + x1 * Math.sin(a);
    }
    return y;
  };
  const emb = W('model.embed_tokens.weight');
  let h = ids.map((id) => emb.slice(id * H, (id + 1) * H));
  for (let l = 0; l < S.layers; l++) {
    const P = `model.layers.${l}`;
    const x = rms(h, W(`${P}.input_layernorm.weight`));
    const q = matmul(x, W(`${P}.self_attn.q_proj.weight`), S.heads * HD).map((r, p) => rope(r, S.heads, p));
    const k = matmul(x, W(`${P}.self_attn.k_proj.weight`), S.kvHeads * HD).map((r, p) => rope(r, S.kvHeads, p));
    const v = matmul(x, W(`${P}.self_attn.v_proj.weight`), S.kvHeads * HD);
    const ctx = q.map((qr, t) => {
      const o = new Float32Array(S.heads * HD);
      for (let hh = 0; hh < S.heads; hh++) {
        const kh = Math.floor(hh / groups); // repeat_kv: query heads g·k … g·k+g−1 read KV head k
        const sc = range(0, t + 1).map((j) => {
          let d = 0;
          for (let e = 0; e < HD; e++) d += qr[hh * HD + e] * k[j][kh * HD + e];
          return d / Math.sqrt(HD);
        });
        const m = Math.max(...sc);
        const ex = sc.map((z) => Math.exp(z - m));
        const sum = ex.reduce((a, b) => a + b, 0);
        ex.forEach((pj, j) => { for (let e = 0; e < HD; e++) o[hh * HD + e] += (pj / sum) * v[j][kh * HD + e]; });
      }
      return o;
    });
    const attn = matmul(ctx, W(`${P}.self_attn.o_proj.weight`), H);
    h = h.map((r, t) => r.map((z, i) => z + attn[t][i]));
    const m = rms(h, W(`${P}.post_attention_layernorm.weight`));
    const gate = matmul(m, W(`${P}.mlp.gate_proj.weight`), S.intermediate);
    const up = matmul(m, W(`${P}.mlp.up_proj.weight`), S.intermediate);
    const act = gate.map((r, t) => r.map((g, i) => (g / (1 + Math.exp(-g))) * up[t][i]));
    const down = matmul(act, W(`${P}.mlp.down_proj.weight`), H);
    h = h.map((r, t) => r.map((z, i) => z + down[t][i]));
  }
  return matmul(rms(h, W('model.norm.weight')), W('lm_head.weight'), S.vocab);
}

describe('llm: Llama-style decoder generator', () => {
  const dir = tempDir('quantbook-llm-');
  let tiny: DecoderResult;
  let session: ort.InferenceSession;

  before(async () => {
    tiny = generateDecoder(path.join(dir, 'tiny'), { shape: 'tiny', seed: 7 });
    session = await ort.InferenceSession.create(tiny.modelPath);
  });
  after(async () => {
    await session?.release();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('loads in ORT with the Optimum decoder-with-past inputs and outputs, dynamic batch and sequence; onnx.checker accepts it', async function () {
    const cache = range(0, S.layers).flatMap((i) => [`${i}.key`, `${i}.value`]);
    assert.deepEqual(session.inputNames, ['input_ids', 'attention_mask', 'position_ids', ...cache.map((c) => `past_key_values.${c}`)]);
    assert.deepEqual(session.outputNames, ['logits', ...cache.map((c) => `present.${c}`)]);
    const graph = decodeModel(fs.readFileSync(tiny.modelPath)).graph!;
    const dims = (name: string) => [...graph.input, ...graph.output].find((v) => v.name === name)!.type!.tensor_type!.shape!.dim.map((d) => d.dim_param || Number(d.dim_value));
    assert.deepEqual(dims('input_ids'), ['batch_size', 'sequence_length']);
    assert.deepEqual(dims('attention_mask'), ['batch_size', 'past_sequence_length + sequence_length']);
    assert.deepEqual(dims('past_key_values.1.value'), ['batch_size', S.kvHeads, 'past_sequence_length', HD]);
    assert.deepEqual(dims('present.0.key'), ['batch_size', S.kvHeads, 'past_sequence_length + sequence_length', HD]);
    for (const op of ['Pow', 'ReduceMean', 'Sqrt', 'Div', 'Cos', 'Sin', 'Expand', 'Softmax', 'Sigmoid']) {
      assert.ok(graph.node.some((n) => n.op_type === op), `the graph has a ${op}`);
    }

    for (const [batch, seq] of [[1, 3], [3, 6]]) {
      const out = await session.run(feeds(range(0, batch).map((b) => tokens(seq, b)), range(0, batch).map(() => ones(seq)), range(0, batch).map(() => range(0, seq))));
      assert.deepEqual(out.logits.dims, [batch, seq, S.vocab]);
      assert.deepEqual(out['present.1.value'].dims, [batch, S.kvHeads, seq, HD]);
      assert.ok((out.logits.data as Float32Array).every(Number.isFinite));
    }
    requireChecker(this);
    // on its own copy: check_model(full_check) writes the shape-inferred model back to the file
    onnxCheck(generateDecoder(path.join(dir, 'checked'), { shape: 'tiny', seed: 7 }).modelPath);
  });

  it('prefill of N tokens then one decode step with the returned cache gives the logits of a prefill of N+1 (1e-4 relative)', async () => {
    const N = 9;
    const rows = [tokens(N + 1, 11), tokens(N + 1, 12)];
    const prefill = await session.run(feeds(rows.map((r) => r.slice(0, N)), [ones(N), ones(N)], [range(0, N), range(0, N)]));
    const step = await session.run(feeds(rows.map((r) => [r[N]]), [ones(N + 1), ones(N + 1)], [[N], [N]], prefill));
    const full = await session.run(feeds(rows, [ones(N + 1), ones(N + 1)], [range(0, N + 1), range(0, N + 1)]));
    assert.deepEqual(step['present.0.key'].dims, [2, S.kvHeads, N + 1, HD]);
    for (const b of [0, 1]) {
      const e = relErr(logitsAt(step.logits, b, 0), logitsAt(full.logits, b, N));
      assert.ok(e <= 1e-4, `row ${b}: decode vs prefill logits differ by ${e} relative`);
    }
    // the earlier positions of a longer prefill do not see later tokens (causal): same logits as prefill N
    assert.ok(relErr(logitsAt(prefill.logits, 1, N - 1), logitsAt(full.logits, 1, N - 1)) <= 1e-4, 'position N-1 must not attend to token N');
    // and the cache the decode step returns is the full prefill's
    for (const name of ['present.1.key', 'present.1.value']) {
      assert.ok(relErr(step[name].data as Float32Array, full[name].data as Float32Array) <= 1e-4, name);
    }
  });

  it('computes what a plain-JS Llama forward pass computes (RMSNorm, RoPE rotate_half, GQA head sharing, SwiGLU, causal softmax)', async () => {
    const seq = 7;
    const ids = tokens(seq, 61);
    const out = await session.run(feeds([ids], [ones(seq)], [range(0, seq)]));
    const ref = referenceLogits(loadModel(tiny.modelPath), ids);
    for (let t = 0; t < seq; t++) {
      const e = relErr(logitsAt(out.logits, 0, t), ref[t]);
      assert.ok(e <= 1e-4, `position ${t}: ORT vs reference differ by ${e} relative`);
    }
  });

  it('rotary embeddings: logits depend on relative positions only (shifted position_ids: same; a gap: different)', async () => {
    const seq = 6;
    const ids = tokens(seq, 71);
    const at = async (pos: number[]) => (await session.run(feeds([ids], [ones(seq)], [pos]))).logits.data as Float32Array;
    const base = await at(range(0, seq));
    const shifted = await at(range(5, seq));
    assert.ok(relErr(shifted, base) <= 1e-4, `shift by 5: ${relErr(shifted, base)}`);
    const gap = await at([0, 1, 2, 3, 4, 12]);
    assert.ok(relErr(gap.subarray(-S.vocab), base.subarray(-S.vocab)) > 1e-3, 'the last token moved away: other logits');
  });

  it('masks padding: a left-padded row gives the logits of the same tokens unpadded, in prefill and decode', async () => {
    const N = 6;
    const pad = 3;
    const t = tokens(N + 1, 21);
    const alone = await session.run(feeds([t], [ones(N + 1)], [range(0, N + 1)]));
    const longer = tokens(N + pad, 22);
    // row 1: `pad` padding tokens (id 0, masked) then t[0..N); positions count from the first real token
    const mask1 = [...Array(pad).fill(0), ...ones(N)];
    const pre = await session.run(feeds([longer, [...Array(pad).fill(0), ...t.slice(0, N)]], [ones(N + pad), mask1], [range(0, N + pad), [...Array(pad).fill(1), ...range(0, N)]]));
    assert.ok(relErr(logitsAt(pre.logits, 1, N + pad - 1), logitsAt(alone.logits, 0, N - 1)) <= 1e-4, 'prefill of the padded row');
    const step = await session.run(feeds([[longer[0]], [t[N]]], [ones(N + pad + 1), [...mask1, 1]], [[N + pad], [N]], pre));
    assert.ok(relErr(logitsAt(step.logits, 1, 0), logitsAt(alone.logits, 0, N)) <= 1e-4, 'decode step of the padded row');
  });

  it('plants activation outliers: after the layer norms, the planted channels are ≥ 20× the others (measured in ORT)', async () => {
    const proto = decodeModel(fs.readFileSync(tiny.modelPath));
    const normOut = proto.graph!.node.filter((n) => /^\/model\/layers\.\d+\/(input|post_attention)_layernorm\/Mul$/.test(n.name!)).map((n) => n.output[0]);
    assert.equal(normOut.length, 2 * S.layers);
    for (const o of normOut) proto.graph!.output.push(newValueInfo({ name: o }));
    const probe = path.join(path.dirname(tiny.modelPath), 'probe.onnx'); // beside the data file it refers to
    fs.writeFileSync(probe, encodeModel(proto));
    const s = await ort.InferenceSession.create(probe);
    try {
      const seq = 16;
      const out = await s.run(feeds([tokens(seq, 31), tokens(seq, 32)], [ones(seq), ones(seq)], [range(0, seq), range(0, seq)]));
      assert.equal(tiny.outlierChannels.length, OUTLIER_GAINS.length);
      for (const o of normOut) {
        const x = out[o].data as Float32Array;
        const maxAbs = new Float64Array(S.hidden);
        for (let i = 0; i < x.length; i++) maxAbs[i % S.hidden] = Math.max(maxAbs[i % S.hidden], Math.abs(x[i]));
        const others = [...maxAbs].filter((_, c) => !tiny.outlierChannels.includes(c)).sort((a, b) => a - b);
        const median = others[others.length >> 1];
        for (const c of tiny.outlierChannels) assert.ok(maxAbs[c] / median >= 20, `${o}: channel ${c} is ${(maxAbs[c] / median).toFixed(1)}× the median channel`);
        assert.ok(others[others.length - 1] / median < 5, `${o}: no other channel is an outlier (${(others[others.length - 1] / median).toFixed(1)}×)`);
      }
    } finally {
      await s.release();
    }
  });

  it('stores every weight as external data that round-trips: one file or several parts, loaded from the folder', async () => {
    const folder = path.dirname(tiny.modelPath);
    assert.deepEqual(fs.readdirSync(folder).filter((f) => f !== 'probe.onnx').sort(), ['model.onnx', 'model.onnx.data']);
    assert.deepEqual(tiny.dataFiles, ['model.onnx.data']);
    const lazy = loadModel(tiny.modelPath, { loadExternalData: false });
    const external = lazy.proto.graph!.initializer.filter((t) => t.data_location === 1);
    assert.deepEqual(external.map((t) => t.name), tiny.weights.map((w) => w.name));
    let end = 0;
    for (const t of external) {
      const e = Object.fromEntries(t.external_data.map((x) => [x.key, x.value]));
      assert.equal(e.location, 'model.onnx.data');
      assert.equal(Number(e.offset) % 4096, 0, `${t.name} offset aligned`);
      end = Math.max(end, Number(e.offset) + Number(e.length));
    }
    assert.equal(fs.statSync(path.join(folder, 'model.onnx.data')).size, end);
    assert.ok(fs.statSync(tiny.modelPath).size < 64 * 1024, 'the .onnx file holds the graph only');

    // loaded from its path: values as generated (scale of a trained model, norms around 1 but the outliers)
    const model = loadModel(tiny.modelPath);
    const values = (name: string) => readTensor(model.graph.initializer(name)!).data as Float32Array;
    const q = values('model.layers.1.self_attn.q_proj.weight');
    const std = Math.sqrt(q.reduce((a, v) => a + v * v, 0) / q.length);
    assert.ok(Math.abs(std - 0.02) < 0.002, `q_proj std ${std}`);
    const norm = values('model.layers.0.input_layernorm.weight');
    tiny.outlierChannels.forEach((c, k) => assert.ok(Math.abs(norm[c] / OUTLIER_GAINS[k] - 1) < 0.3, `norm weight at outlier channel ${c}: ${norm[c]}`));
    assert.ok([...norm].every((v, c) => tiny.outlierChannels.includes(c) || Math.abs(v - 1) < 0.3));
    // parameters in the file = the count computed from the shape
    const params = tiny.weights.reduce((a, w) => a + readTensor(model.graph.initializer(w.name)!).data.length, 0);
    assert.equal(params, decoderParamCount('tiny'));

    // the same model in parts of at most 160 KiB: several files, same logits bit for bit
    const parts = generateDecoder(path.join(dir, 'parts'), { shape: 'tiny', seed: 7, partBytes: 160 * 1024 });
    assert.ok(parts.dataFiles.length >= 3, `${parts.dataFiles.length} parts`);
    assert.deepEqual(fs.readdirSync(path.dirname(parts.modelPath)).sort(), ['model.onnx', ...parts.dataFiles].sort());
    parts.dataFiles.forEach((f, k) => {
      assert.equal(f, `model.onnx.data-${String(k + 1).padStart(5, '0')}-of-${String(parts.dataFiles.length).padStart(5, '0')}`);
      const size = fs.statSync(path.join(path.dirname(parts.modelPath), f)).size;
      assert.ok(size <= 160 * 1024 || parts.weights.filter((w) => w.file === f).length === 1, `${f}: ${size} bytes`);
    });
    const f = feeds([tokens(5, 41)], [ones(5)], [range(0, 5)]);
    const s = await ort.InferenceSession.create(parts.modelPath);
    try {
      const a = (await s.run(f)).logits.data as Float32Array;
      const b = (await session.run(f)).logits.data as Float32Array;
      assert.deepEqual(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    } finally {
      await s.release();
    }
  });

  it('ties the LM head to the embedding when asked: no lm_head.weight, fewer parameters, a working cache', async () => {
    const tied = generateDecoder(path.join(dir, 'tied'), { shape: 'tiny', seed: 7, tiedEmbeddings: true });
    assert.ok(!tied.weights.some((w) => w.name === 'lm_head.weight'));
    assert.equal(tied.params, decoderParamCount('tiny') - S.vocab * S.hidden);
    assert.equal(tied.params, tied.weights.reduce((a, w) => a + w.length / 4, 0));
    const s = await ort.InferenceSession.create(tied.modelPath);
    try {
      const t = tokens(5, 51);
      const pre = await s.run(feeds([t.slice(0, 4)], [ones(4)], [range(0, 4)]));
      const step = await s.run(feeds([[t[4]]], [ones(5)], [[4]], pre));
      const full = await s.run(feeds([t], [ones(5)], [range(0, 5)]));
      assert.ok(relErr(logitsAt(step.logits, 0, 0), logitsAt(full.logits, 0, 4)) <= 1e-4);
      // tied: the logits are x · Eᵀ, so the untied model (same seed, other head) gives other logits
      const untied = (await session.run(feeds([t], [ones(5)], [range(0, 5)]))).logits.data as Float32Array;
      assert.ok(relErr(untied, full.logits.data as Float32Array) > 0.1);
    } finally {
      await s.release();
    }
  });

  it('builds plain multi-head attention too (kvHeads = heads, as the 7B shape), with a working cache', async () => {
    const shape: DecoderShape = { ...S, layers: 1, kvHeads: S.heads };
    const mha = generateDecoder(path.join(dir, 'mha'), { shape, seed: 3 });
    const s = await ort.InferenceSession.create(mha.modelPath);
    try {
      const t = tokens(6, 81);
      const pre = await s.run(feeds([t.slice(0, 5)], [ones(5)], [range(0, 5)], undefined, shape));
      assert.deepEqual(pre['present.0.key'].dims, [1, S.heads, 5, HD]);
      const step = await s.run(feeds([[t[5]]], [ones(6)], [[5]], pre, shape));
      const full = await s.run(feeds([t], [ones(6)], [range(0, 6)], undefined, shape));
      assert.ok(relErr(logitsAt(step.logits, 0, 0), logitsAt(full.logits, 0, 5)) <= 1e-4);
    } finally {
      await s.release();
    }
  });

  it('is deterministic: the same seed writes the same bytes, another seed other weights', () => {
    const a = filesOf(path.dirname(generateDecoder(path.join(dir, 'det-a'), { shape: 'tiny', seed: 7, chunkElements: 1000 }).modelPath));
    const b = filesOf(path.dirname(tiny.modelPath));
    delete b['probe.onnx'];
    assert.deepEqual(Object.keys(a), Object.keys(b));
    for (const f of Object.keys(a)) assert.ok(a[f].equals(b[f]), `${f} differs between two runs (and chunk sizes)`);
    const other = generateDecoder(path.join(dir, 'det-c'), { shape: 'tiny', seed: 8 });
    const c = fs.readFileSync(path.join(path.dirname(other.modelPath), 'model.onnx.data'));
    for (const w of other.weights) {
      const slice = (buf: Buffer) => buf.subarray(w.offset, w.offset + w.length);
      assert.ok(!slice(c).equals(slice(b['model.onnx.data'])), `seed 8 gives another ${w.name}`);
    }
  });

  it('streams the weights to disk in bounded chunks, never a whole tensor at once', () => {
    const writes: Array<{ tensor: string; bytes: number }> = [];
    const res = generateDecoder(path.join(dir, 'stream'), { shape: 'tiny', seed: 7, chunkElements: 4096, onChunk: (tensor, bytes) => writes.push({ tensor, bytes }) });
    assert.ok(writes.every((w) => w.bytes <= 4096 * 4), 'no write larger than a chunk');
    assert.equal(writes.reduce((a, w) => a + w.bytes, 0), res.dataBytes);
    assert.ok(writes.filter((w) => w.tensor === 'model.embed_tokens.weight').length >= 8, 'the embedding is written in pieces');
    // files from a chunked run equal the default run (chunking changes nothing)
    assert.ok(fs.readFileSync(path.join(dir, 'stream', 'model.onnx.data')).equals(fs.readFileSync(path.join(dir, 'tiny', 'model.onnx.data'))));
  });

  it('computes the parameter counts of the bench shapes: TinyLlama 1.1B ± 2%, 7B 6.74B ± 2%', () => {
    const tl = decoderParamCount('tinyllama');
    assert.ok(Math.abs(tl / 1.1e9 - 1) <= 0.02, `tinyllama: ${tl}`);
    const l7 = decoderParamCount('7b');
    assert.ok(Math.abs(l7 / 6.74e9 - 1) <= 0.02, `7b: ${l7}`);
  });
});
