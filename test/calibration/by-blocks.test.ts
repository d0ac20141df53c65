/**
 * Block-by-block calibration (issue 26): on the generated Llama-style decoder, cutting the graph
 * at each block's output and running block k on block k−1's cached outputs gives the statistics
 * whole-model calibration gives, while each stage's session holds one block's weights.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import { CalibrationResult, Observer, calibrate, loadModel } from '../../sdk';
import { blockOutputs, calibrateByBlocks } from '../../sdk/calibration/by-blocks';
import { seededRandom } from '../../sdk/util/seeded-random';
import { tempDir } from '../helpers';
import { SHAPES, generateDecoder, prefillFeeds } from '../llm/decoder';

describe('block-by-block calibration (issue 26)', function () {
  const dir = tempDir('quantbook-blocks-');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const shape = { ...SHAPES.tiny, layers: 4 };
  const random = seededRandom(5);
  const batch = () => prefillFeeds(shape, [0, 1].map(() => Array.from({ length: 12 }, () => Math.floor(random() * shape.vocab))));
  const batches = [batch(), batch(), batch()];

  it('finds each block\'s output, and gives the same ranges as calibrating the whole model; each stage holds one block\'s weights', async () => {
    const { modelPath } = generateDecoder(dir, { shape, seed: 3 });
    const model = loadModel(modelPath);
    const boundaries = blockOutputs(model);
    assert.equal(boundaries.length, shape.layers);
    for (const [i, b] of boundaries.entries()) assert.ok(model.graph.producer(b)!.name!.startsWith(`/model/layers.${i}/`), b);
    const whole = await calibrate(model, batches, { observer: 'minmax' });
    const stages: Array<{ stage: number; weightBytes: number; tensors: number }> = [];
    const byBlocks = await calibrateByBlocks(model, batches, { boundaries, observer: 'minmax', onStage: (s) => stages.push(s) });
    const ranges = (r: CalibrationResult) => new Map([...r.observers].map(([t, o]) => [t, (o as Observer).observedRange]));
    const [a, b] = [ranges(whole), ranges(byBlocks)];
    assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort(), 'the same tensors');
    assert.ok(a.size >= 7 * shape.layers + 1, `${a.size} tensors calibrated`);
    for (const [t, [lo, hi]] of a) {
      const [lo2, hi2] = b.get(t)!;
      const tol = 1e-5 * Math.max(Math.abs(lo), Math.abs(hi));
      assert.ok(Math.abs(lo - lo2) <= tol && Math.abs(hi - hi2) <= tol, `${t}: whole [${lo}, ${hi}] vs blocks [${lo2}, ${hi2}]`);
    }
    // stage 0 (embedding), one per block, the last (final norm + head): a block's stage holds that block's weights only
    assert.equal(stages.length, shape.layers + 1);
    const hd = shape.hidden / shape.heads;
    const blockWeights = 4 * (2 * shape.hidden + 2 * shape.hidden * shape.heads * hd + 2 * shape.hidden * shape.kvHeads * hd + 3 * shape.hidden * shape.intermediate);
    for (const s of stages.slice(1, -1)) assert.ok(s.weightBytes >= blockWeights && s.weightBytes < blockWeights * 1.01, `stage ${s.stage}: ${s.weightBytes} bytes of weights, one block is ${blockWeights}`);
    console.log(`      ${stages.length} stages; weights per block stage ${(stages[1].weightBytes / 1024).toFixed(0)} KiB of ${(fs.statSync(`${modelPath}.data`).size / 1024).toFixed(0)} KiB; ${a.size} tensors, equal to 1e-5`);
  });

  it('refuses boundaries out of order or unknown, naming them', async () => {
    const model = loadModel(generateDecoder(dir, { shape, seed: 3 }).modelPath);
    const boundaries = blockOutputs(model);
    await assert.rejects(calibrateByBlocks(model, batches, { boundaries: [boundaries[1], boundaries[0]] }), /boundaries: ".*" is boundary 2 but follows 0 boundaries; give them in graph order/);
    await assert.rejects(calibrateByBlocks(model, batches, { boundaries: ['nope'] }), /no node computes "nope"/);
    await assert.rejects(calibrateByBlocks(model, batches, { boundaries: [] }), /boundaries: got .*; expected a non-empty list/);
  });
});
