/**
 * The dtype variants (issue 28, part A): fp16, q8/int8/uint8 of the MNIST transformer, a BERT-style
 * encoder and a GPT-2 decoder with KV cache, written under Transformers.js' file names, each run
 * from its file in ONNX Runtime; output SQNR floors (fp16 ≥ 40 dB, 8-bit ≥ 20 dB), the decoder's
 * cache inputs and outputs unchanged, quantize_config.json, and the `quantbook variants` command.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { writeNpy } from '../../sdk/calibration/data';
import { DataType } from '../../sdk/onnx/dtype';
import { makeAttribute } from '../../sdk/onnx/graph';
import { Model, loadModel } from '../../sdk/onnx/model';
import { encodeModel, newGraph, newModel, newNode, newValueInfo } from '../../sdk/onnx/proto';
import { makeTensor } from '../../sdk/onnx/tensor';
import { OutputErrorAccumulator } from '../../sdk/eval/metrics';
import { cpuFloat16Fallbacks, inferElemTypes } from '../../sdk/variants/elem-types';
import { convertToFloat16 } from '../../sdk/variants/fp16';
import { smoothLayerNormOutliers } from '../../sdk/variants/ln-smooth';
import { quantizeDynamicWeights } from '../../sdk/variants/q8';
import { measureAccuracy, variantInputs } from '../../sdk/variants/accuracy';
import { CONFIG_FILE, MakeVariantsResult, REPORT_FILE, VARIANT_FILES, makeVariants } from '../../sdk/variants/variants';
import { SEQUENCE_CORPUS, gptFeeds } from '../corpus/sequence';
import { Feeds } from '../corpus/types';
import { MODELS, tempDir } from '../helpers';
import { TRANSFORMER, mnist, mnistBatch } from '../transformer-fixtures';

const FLOORS: Record<string, number> = { fp16: 40, q8: 20, int8: 20, uint8: 20, q4: 12, q4f16: 12, bnb4: 12 };
/** size bounds against fp32 (bnb4 keeps embeddings float: ORT has no NF4 Gather) */
const SIZE: Record<string, number> = { fp16: 0.56, q8: 0.4, int8: 0.4, uint8: 0.4, q4: 0.3, q4f16: 0.3, bnb4: 0.56 };
const EIGHT_BIT = ['q8', 'int8', 'uint8'];

async function session(file: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(file, { logSeverityLevel: 3 });
}

/** Names and element types of a model's inputs and outputs, as ORT reports them. */
function signature(s: ort.InferenceSession): string[] {
  return [...s.inputMetadata, ...s.outputMetadata].map((m) => `${m.name}:${m.isTensor ? m.type : '?'}`);
}

/** Every written variant runs from its file with the fp32 model's inputs/outputs, and clears its SQNR floor on every output. */
async function checkVariants(label: string, r: MakeVariantsResult, feeds: Feeds): Promise<void> {
  const fp32 = await session(path.join(r.outDir, VARIANT_FILES.fp32));
  const reference = await fp32.run(feeds);
  try {
    for (const v of r.variants) {
      const file = path.join(r.outDir, v.file);
      assert.ok(fs.existsSync(file), `${file} written`);
      assert.equal(v.bytes, fs.statSync(file).size);
      console.log(`      ${label} ${v.dtype.padEnd(5)} ${v.file.padEnd(22)} ${(v.bytes / 1024).toFixed(1).padStart(7)} KiB ×${v.sizeRatio.toFixed(3)}  SQNR ${v.sqnrDb.toFixed(2)} dB  cosine ${v.cosine.toFixed(6)}  (${v.outputs.map((o) => `${o.name} ${o.sqnrDb.toFixed(1)}`).join(', ')})`);
      if (v.dtype === 'fp32') continue;
      const s = await session(file);
      try {
        assert.deepEqual(signature(s), signature(fp32), `${v.dtype}: same inputs and outputs as fp32`);
        const out = await s.run(feeds);
        for (const name of fp32.outputNames) {
          assert.deepEqual(out[name].dims, reference[name].dims, `${v.dtype} ${name} dims`);
          const acc = new OutputErrorAccumulator();
          acc.add(reference[name].data as Float32Array, out[name].data as Float32Array);
          assert.ok(acc.result().sqnrDb >= FLOORS[v.dtype], `${label} ${v.dtype} output ${name}: SQNR ${acc.result().sqnrDb.toFixed(2)} dB < ${FLOORS[v.dtype]} dB`);
        }
      } finally {
        await s.release();
      }
      assert.ok(v.sqnrDb >= FLOORS[v.dtype], `${label} ${v.dtype}: reported SQNR ${v.sqnrDb.toFixed(2)} dB < ${FLOORS[v.dtype]}`);
      assert.ok(v.sizeRatio < SIZE[v.dtype], `${label} ${v.dtype}: ${v.sizeRatio.toFixed(3)} of fp32's size`);
    }
  } finally {
    await fp32.release();
  }
}

