/**
 * Outlier suppression by per-input-channel scale migration (the SmoothQuant family; msModelSlim's
 * m1–m6). For an activation X read by MatMul/Gemm layers with constant weights W,
 *   X·W = (X·diag(1/s)) · (diag(s)·W)
 * so dividing X's channel j by s_j and multiplying W's row j by s_j keeps the function while
 * moving X's outlier channels into the weights, which quantize per output channel and absorb them.
 * When the smoothed layers are X's only readers, 1/s is folded into the norm that produces X, as
 * msModelSlim folds it: a LayerNormalization's scale and bias, or the constant factor of a Mul
 * (an RMSNorm written out, x / rms(x) · γ: γ/s). Otherwise an explicit Mul(X, 1/s) is inserted in
 * front of those layers only.
 *
 * Scales per method (X and W statistics per input channel j), all of the form
 * s_j = stat(X_j)^α / max|W_j|^β:
 *   m1 (SmoothQuant)   s_j = max|X_j|^α / max|W_j|^(1−α), α given (default 0.5)
 *   m2 (Outlier Suppression+) first a per-channel shift z_j = (max X_j + min X_j)/2 centres each
 *                      channel (X − z; z·W goes into the layers' bias, exactly), then SmoothQuant
 *                      scales on the centred ranges, s_j = ((max − min)/2)^α / max|W_j|^(1−α), α
 *                      searched on 0, 0.05, …, 1
 *   m3 (AWQ-style)     s_j = mean|X_j|^α, α searched on 0, 0.05, …, 1
 *   m4 (iterative)     start from m1 (α = 0.5), then refine channel by channel: each round tries
 *                      s_j × {½, 1/√2, √2, 2} on the 16 channels of largest max|X_j| (where the
 *                      outliers are) and keeps what lowers the error on the search sample, until a
 *                      round changes nothing (at most 3 rounds)
 *   m5 (CBQ's coarse-to-fine outlier preprocessing) only the outlier channels move: coarse, the
 *                      channels whose max|X_j| exceeds Q3 + 1.5·IQR of all channels' maxima; fine,
 *                      the split of those candidates (sorted) that minimises the summed variance of
 *                      the two sides keeps the upper side; each kept channel gets s_j = max|X_j| / T,
 *                      T the largest non-outlier maximum, others s_j = 1. (CBQ's cross-block
 *                      reconstruction and LoRA rounding are weight-rounding steps, not this.)
 *   m6 (Flex Smooth)   s_j = max|X_j|^α / max|W_j|^β; α, β given, or searched when either is missing:
 *                      a coarse grid (0, 0.1, …, 1)² then a fine one (±0.04 by 0.02) around the best
 * The search minimises the int8 output error ‖X·W − Q(X/s)·Q(s·W)‖² of the group's layers on a
 * sample of calibration rows and output columns (uint8 per-tensor X, int8 per-output-channel W,
 * as W8A8 quantizes); see searchSample for why a sample suffices.
 */
import { QuantbookError, invalidArgument } from '../errors';
import { CalibrationSource } from '../calibration/data';
import { DataType } from '../onnx/dtype';
import { Model } from '../onnx/model';
import { NodeProto, newTensor } from '../onnx/proto';
import { attributeValue, renameReads } from '../onnx/graph';
import { Graph } from '../onnx/graph';
import { TensorSpill } from '../onnx/spill';
import { forEachExposed } from '../calibration/by-blocks';
import { spillFor } from '../quantize/spill-for';
import { CandidateErrors } from './smooth-search';
import { seededRandom } from '../util/seeded-random';

export const SMOOTH_METHODS = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'] as const;
export type SmoothMethod = (typeof SMOOTH_METHODS)[number];

export interface SmoothOptions {
  method: SmoothMethod;
  alpha?: number;
  beta?: number;
  /** calibration rows kept per group for the search (default 512) */
  sampleRows?: number;
  /** layers (node names) to leave alone */
  skip?: string[];
  /** where the statistics runs and the candidate scoring run (a Device's executionProviders; default cpu) */
  executionProviders?: import('onnxruntime-node').InferenceSession.SessionOptions['executionProviders'];
}

