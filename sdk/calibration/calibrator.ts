/**
 * calibrate(model, data, options): runs the model over calibration batches and feeds each
 * batch of each calibrated tensor to its observer: as a summary computed inside the ORT graph
 * (batch-summary.ts; the default) or as the activation itself (exposed as an extra output).
 * Memory stays flat however many batches there are: only observer summaries outlive a batch.
 */
import * as os from 'os';
import { createXXHash128 } from 'hash-wasm';
import { QuantbookError, invalidArgument } from '../errors';
import { BackendName, describeBackend, initBackend } from '../kernels/backend';
import { ReductionImpl, chooseReductions, reductionChoice, useReductions } from '../kernels/reductions';
import { chooseCodeCounter, codeCounterChoice, useCodeCounter } from '../kernels/code-counts';
import { Model } from '../onnx/model';
import { QUANTIZABLE_OP_TYPES } from '../quantize/layers';
import {
  AnyObserver, OBSERVER_KINDS, Observer, ObserverKind, ObserverOptions, PerChannelObserver, QParams, QuantSpec,
  createObserver, observe, resolveSpec, restoreObserver,
} from '../observers';
import { Runner } from '../runtime/runner';
import { hoistTensors } from '../onnx/scopes';
import { StatRow, readStats, writeStats } from '../stats/calibration-stats';
import { CalibrationSource, batchesFrom, hashFeeds } from './data';
import { SummaryPlan, summaryPlan } from './batch-summary';

export interface CalibrationTarget {
  tensor: string;
  /** the quantizable layers that read it */
  layers: Array<{ name: string; opType: string }>;
}

export interface CalibrationProgress { batch: number; elapsedMs: number; tensors: number }

export interface CalibrateOptions {
  /** tensors to observe (default: the activation inputs of every quantizable layer) */
  tensors?: string[];
  /** observer for every tensor, or a choice per tensor (default 'minmax') */
  observer?: ObserverKind | ((target: CalibrationTarget) => ObserverKind);
  spec?: Partial<QuantSpec>;
  observerOptions?: ObserverOptions;
  /** stop after this many batches */
  maxBatches?: number;
  onProgress?: (p: CalibrationProgress) => void;
  signal?: AbortSignal;
  /** tfjs backend for the kernels (default: best available) */
  backend?: BackendName;
  /**
   * Kernels: 'auto' times the typed-array loops against tfjs (reductions) and against
   * WebAssembly (counting histogram codes) once per process and keeps the faster per kernel;
   * 'loop' uses the loops throughout, 'tfjs' the tfjs reductions.
   */
  kernels?: 'auto' | ReductionImpl;
  /** ORT execution providers for the instrumented runs (a Device's executionProviders; default cpu) */
  executionProviders?: import('onnxruntime-node').InferenceSession.SessionOptions['executionProviders'];
  /** drop named tensors that turn out not to be float32 (e.g. shape arithmetic) instead of failing */
  skipNonFloat?: boolean;
  /**
   * How each batch's statistics leave ONNX Runtime: 'in-graph' summaries (min/max/moments, and
   * an int16 fine histogram for the histogram observers, computed by extra graph nodes: see
   * batch-summary.ts) or 'exposed' activations (every value copied out as float32, observed in
   * JS). 'auto' (default) uses in-graph summaries on the CPU provider (per channel: minmax and
   * sigma; histograms: up to 8 bits, per tensor), and falls back to exposure where ORT cannot
   * build the summary graph.
   */
  collect?: CollectMode;
  /**
   * In-graph histograms count about this many values per tensor and batch instead of every
   * value: every k-th value of the flattened tensor (k odd, computed in the graph from the
   * tensor's size), each counted value standing for count / sampled values; smaller tensors are
   * counted whole. Min, max, count, mean and std stay exact, and so does the range the histogram
   * spans. It makes the histogram observers 2-3x cheaper on PP-OCRv4 (see the bench), but their
   * ranges then depend on which values were sampled: range searches that step through the sparse
   * tails (HFMG) move, and rec's W8A8 text agreement with fp32 scattered between 88% and 99% over
   * sample sizes of 4k-128k, against 98.3% counting every value (96.7% from the exact values).
   * 0 (default) counts every value. 'exposed' collection always sees every value.
   */
  histogramSample?: number;
}

