/**
 * GPTQ-style weight rounding (Frantar et al., arXiv 2210.17323): per layer, the weights are
 * quantized one input column at a time on the grid round-to-nearest uses (same per-channel
 * scales and zero points), and each column's rounding error is fed into the columns not yet
 * quantized, weighted by the inverse Hessian of the layer's output error
 *
 *   E(Ŵ) = Σ_rows ‖X·(w − ŵ)ᵀ‖²,   H = XᵀX (one K×K matrix per group of a grouped Conv),
 *
 * where X holds the layer's float inputs: rows of the input for MatMul/Gemm, im2col patches for
 * Conv (K = C/group · kernel size). With U the upper Cholesky factor of (H + λI)⁻¹
 * (λ = damp · mean diag H), column i is rounded, e = (w_i − ŵ_i) / U_ii, and every later column j
 * gets w_j −= e · U_ij. The updates are applied lazily: column j receives all of its feedback
 * when it is reached, from one factor of H (gptqRows has the algebra).
 *
 * H comes from one pass over the calibration data in ONNX Runtime: the float model gains, per
 * layer, an "identity" convolution that copies each input patch into channels (im2col with the
 * layer's own pads, strides, dilations and groups) and a MatMul of the patches with their
 * transpose; its outputs are only the [G, K, K] Gram matrices, summed here in float64. No
 * activation is kept between batches, so the cost is close to a calibration pass.
 */
import { QuantbookError } from '../errors';
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue, makeAttribute } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto, newNode, newValueInfo } from '../onnx/proto';
import { makeTensor } from '../onnx/tensor';
import { Runner } from '../runtime/runner';
import { CalibrationSource, batchesFrom } from '../calibration/data';
import { QParams } from '../observers/qparams';
import { quantizeValue } from '../kernels/quant';
import { QuantLayer } from '../quantize/layers';

export interface GptqOptions {
  /** λ as a share of H's mean diagonal (default 0.01) */
  damp?: number;
  /** output channels (weight rows) rounded together, each column of the factor read once per block (default 128) */
  blockSize?: number;
  /**
   * Variance of independent noise on each input value, e.g. the layer's input quantization
   * (step² / 12 for a uniform grid). E‖(X + N)·Δᵀ‖² = Δ·(XᵀX + rows·σ²·I)·Δᵀ: without it GPTQ
   * moves error into input directions the float data barely excites, where the quantized
   * activations' noise then finds it. Default 0 (float inputs).
   */
  inputNoise?: number;
}

/** The Gram matrices XᵀX of one layer's inputs: `groups` row-major K×K blocks, summed over every input row (patch) of the calibration data. */
export interface LayerHessian {
  groups: number;
  k: number;
  h: Float64Array;
  /** input rows (patches) summed into each block */
  rows: number;
}

export interface GptqLayerRow {
  layer: string;
  /** the layer's own output SQNR on its calibration inputs, bias left out (Σ w H wᵀ over Σ (w − ŵ) H (w − ŵ)ᵀ), with round-to-nearest and with GPTQ */
  nearestSqnrDb: number;
  gptqSqnrDb: number;
  /** integers that differ from round-to-nearest's */
  changed: number;
  weights: number;
}

/** Why GPTQ cannot handle `layer` (it stays round-to-nearest), or undefined when it can. */
export function gptqUnsupported(g: Graph, layer: QuantLayer): string | undefined {
  if (!layer.weight) return 'a layer without weight';
  if (layer.scope) return 'a layer inside an If/Loop/Scan body';
  const w = g.constantValue(layer.weight);
  if (!w || w.type !== DataType.FLOAT) return 'a weight that is not a float32 constant';
  const rank = w.dims.length;
  if (layer.opType === 'Conv') return rank >= 3 && layer.weightAxis === 0 ? undefined : `Conv with a ${rank}-D weight`;
  if (layer.opType === 'MatMul') return rank === 2 ? undefined : `MatMul with a ${rank}-D weight`;
  if (layer.opType === 'Gemm') return rank === 2 ? undefined : `Gemm with a ${rank}-D weight`;
  return layer.opType; // ConvTranspose and the pools
}

/** `count`: a shape output whose `rowAxes` multiply to the rows summed in one batch */
interface HessianPlan { layer: QuantLayer; groups: number; k: number; output: string; count: string; rowAxes: 'last' | number[] }

