/**
 * The sequence half of the model corpus: every entry writes the same bytes every time, runs on
 * ONNX Runtime with finite outputs that depend on the inputs, keeps its hidden activations at a
 * trained network's scale, and shows its quirks (KV cache, If branches, VAD state).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType, float16BitsToNumber } from '../../sdk/onnx/dtype';
import { loadModel } from '../../sdk/onnx/model';
import { GraphProto, ModelProto, NodeProto, decodeModel, encodeModel, int64ToNumber, newValueInfo } from '../../sdk/onnx/proto';
import { seededRandom } from '../../sdk/util/seeded-random';
import { onnxCheck, requireChecker, runModel, tempDir } from '../helpers';
import { GPT, SEQUENCE_CORPUS, gptFeeds, runVadStream, vadSpeechChunks, vadStream } from './sequence';
import { CorpusEntry, Feeds } from './types';

function floats(t: ort.Tensor): Float32Array {
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, float16BitsToNumber);
  return t.data as Float32Array;
}

function std(d: Float32Array): number {
  let s = 0;
  let s2 = 0;
  for (const v of d) { s += v; s2 += v * v; }
  const m = s / d.length;
  return Math.sqrt(Math.max(0, s2 / d.length - m * m));
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Runs a model once; the session is quiet (inlined If branches leave the other branch's weights unused). */
async function runQuiet(model: string | Uint8Array, feeds: Feeds): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(model as Uint8Array, { logSeverityLevel: 3 });
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

function fileBytes(file: string): Buffer[] {
  return [file, `${file}.data`].filter((f) => fs.existsSync(f)).map((f) => fs.readFileSync(f));
}

function* subgraphs(g: GraphProto): Generator<GraphProto> {
  for (const n of g.node) for (const a of n.attribute) {
    for (const sg of [...(a.g ? [a.g] : []), ...a.graphs]) {
      yield sg;
      yield* subgraphs(sg);
    }
  }
}

/** The model with its first If replaced by the nodes (and initializers) of one branch. */
function inlineIf(m: ModelProto, branch: 'then_branch' | 'else_branch'): ModelProto {
  const g = m.graph!;
  const at = g.node.findIndex((n) => n.op_type === 'If');
  const node = g.node[at];
  const body = node.attribute.find((a) => a.name === branch)!.g!;
  const outputs = new Map(body.output.map((o, k) => [o.name!, node.output[k]]));
  const nodes = body.node.map((n) => ({ ...n, input: n.input.map((x) => outputs.get(x) ?? x), output: n.output.map((x) => outputs.get(x) ?? x) }) as NodeProto);
  g.node.splice(at, 1, ...nodes);
  g.initializer.push(...body.initializer);
  return m;
}

/**
 * Stds of the hidden layers of the main graph on one batch: outputs of MatMul/Gemm/Conv with a
 * weight initializer, LayerNormalization and LSTM/GRU/RNN (not the model's outputs; not the
 * single-channel convs of the VAD's STFT front end and one-logit decoder).
 */
async function hiddenStds(m: ModelProto, feeds: Feeds, half: boolean): Promise<Array<[string, number]>> {
  const g = m.graph!;
  const inits = new Map(g.initializer.map((t) => [t.name!, t]));
  const outs = new Set(g.output.map((o) => o.name));
  const probes: string[] = [];
  for (const n of g.node) {
    const w = inits.get(n.input[1]);
    const weighted = ['MatMul', 'Gemm', 'Conv'].includes(n.op_type!) && w && !(n.op_type === 'Conv' && (Number(w.dims[0]) === 1 || Number(w.dims[1]) === 1));
    if ((weighted || ['LayerNormalization', 'LSTM', 'GRU', 'RNN'].includes(n.op_type!)) && !outs.has(n.output[0])) probes.push(n.output[0]);
  }
  for (const p of probes) g.output.push(newValueInfo({ name: p, type: { tensor_type: { elem_type: half ? DataType.FLOAT16 : DataType.FLOAT } } }));
  const out = await runQuiet(encodeModel(m), feeds);
  return probes.map((p) => [p, std(floats(out[p]))]);
}

