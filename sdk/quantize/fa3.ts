/**
 * FA3: int8 quantization of attention's Q, K and V, one scale per head, for the
 * MatMul(Q, Kᵀ) → [scale/mask] → Softmax → MatMul(P, V) pattern (msModelSlim's FA3 processor,
 * which runs alongside W8A8 dynamic). Scales are static, from calibration with w8a8_dynamic's
 * act_method (the one place that recipe calibrates activations): symmetric int8 per head h
 * (axis 1 of [batch, heads, tokens, head_dim]), s_h = max|x_h| / 127 with 'minmax', the HFMG
 * clip with 'histogram', per head whichever of the two quantizes its histogram with less
 * error with 'mix'; tensors of
 * another rank get one scale. K is quantized before its transpose, so each head keeps its own
 * scale. The attention MatMuls themselves are left to read the dequantized Q, K, V (the
 * probabilities P stay float, as in FA3).
 */
import { DataType } from '../onnx/dtype';
import { QuantbookError, invalidArgument } from '../errors';
import { CalibrateOptions, CalibrationResult, calibrate as calibrateInOneSession } from '../calibration/calibrator';
import { calibrateHeldModel, forEachExposed } from '../calibration/by-blocks';
import { CalibrationSource, batchesFrom } from '../calibration/data';
import { Model } from '../onnx/model';
import type { NodeProto } from '../onnx/proto';
import { Runner } from '../runtime/runner';
import { insertQdqPairs } from './qdq';
import { AnyObserver, Observer, PerChannelObserver, QParams, QuantSpec, histogramQdqError, qparamsFromRange } from '../observers';

/** where the probe and calibration runs go (a Device's executionProviders; default cpu) */
type ExecutionProviders = CalibrateOptions['executionProviders'];

export const FA3_ACT_METHODS = ['minmax', 'histogram', 'mix'] as const;
export type Fa3ActMethod = (typeof FA3_ACT_METHODS)[number];

export interface AttentionSite {
  softmax: string;
  /** MatMul(Q, Kᵀ) and MatMul(P, V) node names */
  scores: string;
  context: string;
  q: string;
  /** K before its transpose (the transposed tensor when no Transpose precedes the MatMul) */
  k: string;
  v: string;
}

// elementwise scaling/masking, and the Flatten/Reshape exporters wrap an opset < 13 Softmax in
const PASS_THROUGH = new Set(['Mul', 'Div', 'Add', 'Where', 'Cast', 'Flatten', 'Reshape']);
const RESHAPES = new Set(['Reshape', 'Flatten', 'Cast']);

/** Finds every MatMul → (Mul|Div|Add|Where|Cast|Flatten|Reshape)* → Softmax → (Reshape)* → MatMul attention pattern. */
export function findAttention(model: Model): AttentionSite[] {
  const g = model.graph;
  const sites: AttentionSite[] = [];
  for (const sm of g.nodes.filter((n) => n.op_type === 'Softmax')) {
    // walk up through the elementwise scaling/masking to the scores MatMul
    let t = sm.input[0];
    let scores: NodeProto | undefined;
    for (let hops = 0; hops < 4; hops++) {
      const p = g.producer(t);
      if (!p) break;
      if (p.op_type === 'MatMul') { scores = p; break; }
      if (!PASS_THROUGH.has(p.op_type ?? '')) break;
      t = p.input.find((i) => i && !g.isConstant(i)) ?? '';
    }
    let p = sm.output[0];
    let readers = g.consumers(p);
    for (let hops = 0; hops < 3 && readers.length === 1 && RESHAPES.has(readers[0].op_type ?? ''); hops++) {
      p = readers[0].output[0];
      readers = g.consumers(p);
    }
    const context = readers.length === 1 && readers[0].op_type === 'MatMul' && readers[0].input[0] === p ? readers[0] : undefined;
    if (!scores || !context) continue;
    const [q, kt] = scores.input;
    const v = context.input[1];
    if ([q, kt, v].some((x) => !x || g.isConstant(x))) continue;
    const tp = g.producer(kt);
    const k = tp?.op_type === 'Transpose' && g.consumers(kt).length === 1 ? tp.input[0] : kt;
    sites.push({ softmax: sm.name ?? '', scores: scores.name ?? '', context: context.name ?? '', q, k, v });
  }
  return sites;
}

