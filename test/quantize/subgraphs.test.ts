/**
 * Layers inside If/Loop/Scan bodies: selected, calibrated through the body, quantized in place.
 * The real Silero VAD (every Conv sits in one of two If branches) and small Loop/Scan models
 * whose body statistics are computed independently in JS.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType, Observer, PerChannelObserver, calibrate, loadModel, quantizeW8A8, quantizeW8A8Dynamic, selectLayers } from '../../sdk';
import { Model } from '../../sdk/onnx/model';
import { hoistTensors, scopes } from '../../sdk/onnx/scopes';
import { encodeModel } from '../../sdk/onnx/proto';
import { GraphBuilder } from '../corpus/builder';
import { MODELS, onnxCheck, randomFloats, requireChecker, tempDir } from '../helpers';

const CLI = path.join(__dirname, '..', '..', 'sdk', 'cli', 'main.js');

/** 512-sample chunks: tone bursts (speech-like) every other 10 chunks, faint noise between. */
function chunk(i: number, sr: number): Float32Array {
  const n = sr === 16000 ? 512 : 256;
  const speech = Math.floor(i / 10) % 2 === 1;
  return Float32Array.from({ length: n }, (_, j) => {
    const t = (i * n + j) / sr;
    return speech ? 0.3 * Math.sin(2 * Math.PI * 180 * t) * (1 + Math.sin(2 * Math.PI * 4 * t)) + 0.15 * Math.sin(2 * Math.PI * 360 * t) : 0.01 * Math.sin(j * 12.9898 + i);
  });
}

/** Runs the VAD over `count` chunks carrying its LSTM state; the speech probabilities and each chunk's feeds. */
async function vadStream(model: Model, sr: number, count: number) {
  const s = await ort.InferenceSession.create(model.toBytes());
  let h = new Float32Array(128);
  let c = new Float32Array(128);
  const probs: number[] = [];
  const feeds: Array<Record<string, ort.Tensor>> = [];
  for (let i = 0; i < count; i++) {
    const x = chunk(i, sr);
    const f = { input: new ort.Tensor('float32', x, [1, x.length]), sr: new ort.Tensor('int64', BigInt64Array.of(BigInt(sr)), []), h: new ort.Tensor('float32', h, [2, 1, 64]), c: new ort.Tensor('float32', c, [2, 1, 64]) };
    feeds.push(f);
    const o = await s.run(f);
    h = o.hn.data as Float32Array;
    c = o.cn.data as Float32Array;
    probs.push((o.output.data as Float32Array)[0]);
  }
  await s.release();
  return { probs, feeds };
}

const maxDiff = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i])));