/** Feeds cut to the first `len` positions along every input axis declared 'seq'. */
function cutSeq(m: ModelProto, feeds: Feeds, len: number): Feeds {
  const cut: Feeds = { ...feeds };
  for (const input of m.graph!.input) {
    const dims = input.type?.tensor_type?.shape?.dim ?? [];
    const axis = dims.findIndex((d) => d.dim_param === 'seq');
    if (axis < 0 || !(input.name! in feeds)) continue;
    const t = feeds[input.name!];
    const outer = t.dims.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = t.dims.slice(axis + 1).reduce((a, b) => a * b, 1);
    const src = t.data as Float32Array | BigInt64Array;
    const dst = new (src.constructor as new (n: number) => Float32Array | BigInt64Array)(outer * len * inner);
    for (let o = 0; o < outer; o++) dst.set(src.subarray((o * t.dims[axis]) * inner, (o * t.dims[axis] + len) * inner) as never, o * len * inner);
    cut[input.name!] = new ort.Tensor(t.type as 'float32', dst as Float32Array, [...t.dims.slice(0, axis), len, ...t.dims.slice(axis + 1)]);
  }
  return cut;
}

describe('model corpus: transformers, recurrent and control-flow models', function () {
  this.timeout(60000);
  const dirA = tempDir('quantbook-corpus-seq-a-');
  const dirB = tempDir('quantbook-corpus-seq-b-');
  const files = new Map<string, string>();
  const timings: string[] = [];

  before(async () => {
    for (const e of SEQUENCE_CORPUS) files.set(e.name, await e.write(dirA));
  });

  after(() => {
    if (process.env.CORPUS_TIMINGS) console.log(timings.join('\n'));
    fs.rmSync(dirA, { recursive: true, force: true });
    fs.rmSync(dirB, { recursive: true, force: true });
  });

  it('has at least 12 entries with unique file-safe names, covering the three families and the asked quirks', () => {
    assert.ok(SEQUENCE_CORPUS.length >= 12);
    const names = SEQUENCE_CORPUS.map((e) => e.name);
    assert.equal(new Set(names).size, names.length);
    for (const n of names) assert.match(n, /^[a-z0-9-]+$/);
    assert.deepEqual([...new Set(SEQUENCE_CORPUS.map((e) => e.family))].sort(), ['control-flow', 'recurrent', 'transformer']);
    const features = new Set(SEQUENCE_CORPUS.flatMap((e) => e.features));
    for (const f of ['if', 'loop', 'scan', 'outer-scope-weights', 'body-initializers', 'kv-cache', 'dynamic-seq', 'layernorm-op', 'erf-gelu', 'lstm', 'gru', 'rnn', 'bidirectional', 'ir3-initializer-inputs', 'external-data', 'fp16']) {
      assert.ok(features.has(f), `no entry has '${f}'`);
    }
  });

  for (const entry of SEQUENCE_CORPUS) {
    describe(entry.name, () => {
      const file = () => files.get(entry.name)!;

      it('writes the same bytes every time, under 3 MB, at its declared opset and IR version', async () => {
        const again = await entry.write(dirB);
        assert.equal(path.basename(again), `${entry.name}.onnx`);
        const a = fileBytes(file());
        const b = fileBytes(again);
        assert.equal(a.length, b.length);
        a.forEach((buf, i) => assert.ok(buf.equals(b[i]), `file ${i} differs between two writes`));
        assert.ok(a.reduce((s, x) => s + x.byteLength, 0) < 3 * 2 ** 20);

        const raw = decodeModel(a[0]);
        assert.equal(int64ToNumber(raw.ir_version), entry.irVersion);
        const opset = raw.opset_import.find((o) => !o.domain);
        assert.equal(opset && int64ToNumber(opset.version), entry.opset);
        const g = raw.graph!;
        if (entry.features.includes('ir3-initializer-inputs')) {
          const inputs = new Set(g.input.map((v) => v.name));
          assert.ok(g.initializer.length > 0 && g.initializer.every((t) => inputs.has(t.name)), 'every initializer is a graph input');
        }
        if (entry.features.includes('external-data')) {
          assert.equal(a.length, 2, 'a .onnx.data file beside the model');
          assert.ok(g.initializer.some((t) => t.data_location === 1), 'initializers stored outside');
        }
        if (entry.features.includes('fp16')) assert.ok(g.initializer.filter((t) => t.data_type === DataType.FLOAT16).length > 10, 'float16 weights');
        const bodies = [...subgraphs(g)];
        if (entry.features.includes('outer-scope-weights')) {
          const outer = new Set(g.initializer.map((t) => t.name));
          assert.ok(bodies.some((b) => b.node.some((n) => n.op_type !== 'Identity' && n.input.some((x) => outer.has(x)))), 'a body reads an outer-graph weight');
        }
        if (entry.features.includes('body-initializers')) assert.ok(bodies.some((b) => b.initializer.length > 0), 'a body holds its own initializers');
      });

      it('runs on ONNX Runtime with finite outputs that differ between feeds(1) and feeds(2)', async () => {
        const session = await ort.InferenceSession.create(file());
        try {
          const f1 = entry.feeds(1);
          const f2 = entry.feeds(2);
          assert.deepEqual(Object.keys(f1).sort(), [...session.inputNames].sort());
          const o1 = await session.run(f1);
          const o2 = await session.run(f2);
          let differs = false;
          for (const name of session.outputNames) {
            const a = floats(o1[name]);
            const b = floats(o2[name]);
            assert.ok(a.length > 0 && a.every(Number.isFinite), `${name} finite`);
            assert.ok(b.every(Number.isFinite), `${name} finite`);
            if (a.length !== b.length || maxAbsDiff(a, b) > 1e-4) differs = true;
          }
          assert.ok(differs, 'outputs depend on the inputs');
          const times: number[] = [];
          for (let i = 0; i < 7; i++) {
            const t0 = performance.now();
            await session.run(f1);
            times.push(performance.now() - t0);
          }
          const median = times.sort((x, y) => x - y)[3];
          const size = fileBytes(file()).reduce((s, x) => s + x.byteLength, 0);
          timings.push(`${entry.name.padEnd(40)} ${entry.family.padEnd(13)} opset ${entry.opset} IR ${entry.irVersion}  ${(size / 1024).toFixed(0).padStart(5)} KiB  ${median.toFixed(2)} ms`);
          assert.ok(median < 30, `ORT run ${median.toFixed(1)} ms`);
        } finally {
          await session.release();
        }
      });

      it('keeps hidden activations at a trained network\'s scale (std 0.2–5 each, median 0.3–3)', async () => {
        const model = loadModel(file()).proto;
        const hasIf = model.graph!.node.some((n) => n.op_type === 'If');
        const variants = hasIf ? [inlineIf(loadModel(file()).proto, 'then_branch'), inlineIf(model, 'else_branch')] : [model];
        const stds: Array<[string, number]> = [];
        for (const m of variants) stds.push(...(await hiddenStds(m, entry.feeds(1), entry.features.includes('fp16'))));
        assert.ok(stds.length > 0);
        for (const [name, s] of stds) assert.ok(s >= 0.2 && s <= 5, `${name}: std ${s.toFixed(3)}`);
        const sorted = stds.map(([, s]) => s).sort((x, y) => x - y);
        const median = sorted[Math.floor(sorted.length / 2)];
        timings.push(`${entry.name.padEnd(40)} hidden std ${sorted[0].toFixed(2)} / ${median.toFixed(2)} / ${sorted[sorted.length - 1].toFixed(2)} (min / median / max of ${sorted.length})`);
        assert.ok(median >= 0.3 && median <= 3, `median std ${median.toFixed(3)}`);
      });

      if (entry.features.includes('dynamic-seq') && !entry.features.includes('kv-cache')) {
        it('accepts another sequence length', async () => {
          const model = loadModel(file()).proto;
          const out = await runModel(file(), cutSeq(model, entry.feeds(1), 7));
          for (const t of Object.values(out)) assert.ok(floats(t).every(Number.isFinite));
        });
      }

      it('passes onnx.checker (full check with shape inference)', function () {
        requireChecker(this);
        onnxCheck(file());
      });
    });
  }

  it('GPT decoder: stepping through the KV cache gives the logits of the whole sequence', async () => {
    const entry = SEQUENCE_CORPUS.find((e) => e.features.includes('kv-cache'))!;
    const session = await ort.InferenceSession.create(files.get(entry.name)!);
    try {
      const r = seededRandom(99);
      const ids = [0, 1].map(() => Array.from({ length: 8 }, () => 3 + Math.floor(r() * (GPT.vocab - 3))));
      const full = await session.run(gptFeeds(ids, 0));
      assert.deepEqual(full.logits.dims, [2, 8, GPT.vocab]);
      const fullLogits = full.logits.data as Float32Array;
      const at = (t: number) => [0, 1].flatMap((b) => [...fullLogits.subarray((b * 8 + t) * GPT.vocab, (b * 8 + t + 1) * GPT.vocab)]);

      let out = await session.run(gptFeeds(ids.map((row) => row.slice(0, 5)), 0));
      assert.deepEqual(out['present_key.0'].dims, [2, GPT.heads, 5, GPT.d / GPT.heads]);
      for (let t = 0; t < 5; t++) {
        const step = [0, 1].flatMap((b) => [...(out.logits.data as Float32Array).subarray((b * 5 + t) * GPT.vocab, (b * 5 + t + 1) * GPT.vocab)]);
        assert.ok(maxAbsDiff(Float32Array.from(step), Float32Array.from(at(t))) < 1e-4, `prefix position ${t}`);
      }
      for (let t = 5; t < 8; t++) {
        out = await session.run(gptFeeds(ids.map((row) => [row[t]]), out));
        assert.deepEqual(out['present_value.1'].dims, [2, GPT.heads, t + 1, GPT.d / GPT.heads]);
        const diff = maxAbsDiff(out.logits.data as Float32Array, Float32Array.from(at(t)));
        assert.ok(diff < 1e-4, `cached step ${t}: ${diff}`);
      }
    } finally {
      await session.release();
    }
  });

  it('If model: feeds(1) take the then-branch, feeds(2) the else-branch', async () => {
    const entry = SEQUENCE_CORPUS.find((e) => e.features.includes('if') && e.family === 'control-flow' && e.features.includes('outer-scope-weights'))!;
    const file = files.get(entry.name)!;
    for (const [seed, branch] of [[1, 'then_branch'], [2, 'else_branch']] as const) {
      const direct = await runModel(file, entry.feeds(seed));
      const inlined = await runQuiet(encodeModel(inlineIf(loadModel(file).proto, branch)), entry.feeds(seed));
      assert.ok(maxAbsDiff(direct.logits.data as Float32Array, inlined.logits.data as Float32Array) < 1e-5, `seed ${seed} runs ${branch}`);
    }
  });

  it('Loop model: the trip count input sets the trajectory length', async () => {
    const entry = SEQUENCE_CORPUS.find((e) => e.features.includes('loop'))!;
    const out = await runModel(files.get(entry.name)!, { ...entry.feeds(1), steps: new ort.Tensor('int64', BigInt64Array.of(3n), []) });
    assert.deepEqual(out.trajectory.dims.slice(0, 1), [3]);
  });

  it('VAD-like model: over a 60-chunk stream carrying h/c, the probability follows speech in both If branches', async () => {
    const entry = SEQUENCE_CORPUS.find((e) => e.name.startsWith('silero-vad'))!;
    const session = await ort.InferenceSession.create(files.get(entry.name)!);
    try {
      const run = (f: Feeds) => session.run(f);
      const speech = vadSpeechChunks(60, 1);
      const bySr = new Map<number, number[]>();
      for (const sr of [16000, 8000]) {
        const stream = vadStream(60, 1, sr);
        assert.equal(stream.length, 60);
        const probs = await runVadStream(run, stream);
        bySr.set(sr, probs);
        assert.ok(Math.min(...probs) <= 0.2 && Math.max(...probs) >= 0.8, `sr ${sr}: ${Math.min(...probs).toFixed(3)}..${Math.max(...probs).toFixed(3)}`);
        const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
        const onSpeech = mean(probs.filter((_, i) => speech[i]));
        const onSilence = mean(probs.filter((_, i) => !speech[i]));
        assert.ok(onSpeech - onSilence > 0.4, `sr ${sr}: speech ${onSpeech.toFixed(2)}, silence ${onSilence.toFixed(2)}`);
        // State carrying matters: chunk by chunk from a zero state gives other probabilities.
        const stateless: number[] = [];
        for (const chunk of stream) stateless.push(((await run(chunk)).output.data as Float32Array)[0]);
        assert.ok(Math.max(...probs.map((p, i) => Math.abs(p - stateless[i]))) > 0.2, `sr ${sr}: carried state changes the output`);
      }
      // The two branches are different networks: the same chunk gives different outputs.
      const chunk = vadStream(60, 1)[speech.indexOf(true) + 3];
      const at16 = await run(chunk);
      const at8 = await run({ ...chunk, sr: new ort.Tensor('int64', BigInt64Array.of(8000n), []) });
      assert.notEqual((at16.output.data as Float32Array)[0], (at8.output.data as Float32Array)[0]);
      assert.ok(maxAbsDiff(at16.hn.data as Float32Array, at8.hn.data as Float32Array) > 1e-3);
      if (process.env.CORPUS_TIMINGS) for (const [sr, p] of bySr) console.log(`VAD ${sr}: ${Math.min(...p).toFixed(3)}..${Math.max(...p).toFixed(3)}`);
    } finally {
      await session.release();
    }
  });
});

