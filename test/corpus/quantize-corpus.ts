/**
 * Quantizes one corpus model the three ways the corpus test and bench measure (W8A8 static with
 * minmax and with histogram calibration, W8A8_DYNAMIC) and scores each against fp32 on held-out
 * inputs: the lowest output SQNR over the model's float outputs.
 */
import * as ort from 'onnxruntime-node';
import { loadModel, quantizeW8A8, quantizeW8A8Dynamic } from '../../sdk';
import { float16BitsToNumber } from '../../sdk/onnx/dtype';
import { Model } from '../../sdk/onnx/model';
import { compareOutputs } from '../../sdk/eval/metrics';
import { CorpusEntry, Feeds } from './types';

export const MODES = ['minmax', 'histogram', 'dynamic'] as const;
export type Mode = (typeof MODES)[number];

export const CALIBRATION_SEEDS = [1, 2, 3, 4];
export const HELD_SEEDS = [101, 102];

export interface ModeResult { mode: Mode; model: Model; layers: number; kept: number; sqnrDb: number; worstOutput: string }

function asFloats(t: ort.Tensor): Float32Array | undefined {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, float16BitsToNumber);
  return undefined;
}

/** Lowest SQNR over the float outputs of `test` against `reference`, over every held batch. */
export async function outputSqnr(reference: Uint8Array | string, test: Uint8Array, held: Feeds[]): Promise<{ sqnrDb: number; worstOutput: string }> {
  const [a, b] = await Promise.all([ort.InferenceSession.create(reference as Uint8Array), ort.InferenceSession.create(test)]);
  const ref = new Map<string, number[]>();
  const got = new Map<string, number[]>();
  try {
    for (const feeds of held) {
      const [ra, rb] = [await a.run(feeds), await b.run(feeds)];
      for (const name of a.outputNames) {
        const [x, y] = [asFloats(ra[name]), asFloats(rb[name])];
        if (!x || !y) continue;
        ref.set(name, [...(ref.get(name) ?? []), ...x]);
        got.set(name, [...(got.get(name) ?? []), ...y]);
      }
    }
  } finally {
    await Promise.all([a.release(), b.release()]);
  }
  let worst = { sqnrDb: Infinity, worstOutput: '' };
  for (const [name, x] of ref) {
    const s = compareOutputs(x, got.get(name)!).sqnrDb;
    if (s < worst.sqnrDb) worst = { sqnrDb: s, worstOutput: name };
  }
  return worst;
}

export async function quantizeEntry(entry: CorpusEntry, file: string, mode: Mode): Promise<ModeResult> {
  const model = loadModel(file);
  const calib = CALIBRATION_SEEDS.map((s) => entry.feeds(s));
  const r = mode === 'dynamic' ? quantizeW8A8Dynamic(model) : await quantizeW8A8(model, calib, { actMethod: mode });
  const held = HELD_SEEDS.map((s) => entry.feeds(s));
  const score = await outputSqnr(file, r.qdq.toBytes(), held);
  return { mode, model: r.qdq, layers: r.layers.length, kept: r.selection.skipped.length, ...score };
}