export const DEFAULT_HISTOGRAM_SAMPLE = 0;

/** The algorithm named in front of the calibration data's hash (stats metadata `data_hash`, reports). */
export const DATA_HASH = 'xxh3-128';

/** The calibration data's hash from stats metadata, algorithm first ("xxh3-128:…"; files before it held `data_sha256`). */
export function dataHashOf(metadata: Record<string, string>): string | undefined {
  return metadata.data_hash ?? (metadata.data_sha256 ? `sha256:${metadata.data_sha256}` : undefined);
}

export const COLLECT_MODES = ['auto', 'in-graph', 'exposed'] as const;
export type CollectMode = (typeof COLLECT_MODES)[number];

let kernelsChosen = false;

/** Activation inputs of the quantizable layers: the tensors static activation quantization needs. */
export function defaultTargets(model: Model): CalibrationTarget[] {
  const g = model.graph;
  const byTensor = new Map<string, CalibrationTarget>();
  for (const n of g.nodes) {
    if (!(QUANTIZABLE_OP_TYPES as readonly string[]).includes(n.op_type!)) continue;
    const dataInputs = n.op_type === 'MatMul' ? n.input.slice(0, 2) : n.input.slice(0, 1);
    for (const t of dataInputs) {
      if (!t || g.isConstant(t)) continue;
      const target = byTensor.get(t) ?? { tensor: t, layers: [] };
      target.layers.push({ name: n.name ?? '', opType: n.op_type! });
      byTensor.set(t, target);
    }
  }
  return [...byTensor.values()];
}

/** Where calibration time went: building the instrumented session, then the batch loop. */
export interface CalibrationTiming { sessionMs: number; batchesMs: number; batches: number }

export class CalibrationResult {
  constructor(
    readonly targets: CalibrationTarget[],
    readonly observers: Map<string, AnyObserver>,
    readonly spec: QuantSpec,
    readonly metadata: Record<string, string>,
    readonly timing?: CalibrationTiming,
  ) {}

  qparams(tensor: string): QParams {
    const o = this.observers.get(tensor);
    if (!o) throw new QuantbookError('UNKNOWN_TENSOR', `no calibration statistics for tensor "${tensor}"`);
    return o.qparams();
  }

  /** One row per (layer, tensor, channel). */
  rows(): StatRow[] {
    const rows: StatRow[] = [];
    for (const t of this.targets) {
      const o = this.observers.get(t.tensor)!;
      const q = o.qparams();
      const channelObservers: Array<[number, Observer]> = o instanceof PerChannelObserver ? o.channels.map((c, i) => [i, c]) : [[-1, o]];
      for (const layer of t.layers) {
        for (const [channel, obs] of channelObservers) {
          const s = obs.state();
          const [clipMin, clipMax] = obs.clipRange();
          const c = Math.max(channel, 0);
          rows.push({
            layer: layer.name, tensor: t.tensor, opType: layer.opType, observer: obs.kind, channel,
            min: s.min, max: s.max, mean: obs.mean, std: obs.std, count: s.count, sum: s.sum, sumSq: s.sumSq, batches: s.batches,
            histLo: s.histogram?.lo ?? null, histHi: s.histogram?.hi ?? null, histogram: s.histogram?.counts ?? null,
            clipMin, clipMax, scale: q.scale[c], zeroPoint: q.zeroPoint[c], qmin: q.qmin, qmax: q.qmax,
            numBits: q.numBits, signed: q.signed, symmetric: this.spec.symmetric,
          });
        }
      }
    }
    return rows;
  }

  /** One row per (tensor, channel): rows() repeats a tensor for every layer that reads it. */
  tensorRows(): StatRow[] {
    const seen = new Set<string>();
    return this.rows().filter((r) => {
      const key = `${r.tensor}\u0000${r.channel}`;
      return !seen.has(key) && !!seen.add(key);
    });
  }

