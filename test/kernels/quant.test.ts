import { strict as assert } from 'assert';
import * as ort from 'onnxruntime-node';
import { DataType, dequantizeLinear, proto, quantizeLinear, roundHalfEven } from '../../sdk';
import { seededRandom } from '../helpers';
import { tinyModel } from '../build';

/** x → QuantizeLinear → q (output) → DequantizeLinear → y (output), scale/zero point as initializers. */
function qdqModel(type: DataType, scale: Float32Array, zp: ArrayLike<number>, shape: number[], axis?: number): Uint8Array {
  const attrs = axis === undefined ? [] : [proto.newAttribute({ name: 'axis', type: proto.AttributeType.INT, i: axis })];
  const zpData = type === DataType.UINT8 ? Uint8Array.from(zp) : Int8Array.from(zp);
  return tinyModel({
    inputs: [{ name: 'x', shape }],
    outputs: ['q', 'y'],
    nodes: [
      { op: 'QuantizeLinear', inputs: ['x', 's', 'z'], outputs: ['q'], attrs },
      { op: 'DequantizeLinear', inputs: ['q', 's', 'z'], outputs: ['y'], attrs },
    ],
    initializers: [
      { name: 's', type: DataType.FLOAT, dims: scale.length > 1 ? [scale.length] : [], data: scale },
      { name: 'z', type, dims: scale.length > 1 ? [scale.length] : [], data: zpData },
    ],
  });
}

async function ortQdq(model: Uint8Array, x: Float32Array, shape: number[]) {
  const s = await ort.InferenceSession.create(model);
  const out = await s.run({ x: new ort.Tensor('float32', x, shape) });
  await s.release();
  return { q: Array.from(out.q.data as Int8Array), y: out.y.data as Float32Array };
}

describe('quantize/dequantize kernels equal ONNX Runtime bit for bit', () => {
  it('rounds half to even', () => {
    assert.deepEqual([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4999, 2.5001].map((v) => roundHalfEven(v) + 0), [-2, -2, 0, 0, 2, 2, 2, 3]);
  });

  for (const [label, type, qmin, qmax, zp] of [['uint8', DataType.UINT8, 0, 255, 131], ['int8', DataType.INT8, -128, 127, -3]] as const) {
    it(`per-tensor ${label}: random values, exact ties and saturation`, async () => {
      const scale = Float32Array.of(0.0625); // a power of two: x/scale is exact, so ties are real ties
      const rnd = seededRandom(11);
      const values: number[] = [];
      for (let i = 0; i < 2000; i++) values.push((rnd() - 0.5) * 40);
      for (let k = -300; k <= 300; k++) values.push((k + 0.5) * 0.0625); // every .5 tie in and beyond range
      values.push(1e6, -1e6, 0, -0);
      const x = Float32Array.from(values);
      const ref = await ortQdq(qdqModel(type, scale, [zp], [x.length]), x, [x.length]);
      const q = quantizeLinear(x, scale, Int32Array.of(zp), { qmin, qmax });
      assert.deepEqual(Array.from(q), ref.q);
      assert.ok(q.some((v) => v === qmin) && q.some((v) => v === qmax), 'saturation was exercised');
      const y = dequantizeLinear(q, scale, Int32Array.of(zp));
      assert.deepEqual(Buffer.from(y.buffer), Buffer.from(ref.y.buffer));
    });

    it(`per-tensor ${label} with an inexact scale (0.1)`, async () => {
      const scale = Float32Array.of(0.1);
      const rnd = seededRandom(12);
      const x = Float32Array.from({ length: 5000 }, () => (rnd() - 0.5) * 30);
      const ref = await ortQdq(qdqModel(type, scale, [zp], [x.length]), x, [x.length]);
      const q = quantizeLinear(x, scale, Int32Array.of(zp), { qmin, qmax });
      assert.deepEqual(Array.from(q), ref.q);
      assert.deepEqual(Buffer.from(dequantizeLinear(q, scale, Int32Array.of(zp)).buffer), Buffer.from(ref.y.buffer));
    });
  }

  it('per-channel int8 along axis 1 of an NCHW tensor (opset 13)', async () => {
    const shape = [2, 3, 4, 5];
    const n = shape.reduce((a, b) => a * b);
    const rnd = seededRandom(13);
    const x = Float32Array.from({ length: n }, () => (rnd() - 0.5) * 8);
    const scale = Float32Array.of(0.01, 0.03125, 0.2);
    const zp = Int32Array.of(0, 5, -7);
    const ref = await ortQdq(qdqModel(DataType.INT8, scale, zp, shape, 1), x, shape);
    const q = quantizeLinear(x, scale, zp, { qmin: -128, qmax: 127 }, shape, 1);
    assert.deepEqual(Array.from(q), ref.q);
    assert.deepEqual(Buffer.from(dequantizeLinear(q, scale, zp, shape, 1).buffer), Buffer.from(ref.y.buffer));
  });
});