/** Ranks of the named tensors, from one run on the first batch. */
async function tensorRanks(model: Model, tensors: string[], data: CalibrationSource, executionProviders: ExecutionProviders): Promise<Map<string, number>> {
  if (model.heldByReference()) {
    // a model larger than memory runs block by block (its node names permitting), on the first batch only
    const first = await batchesFrom(data, model.graph.inputNames).next();
    if (first.done) throw new QuantbookError('INVALID_ARGUMENT', 'fa3: the calibration data holds no batches');
    const ranks = new Map<string, number>();
    await forEachExposed(model, [first.value], tensors, { executionProviders, byBlocks: true }, (exposed) => {
      for (const [t, v] of Object.entries(exposed)) if (!ranks.has(t)) ranks.set(t, v.dims.length);
    });
    return ranks;
  }
  const runner = await Runner.create(model, { expose: tensors, executionProviders });
  try {
    const first = await batchesFrom(data, runner.inputNames).next();
    if (first.done) throw new QuantbookError('INVALID_ARGUMENT', 'fa3: the calibration data holds no batches');
    const out = await runner.run(first.value);
    return new Map(tensors.map((t) => [t, out.exposed[t].dims.length]));
  } finally {
    await runner.dispose();
  }
}

export interface Fa3Result {
  sites: AttentionSite[];
  /** per-head statistics (channel = head) of every Q, K, V tensor; saved as Arrow with the result */
  calibration: CalibrationResult;
  qparams: Map<string, QParams>;
}

/**
 * Calibrates Q, K, V of every attention site on `float` and inserts their per-head QDQ into
 * `quantized` (a copy of `float` with the same tensor names, e.g. the W8A8-dynamic model).
 * The calibration data is read twice (a probe for shapes, then calibration): pass an array or a folder.
 */
export async function applyFa3(float: Model, quantized: Model, data: CalibrationSource, sites = findAttention(float), actMethod: Fa3ActMethod = 'minmax', executionProviders?: ExecutionProviders): Promise<Fa3Result> {
  if (!sites.length) throw new QuantbookError('INVALID_ARGUMENT', 'fa3: no attention (MatMul → Softmax → MatMul) found in the model');
  if (!FA3_ACT_METHODS.includes(actMethod)) throw invalidArgument('fa3 act_method', actMethod, FA3_ACT_METHODS.map((m) => `'${m}'`).join(', '));
  const observer = actMethod === 'minmax' ? 'minmax' : 'histogram';
  const tensors = [...new Set(sites.flatMap((s) => [s.q, s.k, s.v]))];
  const ranks = await tensorRanks(float, tensors, data, executionProviders);
  const perHead = tensors.filter((t) => ranks.get(t) === 4);
  const perTensor = tensors.filter((t) => ranks.get(t) !== 4);
  const spec = { signed: true, symmetric: true, narrowRange: false, numBits: 8 };
  const parts: CalibrationResult[] = [];
  const calibrate = float.heldByReference() ? calibrateHeldModel : calibrateInOneSession;
  if (perHead.length) parts.push(await calibrate(float, data, { tensors: perHead, observer, spec: { ...spec, perChannel: true, channelAxis: 1 }, executionProviders }));
  if (perTensor.length) parts.push(await calibrate(float, data, { tensors: perTensor, observer, spec, executionProviders }));
  const qparams = new Map<string, QParams>();
  for (const p of parts) for (const t of p.targets) qparams.set(t.tensor, actMethod === 'mix' ? mixedQParams(p.observers.get(t.tensor)!) : p.qparams(t.tensor));
  insertQdqPairs(quantized.graph, tensors.map((t) => [t, qparams.get(t)!]));
  // the rank is what per-head parameters broadcast against (the fake-quant model needs it)
  for (const t of perHead) quantized.graph.setValueType(t, { elemType: DataType.FLOAT, shape: [null, null, null, null] });
  const calibration = parts.length === 1 ? parts[0] : mergeCalibrations(parts);
  return { sites, calibration, qparams };
}

/** 'mix': per head, the min-max range or the histogram's clip, whichever quantizes that head's histogram with less error. */
function mixedQParams(o: AnyObserver): QParams {
  const heads: readonly Observer[] = o instanceof PerChannelObserver ? o.channels : [o];
  const one: QuantSpec = { ...o.spec, perChannel: false };
  const ranges = heads.map((h) => {
    const error = (r: [number, number]) => histogramQdqError(h.histogram!, qparamsFromRange([r[0]], [r[1]], one));
    return error(h.observedRange) <= error(h.clipRange()) ? h.observedRange : h.clipRange();
  });
  return qparamsFromRange(ranges.map((r) => r[0]), ranges.map((r) => r[1]), o.spec);
}

function mergeCalibrations(parts: CalibrationResult[]): CalibrationResult {
  const observers = new Map(parts.flatMap((p) => [...p.observers]));
  return new CalibrationResult(parts.flatMap((p) => p.targets), observers, parts[0].spec, parts[0].metadata, parts[0].timing);
}