  save(path: string): void {
    writeStats(path, this.rows(), this.metadata);
  }

  /**
   * Rebuilds a result from a stats file without running the model. `observer` re-chooses the
   * method (histogram-based methods need a file written by a histogram-family observer).
   */
  static load(path: string, options: { observer?: ObserverKind; observerOptions?: ObserverOptions } = {}): CalibrationResult {
    const { rows, metadata } = readStats(path);
    const targets = new Map<string, CalibrationTarget>();
    const perTensor = new Map<string, StatRow[]>();
    for (const r of rows) {
      const t = targets.get(r.tensor) ?? { tensor: r.tensor, layers: [] };
      if (!t.layers.some((l) => l.name === r.layer)) t.layers.push({ name: r.layer, opType: r.opType });
      targets.set(r.tensor, t);
      const list = perTensor.get(r.tensor) ?? [];
      if (!list.some((x) => x.channel === r.channel)) list.push(r);
      perTensor.set(r.tensor, list);
    }
    const first = rows[0];
    const spec = resolveSpec({ numBits: first?.numBits, signed: first?.signed, symmetric: first?.symmetric, perChannel: (first?.channel ?? -1) >= 0 });
    const observers = new Map<string, AnyObserver>();
    for (const [tensor, list] of perTensor) {
      const kind = options.observer ?? list[0].observer;
      if (kind !== 'minmax' && kind !== 'sigma' && !list[0].histogram) {
        throw new QuantbookError('INVALID_ARGUMENT', `observer "${kind}" needs histograms, but ${path} was written by "${list[0].observer}", which keeps none`);
      }
      const restored = list.sort((a, b) => a.channel - b.channel).map((r) => restoreObserver(kind, spec, options.observerOptions ?? {}, {
        kind, min: r.min, max: r.max, count: r.count, sum: r.sum, sumSq: r.sumSq, batches: r.batches,
        ...(r.observer === 'minmax' && kind === 'minmax' ? { avgMin: r.clipMin, avgMax: r.clipMax } : {}),
        ...(r.histogram ? { histogram: { lo: r.histLo!, hi: r.histHi!, counts: r.histogram } } : {}),
      }));
      if (list[0].channel >= 0) {
        observers.set(tensor, PerChannelObserver.fromChannels(kind, spec, options.observerOptions ?? {}, restored));
      } else {
        observers.set(tensor, restored[0]);
      }
    }
    return new CalibrationResult([...targets.values()], observers, spec, metadata);
  }
}

/**
 * The ORT session calibration runs: the model with in-graph batch summaries where `collect`
 * allows them, else with the calibrated tensors exposed as outputs. `collection` says which
 * (it goes into the stats file's metadata).
 */
async function instrumentedRunner(
  model: Model, targets: CalibrationTarget[], observers: Map<string, AnyObserver>, spec: QuantSpec, collect: CollectMode,
  executionProviders: CalibrateOptions['executionProviders'], histogramSample: number,
): Promise<{ runner: Runner; plan?: SummaryPlan; collection: string }> {
  const cpuOnly = (executionProviders ?? ['cpu']).every((p) => (typeof p === 'string' ? p : p.name) === 'cpu');
  const histograms = targets.some((t) => observers.get(t.tensor)!.needsHistogram);
  const why = spec.perChannel && histograms ? 'per-channel histograms need the values'
    : spec.numBits > 8 && histograms ? `the int16 fine histogram is too coarse for ${spec.numBits}-bit ranges`
      : !cpuOnly ? 'summaries use ORT CPU contrib operators' : '';
  if (collect === 'in-graph' && why) throw new QuantbookError('UNSUPPORTED', `collect 'in-graph': ${why}; use 'exposed' or 'auto'`);
  if (collect !== 'exposed' && !why) {
    try {
      const requests = targets.map((t) => ({
        tensor: t.tensor, histogram: observers.get(t.tensor)!.needsHistogram, ...(spec.perChannel ? { channelAxis: spec.channelAxis } : {}),
      }));
      const plan = summaryPlan(model, requests, { histogramSample });
      const runner = await Runner.create(plan.model, { executionProviders });
      return { runner, plan, collection: 'in-graph' };
    } catch (e) {
      if (collect === 'in-graph') throw e;
      const expose = await Runner.create(model, { expose: targets.map((t) => t.tensor), executionProviders });
      return { runner: expose, collection: `exposed (in-graph summaries failed: ${(e as Error).message.split('\n')[0]})` };
    }
  }
  const runner = await Runner.create(model, { expose: targets.map((t) => t.tensor), executionProviders });
  return { runner, collection: collect === 'exposed' ? 'exposed' : `exposed (${why})` };
}

