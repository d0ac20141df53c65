/**
 * QuantConfig's w_signed / w_sym / a_signed / a_sym on the MNIST CNN: each changes the written
 * grid (integer element type, zero points) in the QDQ and fake-quant models and in the
 * msModelSlim export, weights dequantize within half a step of the float weights, and accuracy
 * stays within 1 point of the default on ORT.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { Calibrator, DataType, Model, QuantConfig, QuantbookError, dequantizeLinear, initBackend, loadModel, msModelSlimWeights } from '../../sdk';
import { PtqResult } from '../../sdk/quantize/ptq';
import { CNN, cnnCalib, mnist, ortAccuracy } from '../cnn-fixtures';
import { tempDir } from '../helpers';

type Grid = Pick<QuantConfig, 'w_signed' | 'w_sym' | 'a_signed' | 'a_sym'>;
const SETTINGS: Array<Partial<Grid>> = [{}, { w_signed: false }, { w_sym: false }, { a_signed: true }, { a_sym: true }];

/** DequantizeLinear nodes of a model: weights (constant input) and activations (run-time input). */
function dequantizers(m: Model) {
  const g = m.graph;
  const dqs = g.nodes.filter((n) => n.op_type === 'DequantizeLinear');
  const of = (n: (typeof dqs)[number]) => ({ node: n, x: g.constantValue(n.input[0]), zp: g.constantValue(n.input[2])!, scale: g.constantValue(n.input[1])!.data as Float32Array });
  return { weights: dqs.filter((n) => g.isConstant(n.input[0]) && g.constantValue(n.input[0])!.type !== DataType.INT32).map(of), activations: dqs.filter((n) => !g.isConstant(n.input[0])).map(of) };
}

/** The range and zero points a grid allows: symmetric puts the zero point at the grid middle. */
function checkZeroPoints(zp: ArrayLike<number>, signed: boolean, symmetric: boolean, what: string): void {
  const [qmin, qmax] = signed ? [-128, 127] : [0, 255];
  for (const z of Array.from(zp)) {
    if (symmetric) assert.equal(z, signed ? 0 : 128, `${what}: symmetric zero point`);
    else assert.ok(z >= qmin && z <= qmax, `${what}: zero point ${z} outside [${qmin}, ${qmax}]`);
  }
}