/** One activation and the layers reading it that share its scales. */
export interface SmoothGroup {
  input: string;
  layers: string[];
  /**
   * where 1/s went: the LayerNormalization folded into; the Mul whose constant factor took it
   * ('Scale', e.g. an RMSNorm's weight); or the Mul inserted ('Mul')
   */
  absorbedBy: { kind: 'LayerNormalization' | 'Scale' | 'Mul'; node: string };
  alpha: number;
  beta?: number;
  /** output error of the group's int8 layers on the sample, before and after (sum of squares) */
  errorBefore: number;
  errorAfter: number;
  /** per input channel: max|X_j| before and after smoothing */
  channelMaxBefore: Float32Array;
  channelMaxAfter: Float32Array;
  scales: Float32Array;
}

interface Candidate {
  input: string;
  nodes: NodeProto[];
  /** each layer's weight as [K, N] row-major (Gemm transB transposed), K = channels of X; read when asked (a model held by reference reads one group at a time) */
  readWeights(): Float32Array[];
  n: number[];
}

/** Activations that feed MatMul/Gemm layers with constant 2-D weights (the smoothable edges). */
export function smoothCandidates(model: Model, skip: string[] = []): Candidate[] {
  const g = model.graph;
  const byInput = new Map<string, { input: string; nodes: NodeProto[]; k: number; readers: Array<() => Float32Array>; n: number[] }>();
  for (const node of g.nodes) {
    if (node.op_type !== 'MatMul' && node.op_type !== 'Gemm') continue;
    if (skip.includes(node.name ?? '')) continue;
    const [x, w] = node.input;
    if (!x || g.isConstant(x) || !w || !g.isConstant(w)) continue;
    // type and shape only: the values are read when the group is smoothed
    const wt = g.valueType(w);
    if (wt?.elemType !== DataType.FLOAT || wt.shape?.length !== 2 || !wt.shape.every((d) => typeof d === 'number')) continue;
    if (node.op_type === 'Gemm' && (attributeValue(node, 'transA') === 1)) continue;
    const transB = node.op_type === 'Gemm' && attributeValue(node, 'transB') === 1;
    const [k, n] = (transB ? [wt.shape[1], wt.shape[0]] : wt.shape) as number[];
    const c = byInput.get(x) ?? { input: x, nodes: [], k, readers: [], n: [] };
    if (c.k !== k) continue;
    c.nodes.push(node);
    c.readers.push(() => {
      const data = g.constantValue(w)!.data as Float32Array;
      return transB ? transpose(data, n, k) : data;
    });
    c.n.push(n);
    byInput.set(x, c);
  }
  // a weight read by two layers cannot take two different row scalings
  return [...byInput.values()]
    .filter((c) => c.nodes.every((n) => g.consumers(n.input[1]).length === 1))
    .map(({ input, nodes, readers, n }) => ({ input, nodes, n, readWeights: () => readers.map((r) => r()) }));
}

/** A held model's rewritten weight goes straight to the spill (no in-memory copy of its bytes); the initializer keeps its name. */
function spillWeight(g: Graph, name: string, dims: number[], data: Float32Array, spill: TensorSpill): void {
  const i = g.proto.initializer.findIndex((t) => t.name === name);
  g.proto.initializer[i] = spill.put(newTensor({ name, data_type: DataType.FLOAT, dims, raw_data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }));
  g.proto.value_info = g.proto.value_info.filter((v) => v.name !== name);
  g.invalidate();
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j];
  return out;
}

interface ActivationStats { lo: Float64Array; hi: Float64Array; sumAbs: Float64Array; rows: number; sample: Float32Array[] }

/**
 * Streams the calibration data: per-channel min, max and mean|X| (last axis), and a row sample.
 * `complete` gets the statistics of each set of tensors once every batch has passed them (each
 * block's, block by block); they are not kept after it returns.
 */