export async function calibrate(model: Model, data: CalibrationSource, options: CalibrateOptions = {}): Promise<CalibrationResult> {
  const backend = await initBackend(options.backend);
  const kernels = options.kernels ?? 'auto';
  if (kernels === 'auto') {
    if (!kernelsChosen) {
      chooseReductions(1 << 18);
      chooseCodeCounter(1 << 18);
    }
    kernelsChosen = true;
  } else if (kernels === 'loop' || kernels === 'tfjs') {
    useReductions(kernels);
    if (kernels === 'loop') useCodeCounter('loop');
    kernelsChosen = false;
  } else {
    throw invalidArgument('kernels', kernels, "'auto', 'loop' or 'tfjs'");
  }
  const spec = resolveSpec(options.spec);
  const all = defaultTargets(model);
  let targets = [...all];
  // tensors inside If/Loop/Scan bodies (scoped names, onnx/scopes) are observed through a copy
  // that carries them out to the main graph
  const inBodies = (options.tensors ?? []).filter((t) => typeof t === 'string' && !model.graph.hasTensor(t) && t.includes('/'));
  const hoisted = inBodies.length ? hoistTensors(model, inBodies) : undefined;
  const route = (t: string) => hoisted?.outputs.get(t) ?? t;
  if (options.tensors) {
    for (const t of options.tensors) if (!hoisted?.outputs.has(t)) model.graph.requireTensor(t, 'calibration tensor');
    targets = options.tensors.map((t) => all.find((x) => x.tensor === t) ?? { tensor: t, layers: model.graph.consumers(t).map((n) => ({ name: n.name ?? '', opType: n.op_type ?? '' })) });
  }
  if (targets.length === 0) throw new QuantbookError('INVALID_ARGUMENT', 'calibration: the model has no quantizable layers with activation inputs, and no tensors were named');
  if (options.maxBatches !== undefined && !(Number.isInteger(options.maxBatches) && options.maxBatches > 0)) throw invalidArgument('maxBatches', options.maxBatches, 'a positive integer');
  const pick = options.observer ?? 'minmax';
  const observers = new Map<string, AnyObserver>();
  for (const t of targets) {
    const kind = typeof pick === 'function' ? pick(t) : pick;
    if (!OBSERVER_KINDS.includes(kind)) throw invalidArgument('observer', kind, `one of ${OBSERVER_KINDS.join(', ')}`);
    observers.set(t.tensor, createObserver(kind, spec, options.observerOptions));
  }

  const collect = options.collect ?? 'auto';
  if (!COLLECT_MODES.includes(collect)) throw invalidArgument('collect', collect, `one of ${COLLECT_MODES.map((m) => `'${m}'`).join(', ')}`);
  const histogramSample = options.histogramSample ?? DEFAULT_HISTOGRAM_SAMPLE;
  if (!(Number.isInteger(histogramSample) && histogramSample >= 0)) throw invalidArgument('histogramSample', histogramSample, 'a whole number of values per tensor and batch (0: every value)');
  const sessionStart = Date.now();
  if (hoisted && collect === 'in-graph') throw new QuantbookError('UNSUPPORTED', `collect 'in-graph': tensors inside If/Loop/Scan bodies (${inBodies.slice(0, 3).join(', ')}) are observed as exposed values; use 'exposed' or 'auto'`);
  const { runner, plan, collection } = hoisted
    ? { runner: await Runner.create(hoisted.model, { expose: targets.map((t) => route(t.tensor)), executionProviders: options.executionProviders }), plan: undefined, collection: 'exposed (tensors inside If/Loop/Scan bodies)' }
    : await instrumentedRunner(model, targets, observers, spec, collect, options.executionProviders, histogramSample);
  const started = Date.now();
  const source = batchesFrom(data, runner.inputNames)[Symbol.asyncIterator]();
  // Batch k+1 is requested before batch k is observed; at most two batches are alive at once,
  // whatever the number of batches. onnxruntime-node 1.30 runs a session synchronously on the JS
  // thread (inside a setImmediate), so this does not make ORT and the observers overlap; running
  // ORT on a worker thread was measured too and gained nothing on 2 cores (both sides CPU-bound).
  // XXH3-128 and not sha256: a fingerprint of the data, not a signature, and sha256 cost 7-8% of
  // PP-OCRv4 det's inference time per batch (2.7 ms for 4.9 MB) against ~1 ms
  const dataHash = await createXXHash128();
  const runNext = async () => {
    const next = await source.next();
    if (next.done) return undefined;
    const run = runner.run(next.value);
    hashFeeds(dataHash, next.value);
    return run;
  };
  const drop = (t: CalibrationTarget, type: string) => {
    if (!options.skipNonFloat) throw new QuantbookError('INVALID_ARGUMENT', `calibration tensor "${t.tensor}" holds ${type} values; only float32 activations can be calibrated`);
    targets.splice(targets.indexOf(t), 1);
    observers.delete(t.tensor);
  };
  let batch = 0;
  let pending = runNext();
  try {
    for (;;) {
      const result = await pending;
      if (!result) break;
      const more = !options.maxBatches || batch + 1 < options.maxBatches;
      if (options.signal?.aborted) throw new QuantbookError('CANCELLED', `calibration cancelled after ${batch} batch${batch === 1 ? '' : 'es'}`);
      pending = more ? runNext() : Promise.resolve(undefined);
      for (const t of [...targets]) {
        const observer = observers.get(t.tensor)!;
        if (plan) {
          const summary = plan.read(result.outputs, t.tensor);
          if ('nonFloat' in summary) drop(t, summary.nonFloat);
          else if ('channels' in summary) (observer as PerChannelObserver).observeSummaries(summary.channels);
          else (observer as Observer).observeSummary(summary);
          continue;
        }
        const v = result.exposed[route(t.tensor)];
        // an If branch that did not run gives an empty 1-D placeholder, which a per-channel
        // observer would reject as the wrong shape: the tensor was not computed, so skip it
        if (v.size === 0) continue;
        if (v.type !== 'float32') drop(t, v.type);
        else observe(observer, v.data as Float32Array, v.dims);
      }
      batch++;
      options.onProgress?.({ batch, elapsedMs: Date.now() - started, tensors: targets.length });
    }
  } finally {
    await pending.catch(() => undefined); // never leave a run in flight behind an error
    await runner.dispose();
  }
  if (batch === 0) throw new QuantbookError('INVALID_ARGUMENT', 'calibration data held no batches');
  const metadata = {
    quantbook: require('../../../package.json').version as string,
    backend: describeBackend(backend),
    kernels: JSON.stringify({ ...reductionChoice(), countCodes: codeCounterChoice() }),
    batches: String(batch),
    collection,
    // which values the histograms count (in-graph collection may count a sample of values; exposed sees all)
    histogram_values: plan ? plan.sampling : 'every value',
    // XXH3-128 over every batch's input names, types, shapes and bytes, in order: same data, same hash
    data_hash: `${DATA_HASH}:${dataHash.digest('hex')}`,
    host: `${os.cpus().length}x ${os.cpus()[0]?.model ?? 'cpu'}`,
  };
  const timing = { sessionMs: started - sessionStart, batchesMs: Date.now() - started, batches: batch };
  return new CalibrationResult(targets, observers, spec, metadata, timing);
}