describe('QuantConfig w_signed / w_sym / a_signed / a_sym', function () {
  this.timeout(600000);
  const dir = tempDir();
  const runs = new Map<string, { config: Grid; result: PtqResult; qdq: Model; fakeQuant: Model }>();
  before(async () => {
    await initBackend();
    for (const s of SETTINGS) {
      const config = new QuantConfig({ quant_mode: 1, act_method: 1, ...s });
      const calibrator = new Calibrator(CNN, config, cnnCalib());
      const result = await calibrator.run();
      // the models as written to disk and read back
      const files = calibrator.exportQuantOnnx(path.join(dir, JSON.stringify(s).replace(/\W/g, '_')), 'cnn');
      runs.set(JSON.stringify(s), { config, result, qdq: loadModel(files.qdq), fakeQuant: loadModel(files.fakeQuant) });
    }
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('weights: INT8 when signed, UINT8 when not; symmetric zero points at the grid middle; dequantized within half a step of the float weights', () => {
    for (const [name, { config: c, result, qdq }] of runs) {
      const { weights } = dequantizers(qdq);
      assert.equal(weights.length, result.layers.filter((l) => l.weight).length, name);
      for (const w of weights) {
        const type = c.w_signed ? DataType.INT8 : DataType.UINT8;
        assert.deepEqual([w.x!.type, w.zp.type], [type, type], `${name} ${w.node.name}: element types`);
        checkZeroPoints(w.zp.data as ArrayLike<number>, c.w_signed, c.w_sym, `${name} ${w.node.name}`);
        const axis = (w.node.attribute.find((a) => a.name === 'axis')?.i as number | undefined) ?? 1;
        const deq = dequantizeLinear(w.x!.data as ArrayLike<number>, w.scale, Int32Array.from(w.zp.data as ArrayLike<number>), w.x!.dims, axis);
        // the layer reading this DQ, and its float weight
        const layer = qdq.graph.consumers(w.node.output[0])[0];
        const rec = result.layers.find((l) => l.name === (layer.name || layer.output[0]))!;
        const float = result.float.graph.constantValue(rec.weight!.tensor)!.data as Float32Array;
        const perChannel = float.length / w.scale.length;
        float.forEach((v, i) => {
          const s = w.scale[Math.floor(i / perChannel)];
          assert.ok(Math.abs(deq[i] - v) <= s / 2 + 1e-7, `${name} ${rec.name}[${i}]: ${deq[i]} vs float ${v} (step ${s})`);
        });
      }
      if (!c.w_sym) assert.ok(weights.some((w) => Array.from(w.zp.data as ArrayLike<number>).some((z) => z !== 0)), `${name}: asymmetric weights get fitted zero points`);
    }
  });

  it('activations: UINT8 grid unless a_signed, zero point 0 / 128 when a_sym; the fake-quant Clip uses the same grid', () => {
    for (const [name, { config: c, qdq, fakeQuant }] of runs) {
      const { activations } = dequantizers(qdq);
      assert.ok(activations.length >= 3, `${name}: activation Q/DQ pairs`);
      for (const a of activations) {
        assert.equal(a.zp.type, c.a_signed ? DataType.INT8 : DataType.UINT8, `${name} ${a.node.name}`);
        checkZeroPoints(a.zp.data as ArrayLike<number>, c.a_signed, c.a_sym, `${name} ${a.node.name}`);
      }
      const g = fakeQuant.graph;
      assert.ok(!g.nodes.some((n) => n.op_type === 'QuantizeLinear' || n.op_type === 'DequantizeLinear'), `${name}: fake-quant keeps no Q/DQ`);
      const clips = g.nodes.filter((n) => n.op_type === 'Clip').map((n) => [g.constantValue(n.input[1])!.data[0], g.constantValue(n.input[2])!.data[0]]);
      assert.ok(clips.length >= 3 && clips.every(([lo, hi]) => lo === (c.a_signed ? -128 : 0) && hi === (c.a_signed ? 127 : 255)), `${name}: clips ${JSON.stringify(clips)}`);
    }
  });

  it('accuracy on ORT (QDQ and fake-quant) stays within 1 point of the default for every setting', async () => {
    const { test } = mnist();
    const scores: string[] = [];
    let base = 0;
    for (const [name, { qdq, fakeQuant }] of runs) {
      const [a, f] = [await ortAccuracy(qdq.toBytes(), test), await ortAccuracy(fakeQuant.toBytes(), test)];
      if (name === '{}') base = a;
      scores.push(`${name} ${(100 * a).toFixed(2)}% / ${(100 * f).toFixed(2)}%`);
      assert.ok(Math.abs(a - base) <= 0.01 && Math.abs(f - base) <= 0.01, `${name}: QDQ ${a}, fake-quant ${f}, default ${base}`);
    }
    console.log(`      accuracy (QDQ / fake-quant): ${scores.join('; ')}`);
    assert.ok(base > 0.96, `default ${base}`);
  });

  it('msModelSlim export: uint8 weights become signed int8 (w − 128) with the same values; asymmetric weights get weight_offset (W8A8_DYNAMIC) or a refusal (W8A8)', () => {
    const unsigned = runs.get(JSON.stringify({ w_signed: false }))!.result;
    const signed = runs.get('{}')!.result;
    const u = msModelSlimWeights('W8A8', unsigned.float, unsigned.layers);
    const s = msModelSlimWeights('W8A8', signed.float, signed.layers);
    for (const rec of unsigned.layers.filter((l) => l.weight)) {
      const p = u.prefixes.get(rec.name)!;
      const w = u.tensors.get(`${p}.weight`)!;
      assert.equal(w.dtype, 'I8');
      assert.deepEqual(Array.from(w.data as Int8Array), Array.from(rec.weight!.int8, (v) => v - 128), `${p}: uint8 − 128`);
      // the symmetric uint8 grid is the int8 grid shifted: the same integers as the signed run, so the same quant_bias
      assert.deepEqual(Array.from(w.data as Int8Array), Array.from(s.tensors.get(`${p}.weight`)!.data as Int8Array), `${p}: same integers as w_signed true`);
      assert.deepEqual(Array.from(u.tensors.get(`${p}.quant_bias`)!.data as Int32Array), Array.from(s.tensors.get(`${p}.quant_bias`)!.data as Int32Array));
    }
    const asym = runs.get(JSON.stringify({ w_sym: false }))!.result;
    const d = msModelSlimWeights('W8A8_DYNAMIC', asym.float, asym.layers);
    for (const rec of asym.layers.filter((l) => l.weight)) {
      const p = d.prefixes.get(rec.name)!;
      const offset = Array.from(d.tensors.get(`${p}.weight_offset`)!.data as Float32Array);
      assert.deepEqual(offset, Array.from(rec.weight!.zeroPoint ?? new Int32Array(offset.length)), `${p}: weight_offset = the weight zero point`);
    }
    assert.ok(asym.layers.some((l) => l.weight?.zeroPoint?.some(Boolean)));
    assert.throws(() => msModelSlimWeights('W8A8', asym.float, asym.layers), (e: QuantbookError) => e.code === 'UNSUPPORTED' && /asymmetric weights .*W8A8 needs symmetric weights \(w_sym true\)/.test(e.message));
  });
});