async function activationStats(model: Model, tensors: string[], data: CalibrationSource, sampleRows: number, executionProviders: SmoothOptions['executionProviders'], byBlocks: boolean, complete: (stats: Map<string, ActivationStats>) => Promise<void>): Promise<void> {
  const stats = new Map<string, ActivationStats>();
  const samplers = new Map<string, () => number>();
  // a model held by reference runs block by block (one block's weights at a time); each tensor
  // still sees the batches in order, so the statistics and the row sample are the same
  await forEachExposed(model, data, tensors, { executionProviders, byBlocks }, (exposed) => {
      for (const t of Object.keys(exposed)) {
        const v = exposed[t];
        if (v.type !== 'float32') throw new QuantbookError('INVALID_ARGUMENT', `smoothing: activation "${t}" holds ${v.type}; only float32 can be smoothed`);
        const x = v.data as Float32Array;
        const k = v.dims[v.dims.length - 1];
        const s = stats.get(t) ?? { lo: new Float64Array(k).fill(Infinity), hi: new Float64Array(k).fill(-Infinity), sumAbs: new Float64Array(k), rows: 0, sample: [] as Float32Array[] };
        const rows = x.length / k;
        // a uniform sample of every batch's rows (reservoir sampling, seeded): flat memory whatever
        // the number of batches. A regular stride aligns with the data's own period (every 4th
        // row of a 14-row stride was always the blank top row of an MNIST image)
        const random = samplers.get(t) ?? samplers.set(t, seededRandom(0x5eed)).get(t)!;
        for (let r = 0; r < rows; r++) {
          for (let j = 0; j < k; j++) {
            const value = x[r * k + j];
            if (value < s.lo[j]) s.lo[j] = value;
            if (value > s.hi[j]) s.hi[j] = value;
            s.sumAbs[j] += Math.abs(value);
          }
          const seen = s.rows + r;
          if (seen < sampleRows) s.sample.push(x.slice(r * k, (r + 1) * k));
          else {
            const slot = Math.floor(random() * (seen + 1));
            if (slot < sampleRows) s.sample[slot] = x.slice(r * k, (r + 1) * k);
          }
        }
        s.rows += rows;
        stats.set(t, s);
      }
  }, async (visited) => {
    const done = new Map(visited.filter((t) => stats.has(t)).map((t) => [t, stats.get(t)!]));
    for (const t of visited) stats.delete(t);
    await complete(done);
  });
}

/** ‖X·W − Q(X/s)·Q(s·W)‖² summed over the group's layers (X: uint8 per tensor, W: int8 per column). */
export function smoothedError(sample: Float32Array, rows: number, k: number, weights: Float32Array[], ns: number[], s: ArrayLike<number>, reference: Float32Array[]): number {
  // X/s quantized per tensor, asymmetric uint8 (range includes 0)
  let lo = 0;
  let hi = 0;
  const xs = new Float32Array(sample.length);
  for (let i = 0; i < sample.length; i++) {
    const v = sample[i] / s[i % k];
    xs[i] = v;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const sx = (hi - lo) / 255 || 1;
  const zp = Math.round(-lo / sx);
  for (let i = 0; i < xs.length; i++) xs[i] = (Math.min(255, Math.max(0, Math.round(xs[i] / sx) + zp)) - zp) * sx;
  let err = 0;
  weights.forEach((w, li) => {
    const n = ns[li];
    // s·W quantized per output column, symmetric int8
    const wq = new Float32Array(w.length);
    for (let c = 0; c < n; c++) {
      let m = 0;
      for (let j = 0; j < k; j++) m = Math.max(m, Math.abs(w[j * n + c] * s[j]));
      const sw = m / 127 || 1;
      for (let j = 0; j < k; j++) wq[j * n + c] = Math.min(127, Math.max(-128, Math.round((w[j * n + c] * s[j]) / sw))) * sw;
    }
    const ref = reference[li];
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < n; c++) {
        let acc = 0;
        for (let j = 0; j < k; j++) acc += xs[r * k + j] * wq[j * n + c];
        const d = acc - ref[r * n + c];
        err += d * d;
      }
    }
  });
  return err;
}

function matmul(x: Float32Array, rows: number, k: number, w: Float32Array, n: number): Float32Array {
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) {
    const a = x[r * k + j];
    if (a === 0) continue;
    for (let c = 0; c < n; c++) out[r * n + c] += a * w[j * n + c];
  }
  return out;
}