/**
 * XᵀX of every layer's float input over `data` (layers gptqUnsupported refuses are left out),
 * computed in ONNX Runtime on a copy of `model` whose only outputs are those matrices.
 */
export async function collectHessians(model: Model, layers: QuantLayer[], data: CalibrationSource): Promise<Map<string, LayerHessian>> {
  const copy = model.clone();
  const g = copy.graph;
  const opset = copy.opsetVersion('') ?? 13;
  const names = g.nameSource();
  const plans: HessianPlan[] = [];
  const after = new Map<NodeProto | undefined, NodeProto[]>();
  const add = (nodes: NodeProto[], tensor: string) => {
    const p = g.producer(tensor);
    after.set(p, [...(after.get(p) ?? []), ...nodes]);
  };
  const init = (base: string, type: DataType, dims: number[], values: Float32Array | BigInt64Array) => {
    const name = names.fresh(`quantbook_gptq_${base}`);
    g.proto.initializer.push(makeTensor(name, type, dims, values));
    return name;
  };
  const ints = (base: string, v: number[]) => init(base, DataType.INT64, [v.length], BigInt64Array.from(v.map(BigInt)));
  for (const layer of layers) {
    if (gptqUnsupported(model.graph, layer)) continue;
    const n = layer.node;
    const x = n.input[0];
    const w = model.graph.constantValue(layer.weight!)!;
    const base = `${layer.name}`;
    const fresh = (s: string) => names.fresh(`quantbook_gptq_${base}_${s}`);
    const output = fresh('hessian');
    const count = fresh('rows_shape');
    if (layer.opType === 'Conv') {
      const groups = (attributeValue(n, 'group') as number | undefined) ?? 1;
      const cg = w.dims[1];
      const kernel = w.dims.slice(2);
      const taps = kernel.reduce((a, b) => a * b, 1);
      const k = cg * taps;
      const strides = (attributeValue(n, 'strides') as number[] | undefined) ?? kernel.map(() => 1);
      const dilations = (attributeValue(n, 'dilations') as number[] | undefined) ?? kernel.map(() => 1);
      const pads = (attributeValue(n, 'pads') as number[] | undefined) ?? [0, 0, 0, 0];
      const autoPad = ((attributeValue(n, 'auto_pad') as string | undefined) ?? 'NOTSET') !== 'NOTSET';
      if (cg === 1 && kernel.length === 2 && !autoPad && opset >= 13) {
        // depthwise: each tap is a strided Slice of the padded input ([N, C, taps, P] by Concat), a
        // copy; an identity Conv with 9 outputs per group and the transposes that fold the batch
        // into the rows cost ONNX Runtime several times more. Gram per sample, summed over N.
        let src = x;
        const nodes: NodeProto[] = [];
        if (pads.some(Boolean)) {
          src = fresh('padded');
          nodes.push(newNode({ op_type: 'Pad', name: src, input: [x, ints(`${base}_pads`, [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])], output: [src] }));
        }
        const taps4: string[] = [];
        const flat = ints(`${base}_tap_shape`, [0, 0, 1, -1]);
        const axes = ints('axes_hw', [2, 3]);
        const steps = ints(`${base}_steps`, strides);
        for (let a = 0; a < kernel[0]; a++) for (let b = 0; b < kernel[1]; b++) {
          const startH = a * dilations[0];
          const startW = b * dilations[1];
          // up to the last start a full window still fits: end = size − (kernel − 1 − tap)·dilation
          const endH = a === kernel[0] - 1 ? 2 ** 62 : -(kernel[0] - 1 - a) * dilations[0];
          const endW = b === kernel[1] - 1 ? 2 ** 62 : -(kernel[1] - 1 - b) * dilations[1];
          const tap = fresh(`tap_${a}_${b}`);
          const shaped = fresh(`tap_${a}_${b}_flat`);
          nodes.push(
            newNode({ op_type: 'Slice', name: tap, input: [src, ints(`${base}_start_${a}_${b}`, [startH, startW]), ints(`${base}_end_${a}_${b}`, [endH, endW]), axes, steps], output: [tap] }),
            newNode({ op_type: 'Reshape', name: shaped, input: [tap, flat], output: [shaped] }),
          );
          taps4.push(shaped);
        }
        const stacked = fresh('taps');
        const transposed = fresh('taps_t');
        const gram = fresh('gram');
        nodes.push(
          newNode({ op_type: 'Concat', name: stacked, input: taps4, output: [stacked], attribute: [makeAttribute('axis', 2)] }),
          newNode({ op_type: 'Transpose', name: transposed, input: [stacked], output: [transposed], attribute: [makeAttribute('perm', [0, 1, 3, 2])] }),
          newNode({ op_type: 'MatMul', name: gram, input: [stacked, transposed], output: [gram] }),
          newNode({ op_type: 'ReduceSum', name: output, input: [gram, ints('axis0', [0])], output: [output], attribute: [makeAttribute('keepdims', 0)] }),
          newNode({ op_type: 'Shape', name: count, input: [stacked], output: [count] }),
        );
        add(nodes, x);
        plans.push({ layer, groups, k, output, count, rowAxes: [0, 3] });
        continue;
      }
      // identity filters: output channel g·K + c·taps + t copies input channel g·cg + c at tap t
      const eye = new Float32Array(groups * k * cg * taps);
      for (let gi = 0; gi < groups; gi++) for (let c = 0; c < cg; c++) for (let t = 0; t < taps; t++) {
        const o = gi * k + c * taps + t;
        eye[(o * cg + c) * taps + t] = 1;
      }
      const filters = init(`${base}_im2col`, DataType.FLOAT, [groups * k, cg, ...kernel], eye);
      const patches = fresh('patches');
      const shaped = fresh('patches_by_group');
      const byColumn = fresh('patches_by_column');
      const rows = fresh('patches_rows');
      const transposed = fresh('patches_t');
      const attrs = n.attribute.filter((a) => a.name !== 'kernel_shape');
      // [N, G·K, spatial…] → [G, K, N·P] (the batch folded into the rows), then one [G, K, K] product
      add([
        newNode({ op_type: 'Conv', name: patches, input: [x, filters], output: [patches], attribute: [...attrs, makeAttribute('kernel_shape', kernel)] }),
        newNode({ op_type: 'Reshape', name: shaped, input: [patches, ints(`${base}_shape`, [0, groups, k, -1])], output: [shaped] }),
        newNode({ op_type: 'Transpose', name: byColumn, input: [shaped], output: [byColumn], attribute: [makeAttribute('perm', [1, 2, 0, 3])] }),
        newNode({ op_type: 'Reshape', name: rows, input: [byColumn, ints(`${base}_rows`, [groups, k, -1])], output: [rows] }),
        newNode({ op_type: 'Transpose', name: transposed, input: [rows], output: [transposed], attribute: [makeAttribute('perm', [0, 2, 1])] }),
        newNode({ op_type: 'MatMul', name: output, input: [rows, transposed], output: [output] }),
        newNode({ op_type: 'Shape', name: count, input: [rows], output: [count] }),
      ], x);
      plans.push({ layer, groups, k, output, count, rowAxes: 'last' });
    } else {
      // MatMul: x [..., K] · W [K, N]; Gemm: x [M, K] (or [K, M] with transA)
      const transA = layer.opType === 'Gemm' && attributeValue(n, 'transA') === 1;
      const transB = layer.opType === 'Gemm' && attributeValue(n, 'transB') === 1;
      const k = transB ? w.dims[1] : w.dims[0];
      const rows = fresh('rows');
      const rowsT = fresh('rows_t');
      const gram = fresh('gram');
      const nodes = transA
        ? [newNode({ op_type: 'Transpose', name: rows, input: [x], output: [rows], attribute: [makeAttribute('perm', [1, 0])] })]
        : [newNode({ op_type: 'Reshape', name: rows, input: [x, ints(`${base}_rows`, [-1, k])], output: [rows] })];
      add([
        ...nodes,
        newNode({ op_type: 'Transpose', name: rowsT, input: [rows], output: [rowsT], attribute: [makeAttribute('perm', [1, 0])] }),
        newNode({ op_type: 'MatMul', name: gram, input: [rowsT, rows], output: [gram] }),
        newNode({ op_type: 'Unsqueeze', name: output, input: opset >= 13 ? [gram, ints('axis0', [0])] : [gram], output: [output], attribute: opset >= 13 ? [] : [makeAttribute('axes', [0])] }),
        newNode({ op_type: 'Shape', name: count, input: [rowsT], output: [count] }),
      ], x);
      plans.push({ layer, groups: 1, k, output, count, rowAxes: 'last' });
    }
  }
  const out = new Map<string, LayerHessian>();
  if (!plans.length) return out;
  // each layer's nodes right after its input's producer: ORT frees the patches before the next layer
  g.proto.node = [...(after.get(undefined) ?? []), ...g.proto.node.flatMap((nd) => [nd, ...(after.get(nd) ?? [])])];
  g.proto.output = plans.flatMap((p) => [newValueInfo({ name: p.output }), newValueInfo({ name: p.count })]);
  g.invalidate();
  for (const p of plans) out.set(p.layer.name, { groups: p.groups, k: p.k, h: new Float64Array(p.groups * p.k * p.k), rows: 0 });
  const runner = await Runner.create(copy);
  try {
    let batches = 0;
    for await (const feeds of batchesFrom(data, model.graph.inputNames)) {
      const { outputs } = await runner.run(feeds);
      for (const p of plans) {
        const acc = out.get(p.layer.name)!;
        const v = outputs[p.output].data as Float32Array;
        for (let i = 0; i < v.length; i++) acc.h[i] += v[i];
        // the rows are the last dimension of [G, K, N·P] patches and of the transposed [K, M] rows
        const shape = Array.from(outputs[p.count].data as BigInt64Array, Number);
        acc.rows += p.rowAxes === 'last' ? shape[shape.length - 1] : p.rowAxes.reduce((m, a) => m * shape[a], 1);
      }
      batches++;
    }
    if (!batches) throw new QuantbookError('INVALID_ARGUMENT', 'GPTQ: calibration data holds no batch');
  } finally {
    await runner.dispose();
  }
  return out;
}