/** Conv → Relu → Conv: nothing for the MatMul-only 4-bit variants. */
function convModel(): Model {
  const w = (name: string, dims: number[], seed: number) => makeTensor(name, DataType.FLOAT, dims, Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(seed * 7.1 + i * 1.3) * 0.3));
  const graph = newGraph({
    name: 'conv-only',
    node: [
      newNode({ op_type: 'Conv', name: 'c1', input: ['x', 'w1'], output: ['h'], attribute: [makeAttribute('pads', [1, 1, 1, 1])] }),
      newNode({ op_type: 'Relu', name: 'r', input: ['h'], output: ['hr'] }),
      newNode({ op_type: 'Conv', name: 'c2', input: ['hr', 'w2'], output: ['y'] }),
    ],
    input: [newValueInfo({ name: 'x', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_value: 1 }, { dim_value: 3 }, { dim_value: 8 }, { dim_value: 8 }] } } } })],
    output: [newValueInfo({ name: 'y', type: { tensor_type: { elem_type: DataType.FLOAT } } })],
    initializer: [w('w1', [8, 3, 3, 3], 1), w('w2', [4, 8, 1, 1], 2)],
  });
  return loadModel(encodeModel(newModel({ ir_version: 8, opset_import: [{ domain: '', version: 17 }], graph })));
}

function initializerTypes(file: string, opType: string, input = 1): number[] {
  const g = loadModel(file).graph;
  return g.proto.node.filter((n) => n.op_type === opType).map((n) => g.initializer(n.input[input])?.data_type ?? -1);
}