const EPS = 1e-5;

/**
 * The search evaluates hundreds of candidate scalings. Its error is a sum over rows and output
 * columns, so an even subsample of both estimates it: at most SEARCH_ROWS rows and SEARCH_COLUMNS
 * output columns per layer (each column quantizes on its own, so dropping columns changes no
 * other column's error). The cost per candidate is then flat in the layer width and the data
 * size: the whole m6 search costs about as much as a calibration pass, not 40× as much.
 */
const SEARCH_ROWS = 128;
const SEARCH_COLUMNS = 128;

function evenly(n: number, most: number): number[] {
  if (n <= most) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: most }, (_, i) => Math.floor((i * n) / most));
}

/** The layers' sampled columns side by side ([K, N₁ + N₂ + …]). */
function joinColumns(search: ReturnType<typeof searchSample>, k: number): { w: Float32Array; n: number } {
  const n = search.n.reduce((a, b) => a + b, 0);
  const w = new Float32Array(k * n);
  let offset = 0;
  search.weights.forEach((wl, li) => {
    const nl = search.n[li];
    for (let j = 0; j < k; j++) w.set(wl.subarray(j * nl, (j + 1) * nl), j * n + offset);
    offset += nl;
  });
  return { w, n };
}

/** The rows and columns the search evaluates candidates on (the scorer computes X·W there itself; m4's JavaScript refinement computes it on demand). */
function searchSample(sample: Float32Array, rows: number, k: number, weights: Float32Array[], ns: number[]) {
  const rowIndex = evenly(rows, SEARCH_ROWS);
  const x = new Float32Array(rowIndex.length * k);
  rowIndex.forEach((r, i) => x.set(sample.subarray(r * k, (r + 1) * k), i * k));
  const columns = ns.map((n) => evenly(n, SEARCH_COLUMNS));
  const picked = weights.map((w, li) => {
    const n = ns[li];
    const cols = columns[li];
    const out = new Float32Array(k * cols.length);
    for (let j = 0; j < k; j++) cols.forEach((c, ci) => { out[j * cols.length + ci] = w[j * n + c]; });
    return out;
  });
  const n = columns.map((c) => c.length);
  return { x, rows: rowIndex.length, weights: picked, n, reference: () => picked.map((w, li) => matmul(x, rowIndex.length, k, w, n[li])) };
}

/** s_j = xStat_j^α / wMax_j^β, centred on 1. */
function migrationScales(xStat: ArrayLike<number>, wMax: Float64Array, alpha: number, beta: number): Float32Array {
  const k = xStat.length;
  const s = new Float32Array(k);
  for (let j = 0; j < k; j++) s[j] = Math.max(xStat[j], EPS) ** alpha / Math.max(wMax[j], EPS) ** beta;
  // keep the scales centred on 1 (geometric mean): the product X·W is unchanged either way,
  // and neither side drifts far from its original magnitude
  let logSum = 0;
  for (const v of s) logSum += Math.log(v);
  const g = Math.exp(logSum / k);
  for (let j = 0; j < k; j++) s[j] = Math.fround(s[j] / g);
  return s;
}

function checkUnit(name: string, v: number | undefined): void {
  if (v !== undefined && !(typeof v === 'number' && v >= 0 && v <= 1)) throw invalidArgument(name, v, 'a number in [0, 1]');
}

/**
 * Rewrites `model` in place (float in, float out, same function) and returns what was done per
 * group. `data` is calibration data for the activation statistics.
 */