/**
 * V with A = V·Vᵀ, V upper triangular with a positive diagonal, for a symmetric positive definite
 * K×K `a` (row-major): the Cholesky factor of J·A·J (J the reversal) read backwards. Then
 * A⁻¹ = V⁻ᵀ·V⁻¹, so U = V⁻¹ is the upper Cholesky factor of A⁻¹ that GPTQ is written with.
 * Returned transposed (row j holds column j of V: V_0j … V_jj), the layout gptqRows reads.
 */
export function reverseCholeskyT(a: Float64Array, k: number): Float64Array {
  const v = new Float64Array(k * k);
  const partial = new Float64Array(4 * k);
  // columns in blocks of four, from the last: the sums over the columns already done (t > hi)
  // read each row once for four columns (the work is memory-bound), the rest inside the block
  for (let hi = k - 1; hi >= 0; hi -= 4) {
    const lo = Math.max(0, hi - 3);
    const j0 = hi * k;
    const j1 = Math.max(lo, hi - 1) * k;
    const j2 = Math.max(lo, hi - 2) * k;
    const j3 = lo * k;
    for (let i = 0; i <= hi; i++) {
      const io = i * k;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let t = hi + 1; t < k; t++) {
        const x = v[io + t];
        s0 += x * v[j0 + t];
        s1 += x * v[j1 + t];
        s2 += x * v[j2 + t];
        s3 += x * v[j3 + t];
      }
      partial[4 * i] = s0;
      partial[4 * i + 1] = s1;
      partial[4 * i + 2] = s2;
      partial[4 * i + 3] = s3;
    }
    for (let j = hi; j >= lo; j--) {
      const jo = j * k;
      const m = hi - j; // slot of column j in partial
      let d = a[jo + j] - partial[4 * j + m];
      for (let t = j + 1; t <= hi; t++) d -= v[jo + t] * v[jo + t];
      if (!(d > 0)) throw new QuantbookError('RUNTIME_ERROR', 'GPTQ: the damped Hessian is not positive definite');
      const djj = Math.sqrt(d);
      v[jo + j] = djj;
      for (let i = j - 1; i >= 0; i--) {
        const io = i * k;
        let s = a[io + j] - partial[4 * i + m];
        for (let t = j + 1; t <= hi; t++) s -= v[io + t] * v[jo + t];
        v[io + j] = s / djj;
      }
    }
  }
  const vt = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = i; j < k; j++) vt[j * k + i] = v[i * k + j];
  return vt;
}