describe('quantization inside If/Loop/Scan bodies', function () {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('Silero VAD (its Convs sit in the two branches of an If on the sample rate)', () => {
    const vad = () => loadModel(MODELS.vad);
    // the STFT front end (a Conv over raw audio whose quiet bins feed a log) cannot take 8-bit
    // inputs: quantized alone it moves the speech probability by 0.73; see docs/corpus.md
    const stft = ['Conv_73', 'Conv_547'];

    it('selects the Convs of both branches, each with its scope; the main-graph-only processors list them as skipped with the reason', () => {
      const all = selectLayers(vad(), [], { subgraphs: true });
      assert.equal(all.layers.length, 36);
      assert.ok(all.layers.every((l) => l.scope && /^If_\d+\/(then|else)_branch$/.test(l.scope.path)));
      assert.equal(new Set(all.layers.map((l) => l.scope!.path)).size, 2);
      const main = selectLayers(vad());
      assert.equal(main.layers.length, 0);
      assert.ok(main.skipped.filter((s) => s.opType === 'Conv').every((s) => /inside the If body If_\d+\/(then|else)_branch/.test(s.reason)));
      assert.ok(main.skipped.some((s) => s.opType === 'LSTM' && /quantized instead as com.microsoft.DynamicQuantizeLSTM/.test(s.reason)), 'the LSTMs are listed with their own int8 route');
    });

    it('W8A8_DYNAMIC quantizes all 36 body Convs and the 8 nested-body LSTMs; the model passes onnx.checker and its speech probabilities stay within 0.02 of fp32 over a 60-chunk stream', async function () {
      const r = quantizeW8A8Dynamic(vad(), { disableNames: stft });
      assert.equal(r.layers.length, 34);
      // the LSTMs, two levels down (an If on the rate, then one on the state), go int8 too
      assert.equal(r.lstm.length, 8);
      assert.ok(r.lstm.every((l) => /^If_\d+\/(then|else)_branch\/If_\d+\/(then|else)_branch$/.test(l.scope ?? '')));
      let dq = 0;
      for (const s of scopes(r.qdq)) for (const n of s.graph.nodes) if (n.op_type === 'DynamicQuantizeLinear' && s.path) dq++;
      // one DynamicQuantizeLinear per distinct input tensor (Convs reading one tensor share it)
      assert.equal(dq, [...r.granularity.keys()].filter((k) => /^If_\d+\/(then|else)_branch\//.test(k)).length);
      assert.ok(dq >= 20, `dynamic quantization inside the bodies (${dq})`);
      const fp32 = await vadStream(vad(), 16000, 60);
      const int8 = await vadStream(r.qdq, 16000, 60);
      const d = maxDiff(fp32.probs, int8.probs);
      console.log(`      VAD W8A8_DYNAMIC: max |Δp| ${d.toFixed(4)} over 60 chunks (fp32 p in ${Math.min(...fp32.probs).toFixed(3)}..${Math.max(...fp32.probs).toFixed(3)})`);
      assert.ok(Math.max(...fp32.probs) > 0.15, 'the stream has speech');
      assert.ok(d <= 0.02, `max |Δp| ${d}`);
      const all = quantizeW8A8Dynamic(vad());
      assert.ok(maxDiff(fp32.probs, (await vadStream(all.qdq, 16000, 60)).probs) > 0.2, 'the STFT Conv is what the exclusion protects');
      requireChecker(this);
      const file = path.join(dir, 'vad-dynamic.onnx');
      r.qdq.save(file);
      onnxCheck(file);
    });

    it('static W8A8 calibrates through the branch the data takes; the other branch stays float, named as not reached; both rates calibrate both', async () => {
      const at16k = (await vadStream(vad(), 16000, 30)).feeds.filter((_, i) => i % 3 === 0);
      const at8k = (await vadStream(vad(), 8000, 30)).feeds.filter((_, i) => i % 3 === 0);
      const one = await quantizeW8A8(vad(), at16k, { disableNames: stft });
      assert.equal(one.layers.length, 17);
      const unreached = one.selection.skipped.filter((s) => /not reached by the calibration data/.test(s.reason));
      assert.equal(unreached.length, 17);
      const taken = new Set(one.layers.map((l) => l.name));
      assert.ok(unreached.every((s) => !taken.has(s.name)));
      // calibration statistics of a body tensor equal its values computed by exposing it by hand
      const conv = selectLayers(one.float, [], { subgraphs: true }).layers.find((l) => l.name === one.layers[1].name)!;
      const key = `${conv.scope!.path}/${conv.activations[0]}`;
      const exposed = hoistTensors(one.float, [key]);
      const s = await ort.InferenceSession.create(exposed.model.toBytes());
      let [lo, hi] = [Infinity, -Infinity];
      for (const f of at16k) {
        const v = (await s.run(f))[exposed.outputs.get(key)!].data as Float32Array;
        for (const x of v) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
      }
      assert.deepEqual((one.calibration.observers.get(key) as Observer).observedRange, [lo, hi]);
      const both = await quantizeW8A8(vad(), [...at16k, ...at8k], { disableNames: stft });
      assert.equal(both.layers.length, 34);
      const fp32 = await vadStream(vad(), 16000, 60);
      const d = maxDiff(fp32.probs, (await vadStream(both.qdq, 16000, 60)).probs);
      console.log(`      VAD static W8A8 (16 kHz stream): max |Δp| ${d.toFixed(4)}`);
      assert.ok(d <= 0.05, `max |Δp| ${d}`);
    });
  });

  it('per-channel calibration of body tensors: the branch not taken is skipped, not observed as a wrong-shaped tensor', async () => {
    const model = loadModel(MODELS.vad);
    const layers = selectLayers(model, [], { subgraphs: true }).layers.filter((l) => l.opType === 'Conv' && l.name !== 'Conv_73' && l.name !== 'Conv_547');
    const keyOf = (branch: string) => {
      const l = layers.find((x) => x.scope!.path.endsWith(branch))!;
      return `${l.scope!.path}/${l.activations[0]}`;
    };
    const [taken, other] = [keyOf('then_branch'), keyOf('else_branch')];
    const data = (await vadStream(model, 16000, 4)).feeds;
    const r = await calibrate(model, data, { tensors: [taken, other], spec: { perChannel: true, channelAxis: 1 } });
    const channels = (t: string) => (r.observers.get(t) as PerChannelObserver).channels;
    assert.ok(channels(taken).length >= 1 && channels(taken).every((c) => c.state().count > 0), 'the branch that ran is observed per channel');
    assert.equal(channels(other).length, 0, 'the branch that did not run has no channels observed');
  });

  /** y = Loop(n) { h ← Relu(h · W) } with W an outer-scope initializer; every h is a scan output too. */
  function loopModel(): Uint8Array {
    const body = new GraphBuilder('body', 3);
    body.input('i', DataType.INT64, []);
    body.input('cond_in', DataType.BOOL, []);
    body.input('h_in', DataType.FLOAT, [2, 8]);
    const mm = body.op('MatMul', ['h_in', 'W'], {}, 'body_matmul');
    const h = body.op('Relu', [mm], {}, 'h_out');
    body.node('Identity', ['cond_in'], {}, { outputs: ['cond_out'], name: 'cond_id' });
    body.node('Identity', [h], {}, { outputs: ['h_scan'], name: 'scan_id' });
    body.output('cond_out', DataType.BOOL, []);
    body.output(h, DataType.FLOAT, [2, 8]);
    body.output('h_scan', DataType.FLOAT, [2, 8]);
    const g = new GraphBuilder('loop-model', 4);
    g.input('x', DataType.FLOAT, [2, 8]);
    g.gaussian('W', [8, 8], 0.5, 0.02);
    g.constant('n', DataType.INT64, [], BigInt64Array.of(3n));
    g.constant('yes', DataType.BOOL, [], [1]);
    g.node('Loop', ['n', 'yes', 'x'], { body: body.graph() }, { outputs: ['y', 'ys'], name: 'loop' });
    g.output('y', DataType.FLOAT, [2, 8]);
    g.output('ys', DataType.FLOAT, [3, 2, 8]);
    return encodeModel(g.model({ opset: 13, irVersion: 7 }));
  }

  it('a Loop body: the MatMul reading an outer-scope weight is calibrated over every iteration and quantized in the body', async function () {
    const model = loadModel(loopModel());
    const batches = [1, 2, 3].map((k) => ({ x: new ort.Tensor('float32', randomFloats(16, k), [2, 8]) }));
    const r = await quantizeW8A8(model, batches);
    assert.equal(r.layers.length, 1);
    assert.equal(r.layers[0].input!.tensor, 'loop/body/h_in');
    // the body input over all iterations is x, then the scan outputs of the first two iterations
    let [lo, hi] = [Infinity, -Infinity];
    const s = await ort.InferenceSession.create(model.toBytes());
    for (const b of batches) {
      const ys = (await s.run(b)).ys.data as Float32Array;
      for (const v of [...(b.x.data as Float32Array), ...ys.subarray(0, 32)]) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    assert.deepEqual((r.calibration.observers.get("loop/body/h_in") as Observer).observedRange, [lo, hi]);
    const body = scopes(r.qdq).find((x) => x.path === 'loop/body')!;
    const ops = body.graph.nodes.map((n) => n.op_type);
    assert.ok(ops.includes('QuantizeLinear') && ops.includes('DequantizeLinear'));
    assert.ok(!r.qdq.graph.initializerNames.includes('W'), 'the float outer weight is gone, its int8 copy lives in the body');
    const out = await (await ort.InferenceSession.create(r.qdq.toBytes())).run(batches[0]);
    const ref = await s.run(batches[0]);
    const err = Math.max(...Array.from(out.y.data as Float32Array, (v, i) => Math.abs(v - (ref.y.data as Float32Array)[i])));
    assert.ok(err < 0.05 * Math.max(...(ref.y.data as Float32Array)), `loop output error ${err}`);
    requireChecker(this);
    const file = path.join(dir, 'loop-int8.onnx');
    r.qdq.save(file);
    onnxCheck(file);
  });

  /** ys, h = Scan over axis 1 of x [2, 5, 6] { h ← Tanh(x_t · Wx + h · Wh) }, Wx/Wh outer-scope initializers. */
  function scanModel(): Uint8Array {
    const body = new GraphBuilder('scan_body', 5);
    body.input('h_in', DataType.FLOAT, [2, 8]);
    body.input('x_t', DataType.FLOAT, [2, 6]);
    const a = body.op('MatMul', ['x_t', 'Wx'], {}, 'x_proj');
    const b = body.op('MatMul', ['h_in', 'Wh'], {}, 'h_proj');
    const h = body.op('Tanh', [body.op('Add', [a, b])], {}, 'h_out');
    body.node('Identity', [h], {}, { outputs: ['y_t'], name: 'y_id' });
    body.output(h, DataType.FLOAT, [2, 8]);
    body.output('y_t', DataType.FLOAT, [2, 8]);
    const g = new GraphBuilder('scan-model', 6);
    g.input('x', DataType.FLOAT, [2, 5, 6]);
    g.input('h0', DataType.FLOAT, [2, 8]);
    g.gaussian('Wx', [6, 8], 0.5, 0.02);
    g.gaussian('Wh', [8, 8], 0.4, 0.01);
    g.node('Scan', ['h0', 'x'], { body: body.graph(), num_scan_inputs: 1, scan_input_axes: [1], scan_output_axes: [1] }, { outputs: ['h_last', 'ys'], name: 'scan' });
    g.output('h_last', DataType.FLOAT, [2, 8]);
    g.output('ys', DataType.FLOAT, [2, 5, 8]);
    return encodeModel(g.model({ opset: 13, irVersion: 7 }));
  }

  it('a Scan body: both MatMuls are calibrated over every step (slices of x; h0 then every state but the last) and quantized in the body', async function () {
    const model = loadModel(scanModel());
    const batches = [1, 2, 3].map((k) => ({ x: new ort.Tensor('float32', randomFloats(60, k), [2, 5, 6]), h0: new ort.Tensor('float32', randomFloats(16, 10 + k).map((v) => 0.5 * v), [2, 8]) }));
    const r = await quantizeW8A8(model, batches);
    assert.deepEqual(r.layers.map((l) => l.input!.tensor).sort(), ['scan/body/h_in', 'scan/body/x_t']);
    assert.equal(r.selection.skipped.length, 0, JSON.stringify(r.selection.skipped));
    // independent ranges: every slice of x is all of x; the state read at step t is h0, then ys[:, t-1]
    const s = await ort.InferenceSession.create(model.toBytes());
    const range = (values: Iterable<number>, [lo, hi]: number[]) => { for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); } return [lo, hi]; };
    let xr = [Infinity, -Infinity];
    let hr = [Infinity, -Infinity];
    for (const b of batches) {
      const ys = (await s.run(b)).ys.data as Float32Array;
      xr = range(b.x.data as Float32Array, xr);
      hr = range(b.h0.data as Float32Array, hr);
      for (let n = 0; n < 2; n++) for (let t = 0; t < 4; t++) hr = range(ys.subarray((n * 5 + t) * 8, (n * 5 + t + 1) * 8), hr);
    }
    assert.deepEqual((r.calibration.observers.get('scan/body/x_t') as Observer).observedRange, xr);
    assert.deepEqual((r.calibration.observers.get('scan/body/h_in') as Observer).observedRange, hr);
    const body = scopes(r.qdq).find((x) => x.path === 'scan/body')!;
    assert.equal(body.graph.nodes.filter((n) => n.op_type === 'QuantizeLinear').length >= 2, true);
    const out = await (await ort.InferenceSession.create(r.qdq.toBytes())).run(batches[0]);
    const ref = await s.run(batches[0]);
    const err = Math.max(...Array.from(out.ys.data as Float32Array, (v, i) => Math.abs(v - (ref.ys.data as Float32Array)[i])));
    assert.ok(err < 0.05, `scan output error ${err}`);
    requireChecker(this);
    const file = path.join(dir, 'scan-int8.onnx');
    r.qdq.save(file);
    onnxCheck(file);
  });

  it('calibrate() names a body tensor it cannot find', async () => {
    const model = loadModel(loopModel());
    await assert.rejects(calibrate(model, [{ x: new ort.Tensor('float32', new Float32Array(16), [2, 8]) }], { tensors: ['loop/body/nope'] }), /tensor "loop\/body\/nope" is in no graph/);
  });

  it('a model with nothing to quantize is an error naming why, and the CLI exits non-zero without writing', () => {
    const g = new GraphBuilder('relu-only');
    g.input('x', DataType.FLOAT, [1, 4]);
    g.output(g.op('Relu', ['x'], {}, 'y'), DataType.FLOAT, [1, 4]);
    const file = path.join(dir, 'relu.onnx');
    fs.writeFileSync(file, encodeModel(g.model({ opset: 13, irVersion: 7 })));
    assert.throws(() => quantizeW8A8Dynamic(loadModel(file)), /no layer can be quantized: the model has none of Conv, ConvTranspose, Gemm, MatMul.*its operators: Relu/);
    const out = path.join(dir, 'relu-out');
    const r = spawnSync(process.execPath, [CLI, 'quantize', file, '--dynamic', '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /no layer can be quantized/);
    assert.ok(!fs.existsSync(path.join(out, 'relu.onnx')) && !fs.existsSync(out) || fs.readdirSync(out).length === 0, 'nothing written');
  });

  it('quantbook inspect says what will be quantized (bodies included) and what stays float, with the reasons', () => {
    const r = spawnSync(process.execPath, [CLI, 'inspect', MODELS.vad, '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    // 36 Convs, and 8 LSTMs in the Ifs nested in each branch (as DynamicQuantizeLSTM)
    assert.equal(s.plan.quantized.length, 44);
    assert.ok(s.plan.quantized.every((q: { scope: string }) => /^If_\d+\/(then|else)_branch(\/If_\d+\/(then|else)_branch)?$/.test(q.scope)));
    assert.equal(s.plan.quantized.filter((q: { opType: string; reason?: string }) => q.opType === 'LSTM' && /DynamicQuantizeLSTM/.test(q.reason ?? '')).length, 8);
    assert.ok(!s.plan.float.some((f: { opType: string }) => f.opType === 'LSTM'));
    const text = spawnSync(process.execPath, [CLI, 'inspect', MODELS.vad], { encoding: 'utf8' }).stdout;
    assert.match(text, /will quantize 44 layers \(44 inside If\/Loop\/Scan bodies\)/);
  });
});