export async function smoothModel(model: Model, data: CalibrationSource, options: SmoothOptions): Promise<SmoothGroup[]> {
  if (!SMOOTH_METHODS.includes(options.method)) throw invalidArgument('method', options.method, SMOOTH_METHODS.map((m) => `'${m}'`).join(', '));
  checkUnit('alpha', options.alpha);
  checkUnit('beta', options.beta);
  const g = model.graph;
  const candidates = smoothCandidates(model, options.skip);
  if (!candidates.length) return [];
  const sampleRows = options.sampleRows ?? 512;
  // a model held by reference (larger than memory): statistics block by block, each group's
  // weights read when it is smoothed and its scaled weights spilled (onnx/spill.ts)
  const spill = spillFor(model);
  const groups: SmoothGroup[] = [];
  // each group is smoothed as soon as its statistics are complete (block by block for a held
  // model: one block's row samples at a time). Smoothing leaves the float function as it was, and
  // later blocks run on activations cached before it, so the statistics are those of one pass
  await activationStats(model, candidates.map((c) => c.input), data, sampleRows, options.executionProviders, !!spill, async (done) => {
    for (const c of candidates) {
      const st = done.get(c.input);
      if (st) await smoothGroup(c, st);
    }
  });
  g.invalidate();
  return groups;

  async function smoothGroup(c: Candidate, st: ActivationStats): Promise<void> {
    const weights = c.readWeights();
    const k = st.lo.length;
    const rows = st.sample.length;
    const absMax = Float64Array.from(st.lo, (lo, j) => Math.max(-lo, st.hi[j]));
    const shift = options.method === 'm2' ? Float32Array.from(st.lo, (lo, j) => Math.fround((lo + st.hi[j]) / 2)) : undefined;
    // m2 works on the centred activation X − z (z·W is added back exactly through the bias)
    const sample = new Float32Array(rows * k);
    st.sample.forEach((row, r) => sample.set(row, r * k));
    if (shift) for (let i = 0; i < sample.length; i++) sample[i] -= shift[i % k];
    const xMax = shift ? Float64Array.from(st.lo, (lo, j) => (st.hi[j] - lo) / 2) : absMax;
    const xStat = options.method === 'm3' ? st.sumAbs.map((v) => v / Math.max(1, st.rows)) : xMax;
    const wMax = new Float64Array(k);
    weights.forEach((w, li) => {
      const n = c.n[li];
      for (let j = 0; j < k; j++) for (let col = 0; col < n; col++) wMax[j] = Math.max(wMax[j], Math.abs(w[j * n + col]));
    });
    const search = searchSample(sample, rows, k, weights, c.n);
    // candidates are scored in ONNX Runtime, a batch per run (smooth-search.ts)
    const joined = joinColumns(search, k);
    const scorer = await CandidateErrors.create(search.x, search.rows, k, joined.w, joined.n, options.executionProviders);
    let s: Float32Array;
    let alpha: number;
    let beta: number;
    let errorBefore: number;
    let errorAfter: number;
    try {
      ({ alpha, beta } = await chooseExponents(options, async (pairs) => scorer.errors(pairs.map(([a, b]) => migrationScales(xStat, wMax, a, b)))));
      s = options.method === 'm5' ? outlierChannelScales(absMax) : migrationScales(xStat, wMax, alpha, beta);
      // every reported error comes from the same reckoning (the scorer), so groups and methods compare
      [errorBefore, errorAfter] = await scorer.errors([new Float32Array(k).fill(1), s]);
      if (options.method === 'm4') {
        const outliers = Array.from(absMax.keys()).sort((a, b) => absMax[b] - absMax[a]).slice(0, 16);
        const reference = search.reference();
        const refined = refineChannels(s, outliers, (cand) => smoothedError(search.x, search.rows, k, search.weights, search.n, cand, reference));
        // the refinement reckons in JavaScript (float64): keep it only if the scorer, which gave errorAfter, agrees
        const [refinedError] = await scorer.errors([refined]);
        if (refinedError < errorAfter) [s, errorAfter] = [refined, refinedError];
      }
    } finally {
      await scorer.dispose();
    }
    if (shift) addShiftToBias(model, c, weights, shift);
    const absorbedBy = applyScales(model, c, s, shift, spill, weights);
    groups.push({
      input: c.input, layers: c.nodes.map((n) => n.name ?? ''), absorbedBy, alpha, ...(options.method === 'm6' ? { beta } : {}),
      errorBefore, errorAfter, scales: s,
      channelMaxBefore: Float32Array.from(absMax), channelMaxAfter: Float32Array.from(xMax, (v, j) => v / s[j]),
    });
  }
}