/**
 * GPTQ on rows of a weight: `w` holds `rows` rows of K columns (row-major), `h` the K×K Gram
 * matrix of the inputs those rows read; row r is quantized with scale[r] and zeroPoint[r] on
 * [qmin, qmax]. Returns the integers, row-major like `w`.
 *
 * GPTQ's loop (U the upper Cholesky factor of H⁻¹): q_i = round(w_i), e_i = (w_i − ŵ_i) / U_ii,
 * w_j −= e_i·U_ij for j > i. Summed up, the original row minus its integers is δ = w − ŵ = E·U, so
 * E = δ·U⁻¹ = δ·V (H = V·Vᵀ, see reverseCholeskyT), and the value column j is rounded from is
 *
 *   w_j − Σ_{i<j} e_i U_ij = w_j + (Σ_{i<j} δ_i V_ij) / V_jj,
 *
 * the same numbers from one factorization of H instead of an inverse and a second Cholesky
 * (half the K³ work). Each row's error feedback is a dot product of its own past errors with
 * column j of V; rows are taken `blockSize` at a time so each column of V is read once per block.
 */
export function gptqRows(
  w: ArrayLike<number>, rows: number, k: number, h: Float64Array,
  scale: ArrayLike<number>, zeroPoint: ArrayLike<number>, range: { qmin: number; qmax: number },
  options: GptqOptions & { /** the rows H was summed over (scales inputNoise) */ inputRows?: number } = {},
): Int32Array {
  const damp = options.damp ?? 0.01;
  const block = Math.max(1, options.blockSize ?? 128);
  const a = Float64Array.from(h);
  const noise = (options.inputNoise ?? 0) * (options.inputRows ?? 0);
  if (noise > 0) for (let i = 0; i < k; i++) a[i * k + i] += noise;
  let mean = 0;
  for (let i = 0; i < k; i++) mean += a[i * k + i] / k;
  if (!(mean > 0)) mean = 1;
  // inputs that are always 0 carry no error: a unit diagonal keeps H invertible
  for (let i = 0; i < k; i++) if (a[i * k + i] === 0) a[i * k + i] = 1;
  for (let i = 0; i < k; i++) a[i * k + i] += damp * mean;
  const vt = reverseCholeskyT(a, k);
  const q = new Int32Array(rows * k);
  const delta = new Float64Array(rows * k); // w − ŵ of the columns done so far
  for (let r0 = 0; r0 < rows; r0 += block) {
    const r1 = Math.min(rows, r0 + block);
    for (let j = 0; j < k; j++) {
      const col = j * k; // V_0j … V_jj
      const vjj = vt[col + j];
      for (let r = r0; r < r1; r++) {
        const ro = r * k;
        let s0 = 0, s1 = 0;
        let i = 0;
        for (; i + 1 < j; i += 2) {
          s0 += delta[ro + i] * vt[col + i];
          s1 += delta[ro + i + 1] * vt[col + i + 1];
        }
        for (; i < j; i++) s0 += delta[ro + i] * vt[col + i];
        const s = scale[r];
        const z = zeroPoint[r];
        // the error feedback: what the columns before j left over, seen through H
        const target = w[ro + j] + (s0 + s1) / vjj;
        const value = quantizeValue(target, s, z, range);
        q[ro + j] = value;
        delta[ro + j] = w[ro + j] - Math.fround((value - z) * s);
      }
    }
  }
  return q;
}
/**
 * Σ_r d_r H d_rᵀ for each of several row-major sets of `rows` rows of K columns (rows from
 * `rowOffset`), one pass over the upper half of the symmetric H per row.
 */
