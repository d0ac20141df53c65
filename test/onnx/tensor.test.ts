import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import Long from 'long';
import { DataType, loadModel, makeTensor, proto, readTensor, toFloat32 } from '../../sdk';
import { float16BitsToNumber, numberToFloat16Bits } from '../../sdk/onnx/dtype';
import { runModel, tempDir } from '../helpers';
import { tinyModel } from '../build';

describe('tensors: every ONNX element type', () => {
  const samples: Array<[DataType, number[] | bigint[] | string[]]> = [
    [DataType.FLOAT, [0, -1.5, 3.25, 2 ** -100, -0]],
    [DataType.DOUBLE, [Math.PI, -1e300, 0]],
    [DataType.INT8, [-128, 127, 0, 5]],
    [DataType.UINT8, [0, 255, 17]],
    [DataType.INT16, [-32768, 32767]],
    [DataType.UINT16, [65535, 1]],
    [DataType.INT32, [-(2 ** 31), 2 ** 31 - 1]],
    [DataType.UINT32, [2 ** 32 - 1, 0]],
    [DataType.INT64, [-(2n ** 63n), 2n ** 62n + 1n, 9007199254740993n]],
    [DataType.UINT64, [2n ** 64n - 1n, 1n]],
    [DataType.BOOL, [1, 0, 1]],
    [DataType.FLOAT16, [0x3c00, 0x7bff, 0x8001]],
    [DataType.BFLOAT16, [0x3f80, 0xc000]],
    [DataType.FLOAT8E4M3FN, [0x7e, 0x01, 0xfe]],
    [DataType.FLOAT8E4M3FNUZ, [0x7f, 0x80]],
    [DataType.FLOAT8E5M2, [0x7b, 0x7c]],
    [DataType.FLOAT8E5M2FNUZ, [0x7f]],
    [DataType.FLOAT8E8M0, [127, 0, 254]],
    [DataType.INT4, [-8, 7, 1, -1, 3]],
    [DataType.UINT4, [15, 0, 9]],
    [DataType.FLOAT4E2M1, [7, 15, 1]],
    [DataType.INT2, [-2, 1, 0, -1, 1]],
    [DataType.UINT2, [3, 2, 1]],
    [DataType.COMPLEX64, [1, 2, 3, 4]],
    [DataType.STRING, ['héllo', '', 'quant']],
  ];

  for (const [type, values] of samples) {
    it(`${DataType[type]}: makeTensor → encode → decode → readTensor gives the same values`, () => {
      const n = type === DataType.COMPLEX64 ? values.length / 2 : values.length;
      const t = makeTensor('t', type, [n], values as never);
      const decoded = proto.TensorProtoType.decode(proto.TensorProtoType.encode(t as never).finish()) as unknown as proto.TensorProto;
      const back = readTensor(decoded);
      assert.equal(back.type, type);
      assert.deepEqual(back.dims, [n]);
      assert.deepEqual(Array.from(back.data as ArrayLike<unknown>).map(String), values.map(String));
    });
  }

  it('packs sub-byte types two (int4) or four (int2) per byte, low bits first', () => {
    assert.deepEqual([...makeTensor('a', DataType.INT4, [4], [-8, 7, 1, -1]).raw_data!], [0x78, 0xf1]);
    assert.deepEqual([...makeTensor('b', DataType.UINT4, [3], [15, 0, 9]).raw_data!], [0x0f, 0x09]);
    assert.deepEqual([...makeTensor('c', DataType.INT2, [5], [-2, 1, 0, -1, 1]).raw_data!], [0b11000110, 0b01]);
  });

  it('decodes narrow floats to the values the ONNX spec defines', () => {
    const f = (type: DataType, bits: number[]) => [...toFloat32(type, Uint8Array.from(bits))];
    assert.deepEqual(f(DataType.FLOAT8E4M3FN, [0x7e, 0x01, 0xfe, 0x38]), [448, 2 ** -9, -448, 1]);
    assert.ok(Number.isNaN(f(DataType.FLOAT8E4M3FN, [0x7f])[0]));
    assert.deepEqual(f(DataType.FLOAT8E4M3FNUZ, [0x7f, 0x40]), [240, 1]);
    assert.ok(Number.isNaN(f(DataType.FLOAT8E4M3FNUZ, [0x80])[0]));
    assert.deepEqual(f(DataType.FLOAT8E5M2, [0x7b, 0x7c, 0x3c]), [57344, Infinity, 1]);
    assert.deepEqual(f(DataType.FLOAT8E5M2FNUZ, [0x7f, 0x40]), [57344, 1]);
    assert.deepEqual(f(DataType.FLOAT8E8M0, [127, 128, 0]), [1, 2, 2 ** -127]);
    assert.deepEqual(f(DataType.FLOAT4E2M1, [0, 1, 2, 3, 4, 5, 6, 7, 15]), [0, 0.5, 1, 1.5, 2, 3, 4, 6, -6]);
    assert.deepEqual([...toFloat32(DataType.FLOAT16, Uint16Array.of(0x3c00, 0x7bff, 0x0001, 0xfc00))], [1, 65504, 2 ** -24, -Infinity]);
    assert.deepEqual([...toFloat32(DataType.BFLOAT16, Uint16Array.of(0x3f80, 0xc049))], [1, -3.140625]);
  });

  it('float32 → float16 rounds half to even and saturates to infinity', () => {
    assert.equal(numberToFloat16Bits(1), 0x3c00);
    assert.equal(numberToFloat16Bits(65504), 0x7bff);
    assert.equal(numberToFloat16Bits(65520), 0x7c00); // halfway to the next binade rounds up to inf
    assert.equal(numberToFloat16Bits(1 + 2 ** -11), 0x3c00); // tie → even mantissa
    assert.equal(numberToFloat16Bits(1 + 3 * 2 ** -11), 0x3c02);
    for (const x of [0.1, -2.5, 3e-4, 3000.7]) assert.ok(Math.abs(float16BitsToNumber(numberToFloat16Bits(x)) - x) <= Math.abs(x) * 2 ** -11);
  });

  it('reads the typed repeated fields (int32_data, int64_data, uint64_data, float_data) as well as raw_data', () => {
    const t16 = readTensor(proto.newTensor({ name: 'h', data_type: DataType.FLOAT16, dims: [2], int32_data: [0x3c00, 0xc000] }));
    assert.deepEqual([...toFloat32(t16.type, t16.data as Uint16Array)], [1, -2]);
    const t64 = readTensor(proto.newTensor({ name: 'i', data_type: DataType.INT64, dims: [2], int64_data: [Long.fromString('9007199254740993'), Long.fromString('-9223372036854775808')] }));
    assert.deepEqual([...(t64.data as BigInt64Array)], [9007199254740993n, -(2n ** 63n)]);
    const tu = readTensor(proto.newTensor({ name: 'u', data_type: DataType.UINT64, dims: [1], uint64_data: [Long.fromString('18446744073709551615', true)] }));
    assert.deepEqual([...(tu.data as BigUint64Array)], [2n ** 64n - 1n]);
    const t4 = readTensor(proto.newTensor({ name: 'q', data_type: DataType.INT4, dims: [3], int32_data: [0x78, 0x01] }));
    assert.deepEqual([...(t4.data as Int8Array)], [-8, 7, 1]);
  });

  it('rejects data whose size does not match the dims, naming the tensor', () => {
    assert.throws(() => makeTensor('w', DataType.FLOAT, [2, 3], new Float32Array(5)), /tensor "w": dims \[2,3\] need 6 values, got 5/);
    const bad = proto.newTensor({ name: 'w', data_type: DataType.FLOAT, dims: [4], raw_data: new Uint8Array(12) });
    assert.throws(() => readTensor(bad), /tensor "w" \(FLOAT \[4\]\) needs 16 bytes of data, has 12/);
  });

  it('int64 values beyond 2^53 survive save, load and an ONNX Runtime run', async () => {
    const big = BigInt64Array.of(9007199254740993n, -(2n ** 63n) + 7n, 2n ** 62n + 1n);
    const bytes = tinyModel({
      inputs: [{ name: 'x', type: DataType.INT64, shape: [3] }],
      outputs: ['y'],
      nodes: [{ op: 'Add', inputs: ['x', 'c'], outputs: ['y'] }],
      initializers: [{ name: 'c', type: DataType.INT64, dims: [3], data: big }],
    });
    const dir = tempDir();
    const file = path.join(dir, 'int64.onnx');
    loadModel(bytes).save(file);
    const c = loadModel(file).graph.constantValue('c')!;
    assert.deepEqual([...(c.data as BigInt64Array)], [...big]);
    const ort = await import('onnxruntime-node');
    const out = await runModel(file, { x: new ort.Tensor('int64', BigInt64Array.of(1n, 0n, 0n), [3]) });
    assert.deepEqual([...(out.y.data as BigInt64Array)], [9007199254740994n, -(2n ** 63n) + 7n, 2n ** 62n + 1n]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