/** Candidate (α, β) pairs → their errors, in the order given. */
type PairErrors = (pairs: Array<[number, number]>) => Promise<number[]>;

async function chooseExponents(options: SmoothOptions, errors: PairErrors): Promise<{ alpha: number; beta: number }> {
  const best = async (pairs: Array<[number, number]>) => {
    const e = await errors(pairs);
    let i = 0;
    for (let j = 1; j < pairs.length; j++) if (e[j] < e[i]) i = j;
    return { alpha: pairs[i][0], beta: pairs[i][1], e: e[i] };
  };
  const grid = (from: number, to: number, step: number) => {
    const out: number[] = [];
    for (let v = from; v <= to + 1e-9; v += step) out.push(Math.min(1, Math.max(0, +v.toFixed(4))));
    return [...new Set(out)];
  };
  if (options.method === 'm5') return { alpha: 1, beta: 0 };
  if (options.method === 'm1' || options.method === 'm4') return { alpha: options.alpha ?? 0.5, beta: 1 - (options.alpha ?? 0.5) };
  if (options.method === 'm3' || options.method === 'm2') {
    // m3 has no weight term (β = 0); m2 is SmoothQuant on the centred ranges (β = 1 − α)
    const betaOf = (a: number) => (options.method === 'm3' ? 0 : 1 - a);
    return best(grid(0, 1, 0.05).map((a) => [a, betaOf(a)]));
  }
  if (options.alpha !== undefined && options.beta !== undefined) return { alpha: options.alpha, beta: options.beta };
  // m6 search: a 0.2 grid, then ±0.1 by 0.05 and ±0.04 by 0.02 around the best so far (86
  // candidates where one 0.1 grid and its ±0.04 took 146; a given α or β stays fixed)
  const search = (alphas: number[], betas: number[]) => best(alphas.flatMap((a) => betas.map((b): [number, number] => [a, b])));
  const fixedA = options.alpha !== undefined ? [options.alpha] : undefined;
  const fixedB = options.beta !== undefined ? [options.beta] : undefined;
  const around = (v: number, half: number, step: number) => grid(Math.max(0, v - half), Math.min(1, v + half), step);
  let found = await search(fixedA ?? grid(0, 1, 0.2), fixedB ?? grid(0, 1, 0.2));
  for (const [half, step] of [[0.1, 0.05], [0.04, 0.02]]) {
    const next = await search(fixedA ?? around(found.alpha, half, step), fixedB ?? around(found.beta, half, step));
    if (next.e <= found.e) found = next;
  }
  return found;
}

/** m5: scales that bring only the outlier channels (coarse IQR test, fine variance split) down to the rest. */
export function outlierChannelScales(channelMax: ArrayLike<number>): Float32Array {
  const k = channelMax.length;
  const sorted = Array.from(channelMax).sort((a, b) => a - b);
  const q = (p: number) => sorted[Math.min(k - 1, Math.floor(p * (k - 1)))];
  const coarse = q(0.75) + 1.5 * (q(0.75) - q(0.25));
  const candidates = sorted.filter((v) => v > coarse);
  let threshold = Infinity;
  if (candidates.length === 1) threshold = candidates[0];
  else if (candidates.length > 1) {
    // fine: the split point of the sorted candidates with the least within-side variance
    const variance = (v: number[]) => { const m = v.reduce((a, b) => a + b, 0) / v.length; return v.reduce((a, b) => a + (b - m) ** 2, 0); };
    let best = Infinity;
    for (let i = 0; i < candidates.length; i++) {
      const e = (i ? variance(candidates.slice(0, i)) : 0) + variance(candidates.slice(i));
      if (e < best) { best = e; threshold = candidates[i]; }
    }
  }
  const normal = Math.max(EPS, ...sorted.filter((v) => v < threshold));
  return Float32Array.from(channelMax, (v) => (v >= threshold ? Math.fround(v / normal) : 1));
}

