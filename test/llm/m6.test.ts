/**
 * m6 (Flex Smooth Quant) on the outlier decoder (issue 26): W8A8 and m6 + W8A8 through the session
 * API, logit SQNR against fp32 on held prompts (drawn apart from the calibration prompts).
 *
 * Measured (4-block tiny decoder, seed 3, 4 calibration batches of 2×16 tokens, 8 held batches):
 * W8A8 11.2 dB, m6 + W8A8 14.1 dB. Issue 26 asks for ≥ 6 dB; that is not reached, and the
 * measurements say why (see the pending test): error that no smoothing can move sets a ceiling
 * about 6 dB above W8A8.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as ort from 'onnxruntime-node';
import { session } from '../../sdk';
import { seededRandom, tempDir } from '../helpers';
import { SHAPES, generateDecoder, prefillFeeds } from './decoder';

const SHAPE = { ...SHAPES.tiny, layers: 4 };

function prompts(seed: number, batches: number): Array<Record<string, ort.Tensor>> {
  const r = seededRandom(seed);
  return Array.from({ length: batches }, () => prefillFeeds(SHAPE, [0, 1].map(() => Array.from({ length: 16 }, () => Math.floor(r() * SHAPE.vocab)))));
}

describe('m6 + W8A8 on the outlier decoder (issue 26)', function () {
  const dir = tempDir('quantbook-m6-decoder-');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { modelPath } = generateDecoder(dir, { shape: SHAPE, seed: 3 });
  const calib = prompts(5, 4);
  const held = prompts(77, 8);
  const logitSqnr = async (r: Awaited<ReturnType<ReturnType<typeof session>['run']>>) => (await r.compare(held, { attribution: false })).find((c) => c.opType === 'output' && c.tensor === 'logits')!.sqnrDb;

  it('smooths every linear layer\'s input, never worse than no smoothing on the search objective, and gains ≥ 2 dB logit SQNR on held prompts', async () => {
    const plain = await session(modelPath, { calibData: calib }).w8a8('minmax').run();
    const smoothed = await session(modelPath, { calibData: calib }).withM6().w8a8('minmax').run();
    const [a, b] = [await logitSqnr(plain), await logitSqnr(smoothed)];
    console.log(`      logit SQNR on held prompts: W8A8 ${a.toFixed(2)} dB, m6 + W8A8 ${b.toFixed(2)} dB (${(b - a).toFixed(2)} dB)`);
    // the pairs msModelSlim smooths in a Llama block: input_layernorm → q/k/v, (v →) o_proj,
    // post_attention_layernorm → gate/up, up → down; and the final norm → lm_head
    const readers = smoothed.smoothing.map((g) => g.layers.map((l) => l.split('/').slice(-2, -1)[0]).join(','));
    for (let i = 0; i < SHAPE.layers; i++) for (const group of ['q_proj,k_proj,v_proj', 'o_proj', 'gate_proj,up_proj', 'down_proj']) {
      assert.ok(smoothed.smoothing.some((g, j) => readers[j] === group && g.layers[0].startsWith(`/model/layers.${i}/`)), `layer ${i}: ${group} not smoothed`);
    }
    // α = β = 0 (s = 1) is a candidate: no group ends worse than unsmoothed on the search sample
    for (const g of smoothed.smoothing) assert.ok(g.errorAfter <= g.errorBefore, `${g.input}: ${g.errorBefore} → ${g.errorAfter}`);
    assert.ok(b - a >= 2, `logit SQNR ${a.toFixed(2)} → ${b.toFixed(2)} dB`);
  });

  // Why not ≥ 6 dB (measured on these prompts; each row quantizes only the layers named, the rest fp32):
  //   attention MatMuls (q·kᵀ, probs·V: activation × activation, nothing to smooth) alone: 18.8 dB;
  //   q/k/v alone: W8A8 13.4, m6 19.4 dB, and none of 12 fixed (α, β) tried on 0…1 does better;
  //   both together with m6: 17.1 dB, i.e. 5.9 dB above W8A8 (11.2) before o/gate/up/down add any error.
  //   down_proj reads silu(gate)·up, whose large values come per token, not per channel: held
  //   tokens exceed the 128-token calibration range (27–28 dB on calibration rows, 24 dB held,
  //   unsmoothed); smoothing moves channels, not tokens. W8A8_DYNAMIC 18.6, m6 + dynamic 24.4 dB.
  //   Scoring the α/β search on held-out folds (4-fold, scales and range from the other folds)
  //   chose better α/β per layer on held rows but not for the logits (14.1 → 13.5 dB) and cost the
  //   MNIST transformer 0.35 dB, so the search is unchanged.
  it('m6 + W8A8 beats W8A8 by ≥ 6 dB logit SQNR (issue 26: not reached, 3.0 dB; a ceiling of ≈ 5.9 dB from the attention MatMuls and q/k/v)');
});
