import { strict as assert } from 'assert';
import * as tf from '@tensorflow/tfjs';
import {
  Histogram, QuantbookError, chooseReductions, initBackend, loopReductions, reductionChoice, tfjsReductions, useReductions,
} from '../../sdk';
import { randomFloats, seededRandom } from '../helpers';

describe('kernels: backends and reductions', () => {
  after(() => useReductions('loop'));

  it('picks the first installed tfjs backend (gpu → node → wasm → cpu) and says which were skipped', async () => {
    // Independently of initBackend: which of the optional packages resolve here.
    const resolves = (pkg: string): boolean => {
      try {
        require.resolve(pkg);
        return true;
      } catch {
        return false;
      }
    };
    const installed = {
      'tensorflow-gpu': resolves('@tensorflow/tfjs-node-gpu'),
      tensorflow: resolves('@tensorflow/tfjs-node'),
      wasm: resolves('@tensorflow/tfjs-backend-wasm'),
    };
    // This machine: tfjs-node(-gpu) cannot be installed (libtensorflow needs a download), wasm is.
    assert.deepEqual(installed, { 'tensorflow-gpu': false, tensorflow: false, wasm: true });
    const expected = installed['tensorflow-gpu'] ? 'tensorflow-gpu' : installed.tensorflow ? 'tensorflow' : installed.wasm ? 'wasm' : 'cpu';
    assert.equal(process.env.QUANTBOOK_TF_BACKEND, undefined, 'no forced backend in the test environment');
    const info = await initBackend();
    assert.equal(info.name, expected);
    assert.equal(tf.getBackend(), 'wasm', 'tfjs itself runs on the chosen backend');
    // both native packages were tried first and skipped because they do not resolve
    assert.deepEqual(info.skipped.map((s) => s.name), ['tensorflow-gpu', 'tensorflow']);
    assert.match(info.skipped[0].reason, /Cannot find module '@tensorflow\/tfjs-node-gpu'/);
    assert.match(info.skipped[1].reason, /Cannot find module '@tensorflow\/tfjs-node'/);
    assert.equal(info.simd, tf.env().getBool('WASM_HAS_SIMD_SUPPORT'));
    assert.equal(info.simd, true, 'wasm SIMD works in Node');
    assert.equal(info.threads, false, 'wasm threads cannot be enabled in Node');
  });

  it('rejects an unknown backend name, listing the allowed ones', async () => {
    await assert.rejects(initBackend('webgl' as never), (e: QuantbookError) => /backend: got "webgl"; expected one of tensorflow-gpu, tensorflow, wasm, cpu/.test(e.message));
  });

  it('the tfjs and typed-array reductions agree', async () => {
    await initBackend();
    const x = randomFloats(21 * 4762, 21, -5, 7);
    x[777] = 123.5;
    x[999] = -88.25;
    assert.deepEqual(tfjsReductions.minMax(x), loopReductions.minMax(x));
    assert.deepEqual(loopReductions.minMax(x), { min: -88.25, max: 123.5 });
    const shape = [3, 7, 4762];
    const a = tfjsReductions.channelMinMax(x, shape, 1);
    const b = loopReductions.channelMinMax(x, shape, 1);
    assert.deepEqual([...a.min], [...b.min]);
    assert.deepEqual([...a.max], [...b.max]);
    const m1 = tfjsReductions.moments(x);
    const m2 = loopReductions.moments(x);
    assert.ok(Math.abs(m1.sum - m2.sum) <= 1e-4 * Math.abs(m2.sumSq), `sum ${m1.sum} vs ${m2.sum}`);
    assert.ok(Math.abs(m1.sumSq - m2.sumSq) <= 1e-6 * m2.sumSq, `sumSq ${m1.sumSq} vs ${m2.sumSq}`);
    const e1 = tfjsReductions.qdqSquaredError(x, 0.05, 3, -128, 127);
    const e2 = loopReductions.qdqSquaredError(x, 0.05, 3, -128, 127);
    assert.ok(Math.abs(e1 - e2) <= 1e-6 * e2, `${e1} vs ${e2}`);
  });

  it('chooses per kernel by measurement and reports the timings', async () => {
    await initBackend();
    const timings = chooseReductions(1 << 16);
    const choice = reductionChoice();
    for (const k of Object.keys(timings) as Array<keyof typeof timings>) {
      assert.ok(timings[k].loop > 0 && timings[k].tfjs > 0);
      assert.equal(choice[k], timings[k].tfjs < timings[k].loop ? 'tfjs' : 'loop');
    }
  });

  describe('Histogram', () => {
    it('merging batches with different ranges matches the histogram of their concatenation within a bin', () => {
      const rnd = seededRandom(5);
      const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
      const batches = [
        Float32Array.from({ length: 20000 }, () => gauss()),
        Float32Array.from({ length: 20000 }, () => 3 + 2 * gauss()),
        Float32Array.from({ length: 20000 }, () => -4 + 0.5 * gauss()),
      ];
      const streamed = new Histogram(2048);
      for (const b of batches) streamed.add(b, loopReductions.minMax(b).min, loopReductions.minMax(b).max);
      const all = new Float32Array(60000);
      batches.forEach((b, i) => all.set(b, i * 20000));
      const whole = new Histogram(2048);
      const mm = loopReductions.minMax(all);
      whole.add(all, mm.min, mm.max);
      assert.equal(streamed.lo, whole.lo);
      assert.equal(streamed.hi, whole.hi);
      assert.ok(Math.abs(streamed.total - 60000) < 1e-6);
      const sorted = Float32Array.from(all).sort();
      for (const p of [0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]) {
        const exact = sorted[Math.floor(p * (sorted.length - 1))];
        assert.ok(Math.abs(streamed.percentile(p) - exact) <= 2 * whole.binWidth, `p${p}: ${streamed.percentile(p)} vs ${exact}`);
        assert.ok(Math.abs(streamed.percentile(p) - whole.percentile(p)) <= 2 * whole.binWidth);
      }
      const merged = new Histogram(1024);
      for (const b of batches) {
        const h = new Histogram(512);
        const r = loopReductions.minMax(b);
        h.add(b, r.min, r.max);
        merged.merge(h);
      }
      for (const v of [-5, -1, 0, 1, 3, 6]) assert.ok(Math.abs(merged.cdf(v) - whole.cdf(v)) < 0.01, `cdf(${v})`);
    });
  });
});