/** m4's refinement: coordinate descent on the given channels' scales by factors of √2, while it helps. */
function refineChannels(start: Float32Array, channels: number[], error: (s: Float32Array) => number): Float32Array {
  const s = Float32Array.from(start);
  let best = error(s);
  for (let round = 0; round < 3; round++) {
    let changed = false;
    for (const j of channels) {
      const keep = s[j];
      for (const f of [0.5, Math.SQRT1_2, Math.SQRT2, 2]) {
        s[j] = Math.fround(keep * f);
        const e = error(s);
        if (e < best * (1 - 1e-6)) {
          best = e;
          changed = true;
          break;
        }
        s[j] = keep;
      }
    }
    if (!changed) break;
  }
  return s;
}

/** m2: each layer's output gains z·W (its bias grows by it), so reading X − z instead of X changes nothing. */
function addShiftToBias(model: Model, c: Candidate, weights: Float32Array[], z: Float32Array): void {
  const g = model.graph;
  const names = g.nameSource();
  c.nodes.forEach((node, li) => {
    const w = weights[li];
    const n = c.n[li];
    const k = z.length;
    const delta = new Float32Array(n);
    for (let j = 0; j < k; j++) for (let col = 0; col < n; col++) delta[col] += z[j] * w[j * n + col];
    const out = node.output[0];
    const readers = g.consumers(out);
    const add = readers.length === 1 && readers[0].op_type === 'Add' ? readers[0] : undefined;
    const biasName = node.op_type === 'Gemm' ? node.input[2] : add?.input.find((t) => t !== out && g.isConstant(t));
    const bias = biasName ? g.constantValue(biasName) : undefined;
    if (biasName && bias && bias.type === DataType.FLOAT && bias.data.length === n && g.consumers(biasName).length === 1) {
      g.replaceInitializer(biasName, { type: DataType.FLOAT, dims: bias.dims, data: Float32Array.from(bias.data as Float32Array, (b, i) => Math.fround(b + delta[i])) });
      return;
    }
    // no bias of its own to grow: a Gemm without C gets one, anything else an Add after it
    const name = names.fresh(`${node.name}_shift_bias`);
    g.addInitializer({ name, type: DataType.FLOAT, dims: [n], data: delta });
    if (node.op_type === 'Gemm' && !node.input[2]) node.input[2] = name;
    else g.insertNodeAfter(out, { opType: 'Add', extraInputs: [name], output: names.fresh(`${out}_shift_compensated`), name: names.fresh(`${node.name}_shift_compensation`) }, { rewireGraphOutputs: true });
  });
  g.invalidate();
}