describe('dtype variants (Transformers.js files)', function () {
  const dir = tempDir('quantbook-variants-');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('the MNIST transformer', () => {
    const feeds = () => mnistBatch(mnist().test, 0, 64);
    let r: MakeVariantsResult;
    before(async () => {
      r = await makeVariants(TRANSFORMER, { outDir: path.join(dir, 'mnist'), data: [feeds(), mnistBatch(mnist().test, 64, 64)] });
    });

    it('writes model.onnx and the fp16, q8, int8, uint8, q4, q4f16 and bnb4 files; each runs and clears its SQNR floor', async () => {
      assert.deepEqual(fs.readdirSync(r.outDir).sort(), ['model.onnx', 'model_fp16.onnx', 'model_int8.onnx', 'model_quantized.onnx', 'model_uint8.onnx', 'model_q4.onnx', 'model_q4f16.onnx', 'model_bnb4.onnx', CONFIG_FILE, REPORT_FILE].sort());
      assert.deepEqual(r.variants.map((v) => v.dtype), ['fp32', 'fp16', 'q8', 'int8', 'uint8', 'q4', 'q4f16', 'bnb4']);
      assert.deepEqual(r.skipped, []);
      await checkVariants('mnist', r, feeds());
    });

    it('fp16: float16 weights, float32 graph inputs/outputs, Softmax and LayerNormalization in float32', async () => {
      const file = path.join(r.outDir, VARIANT_FILES.fp16);
      const m = loadModel(file);
      // the weights are stored float16 (ORT CPU's MatMul reads them through a Cast to float32)
      const g = m.graph;
      const weights = g.proto.node.filter((n) => n.op_type === 'MatMul').map((n) => {
        const p = g.producer(n.input[1]);
        return g.initializer(p?.op_type === 'Cast' ? p.input[0] : n.input[1]);
      }).filter((t) => t);
      assert.equal(weights.length, 8);
      assert.ok(weights.every((t) => t!.data_type === DataType.FLOAT16), 'MatMul weights float16');
      for (const v of [...m.proto.graph!.input, ...m.proto.graph!.output]) assert.equal(v.type?.tensor_type?.elem_type, DataType.FLOAT, `${v.name} float32`);
      const types = await inferElemTypes(m);
      for (const n of m.proto.graph!.node.filter((x) => x.op_type === 'Softmax' || x.op_type === 'LayerNormalization')) {
        assert.equal(types.get(n.input[0]), DataType.FLOAT, `${n.name} reads float32`);
      }
      // a float16 activation exists (not a float32 model with float16 storage only)
      assert.ok([...types.values()].filter((t) => t === DataType.FLOAT16).length > 10);
    });

    it('q8/int8: MatMulInteger on int8 weights after DynamicQuantizeLinear; uint8: uint8 weights', () => {
      for (const [dtype, type] of [['q8', DataType.INT8], ['int8', DataType.INT8], ['uint8', DataType.UINT8]] as const) {
        const file = path.join(r.outDir, VARIANT_FILES[dtype]);
        const ops = loadModel(file).proto.graph!.node.map((n) => n.op_type);
        assert.equal(ops.filter((o) => o === 'MatMulInteger').length, 8, `${dtype}: the 8 weight MatMuls`);
        assert.ok(ops.includes('DynamicQuantizeLinear'));
        assert.deepEqual([...new Set(initializerTypes(file, 'MatMulInteger'))], [type], `${dtype} weight type`);
      }
    });

    it('quantize_config.json records per variant the op types, weight type, per-channel, reduce-range and block size', () => {
      const config = JSON.parse(fs.readFileSync(path.join(r.outDir, CONFIG_FILE), 'utf8'));
      assert.deepEqual(config.modes, ['fp16', 'q8', 'int8', 'uint8', 'q4', 'q4f16', 'bnb4']);
      assert.deepEqual(Object.keys(config.variants), ['fp32', 'fp16', 'q8', 'int8', 'uint8', 'q4', 'q4f16', 'bnb4']);
      for (const d of EIGHT_BIT) {
        const v = config.variants[d];
        assert.equal(v.file, VARIANT_FILES[d as 'q8']);
        assert.deepEqual(v.op_types, ['MatMul']);
        assert.equal(v.weight_type, d === 'uint8' ? 'uint8' : 'int8');
        assert.equal(v.per_channel, true);
        assert.equal(v.reduce_range, false);
        assert.equal(v.block_size, null);
        assert.equal(v.symmetric, d !== 'uint8');
        assert.deepEqual(v.layers, { MatMul: 8 });
        assert.deepEqual(v.kept_float.map((k: { name: string }) => k.name).sort(), ['ctx_heads', 'scores']);
        assert.deepEqual(v.smoothed_layernorm.map((s: { node: string }) => s.node), ['ln1', 'ln2']);
      }
      assert.equal(config.variants.fp16.weight_type, 'float16');
      assert.equal(config.variants.fp16.io_type, 'float32');
      assert.equal(config.variants.fp16.kept_float32.Softmax, 1);
      assert.ok(config.variants.fp16.kept_float32_reasons['no float16 kernel in ONNX Runtime CPU'] > 0);
      const report = JSON.parse(fs.readFileSync(path.join(r.outDir, REPORT_FILE), 'utf8'));
      assert.deepEqual(report.variants.map((v: { dtype: string }) => v.dtype), ['fp32', 'fp16', 'q8', 'int8', 'uint8', 'q4', 'q4f16', 'bnb4']);
      assert.equal(report.inputs, '2 given batches');
    });

    it('virtual inputs from the input shapes when no data is given', async () => {
      const v = await makeVariants(TRANSFORMER, { outDir: path.join(dir, 'mnist-virtual'), dtypes: ['fp16'] });
      assert.match(v.inputs, /virtual inputs \(x \[2, 28, 28\]\)/);
      assert.ok(v.variants[0].sqnrDb >= 40);
    });
  });

  describe('fp16 conversion', () => {
    it("target 'cpu' leaves ORT no float16 node to cast around itself; 'any' leaves it some", async () => {
      const model = loadModel(TRANSFORMER);
      const cpu = await convertToFloat16(model);
      assert.deepEqual([...await cpuFloat16Fallbacks(cpu.model)], []);
      assert.ok(cpu.keptFloat32.some((k) => k.reason === 'no float16 kernel in ONNX Runtime CPU' && k.opType === 'MatMul'));
      const any = await convertToFloat16(model, { target: 'any' });
      assert.ok((await cpuFloat16Fallbacks(any.model)).size > 0);
      assert.ok(any.keptFloat32.every((k) => k.reason !== 'no float16 kernel in ONNX Runtime CPU'));
      // the sensitive ops stay float32 with no help from ORT's own casts; the MatMuls are float16
      assert.deepEqual(any.keptFloat32.map((k) => k.opType).sort(), ['LayerNormalization', 'LayerNormalization', 'LayerNormalization', 'ReduceMean', 'Softmax']);
      const types = await inferElemTypes(any.model);
      for (const n of any.model.proto.graph!.node) {
        if (n.op_type === 'Softmax' || n.op_type === 'LayerNormalization') assert.equal(types.get(n.input[0]), DataType.FLOAT, `${n.name} input`);
        if (n.op_type === 'MatMul') assert.equal(types.get(n.output[0]), DataType.FLOAT16, `${n.name} output`);
      }
      const acc = await measureAccuracy(model.toBytes(), any.model.toBytes(), [mnistBatch(mnist().test, 0, 32)]);
      console.log(`      fp16 target 'any' (float16 everywhere but the sensitive ops): SQNR ${acc.sqnrDb.toFixed(2)} dB`);
      assert.ok(acc.sqnrDb >= 40);
    });

    it('converts Constant and ConstantOfShape values, and saturates float32 constants at ±65504', async () => {
      const f32 = (name: string) => newValueInfo({ name, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_value: 2 }] } } } });
      const graph = newGraph({
        name: 'g',
        input: [f32('x')],
        output: [f32('y'), f32('z')],
        initializer: [makeTensor('shape', DataType.INT64, [1], BigInt64Array.of(2n)), makeTensor('very_negative', DataType.FLOAT, [2], Float32Array.of(-3.4e38, 1))],
        node: [
          newNode({ op_type: 'ConstantOfShape', name: 'fill', input: ['shape'], output: ['filled'], attribute: [makeAttribute('value', makeTensor('', DataType.FLOAT, [1], Float32Array.of(1.5)))] }),
          newNode({ op_type: 'Constant', name: 'three', output: ['c'], attribute: [makeAttribute('value', makeTensor('', DataType.FLOAT, [2], Float32Array.of(3, 3)))] }),
          newNode({ op_type: 'Add', name: 'add1', input: ['x', 'filled'], output: ['a'] }),
          newNode({ op_type: 'Add', name: 'add2', input: ['a', 'c'], output: ['y'] }),
          newNode({ op_type: 'Mul', name: 'mul', input: ['x', 'very_negative'], output: ['z'] }),
        ],
      });
      const model = new Model(newModel({ ir_version: 8, opset_import: [{ domain: '', version: 17 }], graph }));
      const r = await convertToFloat16(model, { target: 'any' });
      assert.equal(r.float16Tensors, 2); // the Constant and the initializer; ConstantOfShape's value in place
      const s = await ort.InferenceSession.create(r.model.toBytes());
      const out = await s.run({ x: new ort.Tensor('float32', Float32Array.of(0.5, 1), [2]) });
      await s.release();
      assert.deepEqual([...(out.y.data as Float32Array)], [5, 5.5]);
      assert.deepEqual([...(out.z.data as Float32Array)], [-32752, 1]); // 0.5 · −65504 (float16 max), not −inf
    });

    it('refuses If/Loop/Scan bodies with a named error', async () => {
      await assert.rejects(convertToFloat16(loadModel(MODELS.vad)), /FLOAT16_SUBGRAPHS.*If/);
    });
  });

  describe('q8 on convolutions and embeddings', () => {
    it('PP-OCR cls: q8 picks uint8 weights (a Conv model, as Transformers.js does); ConvInteger runs', async () => {
      const m = loadModel(MODELS.cls);
      const r = quantizeDynamicWeights(m, { weightType: 'uint8' });
      assert.ok(r.layers.filter((l) => l.opType === 'Conv').length > 40);
      const out = await makeVariants(m, { outDir: path.join(dir, 'cls'), dtypes: ['q8'], data: [{ x: new ort.Tensor('float32', Float32Array.from({ length: 2 * 3 * 48 * 192 }, (_, i) => Math.sin(i / 97)), [2, 3, 48, 192]) }] });
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'cls', CONFIG_FILE), 'utf8'));
      assert.equal(config.variants.q8.weight_type, 'uint8');
      assert.ok(loadModel(path.join(dir, 'cls', VARIANT_FILES.q8)).proto.graph!.node.some((n) => n.op_type === 'ConvInteger'));
      console.log(`      PP-OCR cls q8: SQNR ${out.variants[0].sqnrDb.toFixed(2)} dB`);
      assert.ok(out.variants[0].sqnrDb >= 20);
    });

    it('LayerNorm smoothing keeps the float function and is what lifts the transformer over 20 dB', async () => {
      const model = loadModel(TRANSFORMER);
      const smoothed = model.clone();
      assert.equal(smoothLayerNormOutliers(smoothed).length, 2);
      const data = [mnistBatch(mnist().test, 0, 64)];
      assert.ok((await measureAccuracy(model.toBytes(), smoothed.toBytes(), data)).sqnrDb > 90, 'same function');
      const plain = quantizeDynamicWeights(model, { weightType: 'int8', smoothLayerNorm: false });
      const db = (await measureAccuracy(model.toBytes(), plain.model.toBytes(), data)).sqnrDb;
      console.log(`      mnist int8 without LayerNorm smoothing: ${db.toFixed(2)} dB`);
      assert.ok(db < 20);
    });
  });

  describe('corpus: BERT-style encoder', () => {
    const entry = SEQUENCE_CORPUS.find((e) => e.name === 'bert-encoder-op13')!;
    it('every variant runs and clears its floor; the embedding Gathers and the pooler Gemm are 8-bit', async () => {
      const file = await entry.write(dir);
      const r = await makeVariants(file, { outDir: path.join(dir, 'bert'), data: [entry.feeds(1), entry.feeds(2)] });
      await checkVariants('bert', r, entry.feeds(3));
      const q8 = loadModel(path.join(dir, 'bert', VARIANT_FILES.q8)).graph;
      const gathers = q8.proto.node.filter((n) => n.op_type === 'Gather' && q8.initializer(n.input[0]));
      assert.equal(gathers.length, 3);
      for (const n of gathers) {
        assert.equal(q8.initializer(n.input[0])!.data_type, DataType.INT8);
        assert.equal(q8.consumers(n.output[0])[0].op_type, 'DequantizeLinear');
      }
      // uint8 tables: DequantizeLinear(table_q, s, z) gives every entry back within half a step
      const float = loadModel(file).graph;
      const u8 = loadModel(path.join(dir, 'bert', VARIANT_FILES.uint8)).graph;
      for (const n of u8.proto.node.filter((x) => x.op_type === 'DequantizeLinear')) {
        const gather = u8.producer(n.input[0])!;
        const table = u8.constantValue(gather.input[0])!;
        assert.equal(table.type, DataType.UINT8);
        const [scale, zero] = [u8.constantValue(n.input[1])!.data[0] as number, u8.constantValue(n.input[2])!.data[0] as number];
        const original = float.constantValue(float.proto.node.find((x) => x.output[0] === n.output[0])!.input[0])!.data as Float32Array;
        let worst = 0;
        (table.data as Uint8Array).forEach((q, i) => { worst = Math.max(worst, Math.abs((q - zero) * scale - original[i])); });
        assert.ok(worst <= scale * 0.5001, `${gather.input[0]}: ${worst} > half of ${scale}`);
      }
      // virtual inputs: token ids index the embedding table, the mask is ones, symbolic dimensions get sizes
      const [virtual] = variantInputs(loadModel(file), 1).feeds;
      assert.deepEqual(virtual.input_ids.dims, [2, 8]);
      const ids = [...(virtual.input_ids.data as BigInt64Array)].map(Number);
      assert.ok(ids.every((i) => i >= 0 && i < 1000) && new Set(ids).size > 8, 'ids drawn over the vocabulary');
      assert.ok([...(virtual.attention_mask.data as BigInt64Array)].every((v) => v === 1n));
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'bert', CONFIG_FILE), 'utf8'));
      assert.deepEqual(config.variants.q8.layers, { MatMul: 12, Gemm: 1, Gather: 3 });
      assert.deepEqual(config.variants.q8.op_types, ['Gather', 'Gemm', 'MatMul']);
    });
  });

  describe('corpus: GPT-2 decoder with KV cache', () => {
    const entry = SEQUENCE_CORPUS.find((e) => e.name === 'gpt2-kv-cache-op14')!;
    it('every variant takes and returns the cache as fp32 does, over two decoding steps', async () => {
      const file = await entry.write(dir);
      const r = await makeVariants(file, { outDir: path.join(dir, 'gpt2'), data: [entry.feeds(1), entry.feeds(2)] });
      await checkVariants('gpt2', r, entry.feeds(3));
      const q4 = r.variants.find((v) => v.dtype === 'q4')!;
      assert.ok(q4.sizeRatio <= 0.2, `q4 is ${q4.sizeRatio.toFixed(3)} of the decoder's fp32 size`);
      // step 1 on a random cache, step 2 on the cache step 1 returned: each variant on its own cache
      const decode = async (f: string) => {
        const s = await session(f);
        try {
          const first = await s.run(gptFeeds([[1, 2, 3, 4], [5, 6, 7, 8]], 5, 7));
          const second = await s.run(gptFeeds([[9], [10]], first));
          return { first, second };
        } finally {
          await s.release();
        }
      };
      const reference = await decode(path.join(r.outDir, VARIANT_FILES.fp32));
      assert.deepEqual(reference.second['present_key.1'].dims, [2, 4, 10, 16]);
      for (const v of r.variants.filter((x) => x.dtype !== 'fp32')) {
        const got = await decode(path.join(r.outDir, v.file));
        for (const name of Object.keys(reference.second)) {
          assert.deepEqual(got.second[name].dims, reference.second[name].dims, `${v.dtype} ${name}`);
          assert.equal(got.second[name].type, 'float32');
        }
        const acc = new OutputErrorAccumulator();
        acc.add(reference.second.logits.data as Float32Array, got.second.logits.data as Float32Array);
        console.log(`      gpt2 ${v.dtype} second step logits: SQNR ${acc.result().sqnrDb.toFixed(2)} dB`);
        assert.ok(acc.result().sqnrDb >= FLOORS[v.dtype], `${v.dtype} second step`);
      }
    });
  });

  describe('4-bit variants', () => {
    it('q4 (MatMulNBits, block 32), q4f16 (the same with float16 activations and scales) and bnb4 (MatMulBnb4 NF4, block 64) are what the files hold and the config says', () => {
      const out = path.join(dir, 'mnist');
      const config = JSON.parse(fs.readFileSync(path.join(out, CONFIG_FILE), 'utf8'));
      const ops = (f: string) => new Set(loadModel(path.join(out, f)).graph.proto.node.map((n) => n.op_type));
      assert.ok(ops(VARIANT_FILES.q4).has('MatMulNBits') && ops(VARIANT_FILES.q4f16).has('MatMulNBits') && ops(VARIANT_FILES.bnb4).has('MatMulBnb4'));
      assert.equal(config.variants.q4.block_size, 32);
      assert.equal(config.variants.q4.weight_type, 'int4');
      assert.equal(config.variants.bnb4.block_size, 64);
      assert.equal(config.variants.bnb4.weight_type, 'nf4');
      assert.deepEqual(config.variants.q4.scale_types, ['float32']);
      // q4f16 stores every scale in float16 (a MatMulNBits that ORT runs in float32 reads it through a Cast)
      const q4f16 = loadModel(path.join(out, VARIANT_FILES.q4f16)).graph;
      const stored = (t: string): number | undefined => q4f16.initializer(t)?.data_type ?? (q4f16.producer(t)?.op_type === 'Cast' ? stored(q4f16.producer(t)!.input[0]) : undefined);
      const scales = q4f16.proto.node.filter((n) => n.op_type === 'MatMulNBits').map((n) => stored(n.input[2]));
      assert.ok(scales.length > 0 && scales.every((t) => t === DataType.FLOAT16), `q4f16 scales ${scales}`);
    });

    it('a model without constant-weight MatMuls: the default set skips q4/q4f16/bnb4 naming why; asked by name, q4 is refused and nothing is written', async () => {
      const convOnly = convModel();
      const r = await makeVariants(convOnly, { outDir: path.join(dir, 'cls-default') });
      assert.deepEqual(r.skipped.map((x) => x.dtype), ['q4', 'q4f16', 'bnb4']);
      for (const x of r.skipped) assert.match(x.reason, /no MatMul with a constant 2-D/);
      assert.ok(!fs.existsSync(path.join(dir, 'cls-default', VARIANT_FILES.q4)));
      const named = path.join(dir, 'cls-q4');
      await assert.rejects(makeVariants(convOnly, { outDir: named, dtypes: ['fp16', 'q4'] }), /no MatMul with a constant 2-D/);
      assert.ok(!fs.existsSync(named));
      await assert.rejects(makeVariants(TRANSFORMER, { outDir: path.join(dir, 'x'), dtypes: ['fp8' as 'fp16'] }), /dtypes.*fp8.*one of fp32, fp16/);
    });
  });

  describe('quantbook variants', () => {
    const CLI = path.join(__dirname, '..', '..', 'sdk', 'cli', 'main.js');
    const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'variants', ...args], { encoding: 'utf8', timeout: 300000 });

    it('writes the variants from a data folder and prints the table', () => {
      const data = path.join(dir, 'cli-data');
      fs.mkdirSync(data);
      for (let b = 0; b < 2; b++) {
        const x = mnistBatch(mnist().test, b * 32, 32).x;
        writeNpy(path.join(data, `batch${b}.npy`), x.data as Float32Array, x.dims);
      }
      const out = path.join(dir, 'cli-out');
      const r = run([TRANSFORMER, '--out', out, '--dtypes', 'fp16,q8,uint8', '--data', data]);
      assert.equal(r.status, 0, r.stderr);
      const lines = r.stdout.split('\n');
      assert.match(lines[0], /^dtype\s+file\s+size\s+x fp32\s+SQNR dB\s+cosine$/);
      for (const [d, f] of [['fp32', 'model.onnx'], ['fp16', 'model_fp16.onnx'], ['q8', 'model_quantized.onnx'], ['uint8', 'model_uint8.onnx']]) {
        const row = lines.find((l) => l.startsWith(`${d} `));
        assert.ok(row, `row for ${d}`);
        const cells = row!.split(/\s{2,}/);
        assert.equal(cells[1], f);
        if (d !== 'fp32') assert.ok(Number(cells[4]) >= FLOORS[d], `${d} SQNR ${cells[4]}`);
        assert.ok(fs.existsSync(path.join(out, f)));
      }
      assert.match(r.stdout, /accuracy vs fp32 on 2 given batches/);
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, CONFIG_FILE), 'utf8')).modes, ['fp16', 'q8', 'uint8']);
    });

    it('exit 3 for a dtype the model has nothing for, 2 for an unknown one or a missing --out', () => {
      const conv = path.join(dir, 'conv-only.onnx');
      fs.writeFileSync(conv, convModel().toBytes());
      const q4 = run([conv, '--out', path.join(dir, 'cli-q4'), '--dtypes', 'q4']);
      assert.equal(q4.status, 3);
      assert.match(q4.stderr, /no MatMul with a constant 2-D/);
      const bad = run([TRANSFORMER, '--out', path.join(dir, 'cli-bad'), '--dtypes', 'fp16,int4']);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /--dtypes: got "fp16,int4"/);
      assert.equal(run([TRANSFORMER]).status, 2);
    });
  });
});