function quadraticForms(sets: Float64Array[], rows: number, k: number, h: Float64Array, rowOffset: number): number[] {
  const totals = sets.map(() => 0);
  for (let r = rowOffset; r < rowOffset + rows; r++) {
    const ro = r * k;
    for (let n = 0; n < sets.length; n++) {
      const d = sets[n];
      let t = 0;
      for (let i = 0; i < k; i++) {
        const di = d[ro + i];
        if (di === 0) continue;
        const hi = i * k;
        let s = 0;
        for (let j = i + 1; j < k; j++) s += h[hi + j] * d[ro + j];
        t += di * (h[hi + i] * di + 2 * s);
      }
      totals[n] += t;
    }
  }
  return totals;
}

/**
 * GPTQ integers for one layer's weight (`dims`, output channels along `axis`: 0 for Conv and
 * Gemm with transB, 1 for MatMul and Gemm without), on the grid of `q` (per channel or per
 * tensor), in the weight's own layout. Also reports the layer's output error on its calibration
 * inputs with round-to-nearest and with GPTQ.
 */
export function gptqWeight(
  weight: { data: Float32Array; dims: readonly number[]; axis: number },
  hessian: LayerHessian,
  q: QParams,
  options: GptqOptions = {},
): { values: Int32Array; nearestSqnrDb: number; gptqSqnrDb: number; changed: number } {
  const { dims, axis, data } = weight;
  const channels = dims[axis];
  const k = hessian.k;
  if (dims.length === 2 ? (axis === 0 ? dims[1] : dims[0]) !== k : dims.slice(1).reduce((a, b) => a * b, 1) !== k) {
    throw new QuantbookError('INVALID_ARGUMENT', `GPTQ: weight [${dims.join(', ')}] does not match a Hessian of ${k} columns`);
  }
  if (axis !== 0 && !(axis === 1 && dims.length === 2)) throw new QuantbookError('UNSUPPORTED', `GPTQ: output channels along axis ${axis} of a ${dims.length}-D weight`);
  // rows = output channels, K contiguous values each
  const original = new Float64Array(channels * k);
  if (axis === 0) for (let i = 0; i < original.length; i++) original[i] = data[i];
  else for (let r = 0; r < channels; r++) for (let i = 0; i < k; i++) original[r * k + i] = data[i * channels + r];
  const scale = Float64Array.from({ length: channels }, (_, r) => q.scale[q.scale.length > 1 ? r : 0]);
  const zero = Int32Array.from({ length: channels }, (_, r) => q.zeroPoint[q.zeroPoint.length > 1 ? r : 0]);
  const perGroup = channels / hessian.groups;
  if (!Number.isInteger(perGroup)) throw new QuantbookError('INVALID_ARGUMENT', `GPTQ: ${channels} output channels in ${hessian.groups} groups`);
  const ints = new Int32Array(channels * k);
  const nearest = new Int32Array(channels * k);
  for (let i = 0; i < nearest.length; i++) { const r = Math.floor(i / k); nearest[i] = quantizeValue(original[i], scale[r], zero[r], q); }
  let nearestError = 0;
  let gptqError = 0;
  let signal = 0;
  for (let gi = 0; gi < hessian.groups; gi++) {
    const h = hessian.h.subarray(gi * k * k, (gi + 1) * k * k);
    const r0 = gi * perGroup;
    const v = gptqRows(original.subarray(r0 * k, (r0 + perGroup) * k), perGroup, k, h, scale.subarray(r0, r0 + perGroup), zero.subarray(r0, r0 + perGroup), q, { ...options, inputRows: hessian.rows });
    ints.set(v, r0 * k);
  }
  // the layer's output error on its calibration inputs: (w − ŵ) H (w − ŵ)ᵀ, and the signal w H wᵀ
  const errorOf = (v: Int32Array) => Float64Array.from(v, (x, i) => original[i] - Math.fround((x - zero[Math.floor(i / k)]) * scale[Math.floor(i / k)]));
  const sets = [errorOf(nearest), errorOf(ints), original];
  for (let gi = 0; gi < hessian.groups; gi++) {
    const [n, g, s] = quadraticForms(sets, perGroup, k, hessian.h.subarray(gi * k * k, (gi + 1) * k * k), gi * perGroup);
    nearestError += n;
    gptqError += g;
    signal += s;
  }
  const db = (e: number) => 10 * Math.log10(signal / e);
  let changed = 0;
  for (let i = 0; i < ints.length; i++) if (ints[i] !== nearest[i]) changed++;
  // back to the weight's layout
  const values = new Int32Array(data.length);
  if (axis === 0) values.set(ints);
  else for (let r = 0; r < channels; r++) for (let i = 0; i < k; i++) values[i * channels + r] = ints[r * k + i];
  return { values, nearestSqnrDb: db(nearestError), gptqSqnrDb: db(gptqError), changed };
}