/** W rows × s; X ÷ s (and − shift, for m2) folded into its LayerNormalization, or inserted as Add/Mul. */
function applyScales(model: Model, c: Candidate, s: Float32Array, shift?: Float32Array, spill?: TensorSpill, weights?: Float32Array[]): SmoothGroup['absorbedBy'] {
  const g = model.graph;
  for (const [li, node] of c.nodes.entries()) {
    const dims = g.valueType(node.input[1])!.shape as number[];
    const transB = node.op_type === 'Gemm' && attributeValue(node, 'transB') === 1;
    // the group's own copy of a [K, N] weight is scaled in place (it is not read again); a
    // transposed one (Gemm transB) is read anew. Either way a copy: constantValue never shares the model's bytes
    const data = !transB && weights ? weights[li] : g.constantValue(node.input[1])!.data as Float32Array;
    const [rows, cols] = dims;
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) data[i * cols + j] = Math.fround(data[i * cols + j] * s[transB ? j : i]);
    if (spill && g.proto.initializer.some((t) => t.name === node.input[1])) spillWeight(g, node.input[1], dims, data, spill);
    else g.replaceInitializer(node.input[1], { type: DataType.FLOAT, dims, data });
  }
  const producer = g.producer(c.input);
  const readers = g.consumers(c.input);
  const foldable = producer?.op_type === 'LayerNormalization'
    && readers.every((r) => c.nodes.includes(r))
    && !g.outputNames.includes(c.input)
    && [-1, (g.valueType(c.input)?.shape?.length ?? 0) - 1].includes(Number(attributeValue(producer, 'axis') ?? -1))
    && producer.input.slice(1).every((t) => t && g.isConstant(t) && g.consumers(t).length === 1);
  const [lnScale, lnBias] = producer?.input.slice(1) ?? [];
  if (foldable && (!shift || lnBias)) {
    // LayerNorm: y = n·γ + β → (y − z)/s = n·(γ/s) + (β − z)/s
    for (const t of [lnScale, lnBias].filter(Boolean)) {
      const v = Float32Array.from(g.constantValue(t)!.data as Float32Array);
      for (let j = 0; j < v.length; j++) v[j] = Math.fround((v[j] - (t === lnBias && shift ? shift[j] : 0)) / s[j]);
      g.replaceInitializer(t, { type: DataType.FLOAT, dims: [v.length], data: v });
    }
    return { kind: 'LayerNormalization', node: producer!.name ?? '' };
  }
  if (!shift && producer && readers.every((r) => c.nodes.includes(r)) && !g.outputNames.includes(c.input)) {
    const folded = foldIntoProducer(model, producer, s);
    if (folded) {
      g.invalidate();
      return folded;
    }
  }
  const names = g.nameSource();
  let source = c.input;
  if (shift) {
    const neg = names.fresh(`${c.input}_shift`);
    g.addInitializer({ name: neg, type: DataType.FLOAT, dims: [shift.length], data: Float32Array.from(shift, (v) => -v) });
    const add = g.insertNodeAfter(c.input, { opType: 'Add', extraInputs: [neg], output: names.fresh(`${c.input}_centred`), name: names.fresh(`${c.input}_centre`) });
    for (const r of readers) if (!c.nodes.includes(r)) renameReads(r, add.output[0], c.input);
    g.invalidate();
    source = add.output[0];
  }
  const inv = names.fresh(`${c.input}_smooth_inv_scale`);
  g.addInitializer({ name: inv, type: DataType.FLOAT, dims: [s.length], data: Float32Array.from(s, (v) => Math.fround(1 / v)) });
  const mul = g.insertNodeAfter(source, { opType: 'Mul', extraInputs: [inv], output: names.fresh(`${c.input}_smoothed`), name: names.fresh(`${c.input}_smooth`) });
  // only the smoothed layers read the scaled copy; every other reader keeps the original
  if (!shift) for (const r of readers) if (!c.nodes.includes(r)) renameReads(r, mul.output[0], c.input);
  g.invalidate();
  return { kind: 'Mul', node: mul.name ?? '' };
}

/**
 * X ÷ s folded into the constant factor of the Mul that produces X (γ of an RMSNorm written out:
 * x / rms · γ → x / rms · γ/s), where that factor is per channel of the last axis and nothing else
 * reads it. Undefined when X is not produced so. (SwiGLU's silu(gate)·up could take 1/s in
 * up_proj's output columns, exactly, as msModelSlim folds up→down; but W8A8 requantizes up_proj's
 * output per tensor, and unequal columns cost 0.5–1 dB logit SQNR on the outlier decoder, so the
 * product gets the inserted Mul.)
 */
function foldIntoProducer(model: Model, producer: NodeProto, s: Float32Array): SmoothGroup['absorbedBy'] | undefined {
  const g = model.graph;
  if (producer.op_type !== 'Mul' || producer.input.length !== 2) return undefined;
  const k = s.length;
  const constant = producer.input.findIndex((t) => g.isConstant(t));
  if (constant < 0) return undefined;
  const name = producer.input[constant];
  const v = g.initializer(name) && g.consumers(name).length === 1 ? g.constantValue(name) : undefined;
  // a per-channel factor along the last axis only ([K], [1, K], [1, 1, K], …), applied to an activation
  if (!v || v.type !== DataType.FLOAT || v.dims[v.dims.length - 1] !== k || v.dims.slice(0, -1).some((d) => d !== 1) || g.isConstant(producer.input[1 - constant])) return undefined;
  g.replaceInitializer(name, { type: DataType.FLOAT, dims: v.dims, data: Float32Array.from(v.data as Float32Array, (x, j) => Math.fround(x / s[j])) });
  return { kind: 'Scale', node: producer.name ?? '' };
}
