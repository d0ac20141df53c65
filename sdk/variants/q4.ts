/**
 * Weight-only 4-bit variants, as ONNX Runtime's kernels run them (checked on onnxruntime-node
 * 1.30, CPU):
 *   q4 / q4f16 — every MatMul whose B is a constant 2-D float weight [K, N] becomes
 *     com.microsoft.MatMulNBits (bits 4, block-wise along K, block size 32 by default,
 *     symmetric by default: no zero points, the kernel implies 8); the layout is in
 *     nbits-pack.ts. Scales take the MatMul's float type, so the same pass on a float16 model
 *     (MatMul computing in float16) gives q4f16: ORT's CPU MatMulNBits has a float16 kernel.
 *     Embedding tables (Gather of a constant 2-D float table along axis 0) become
 *     com.microsoft.GatherBlockQuantized (uint8 data, bits 4, quantized along the embedding
 *     width with the same block size and symmetry), which ORT's CPU provider runs for float32
 *     and float16 scales.
 *   bnb4 — the same MatMuls become com.microsoft.MatMulBnb4 (NF4 by default, or FP4; block size
 *     64 by default; absmax per block), layout in bnb4.ts. ORT has no bnb4 Gather: embeddings
 *     stay float, with that reason.
 * Inputs and outputs of the graph keep their names and types; the weights' float copies are
 * dropped where nothing else reads them. The passes work on a copy: the model given is left
 * unchanged. What was done and what was kept float (and why) is in weightOnlyReport(result).
 */
import { QuantbookError, checkKeys, invalidArgument, requireObject } from '../errors';
import { DataType, toFloat32, typeName } from '../onnx/dtype';
import { Graph, attributeValue, makeAttribute } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto, newNode } from '../onnx/proto';
import { makeTensor } from '../onnx/tensor';
import { scopes } from '../onnx/scopes';
import { removeUnusedConstants } from '../quantize/fold-batchnorm';
import { BNB4_QUANT_TYPE, packBnb4 } from './bnb4';
import { ScaleType, packGatherBlock, packMatMulNBits } from './nbits-pack';

export const MS_DOMAIN = 'com.microsoft';

export interface MatMulNBitsOptions {
  /** values per scale along K (and along the embedding width): a power of 2, ≥ 16; default 32 */
  blockSize?: number;
  /** no zero points (implied 8); default true, as the q4 files Transformers.js loads are made */
  symmetric?: boolean;
  /** MatMulNBits accuracy_level (0..4: 4 lets the CPU kernel quantize A to int8); omitted by default */
  accuracyLevel?: number;
}

export interface Bnb4Options {
  /** values per absmax: a power of 2, ≥ 16; default 64 */
  blockSize?: number;
  /** default 'nf4' */
  quantType?: 'nf4' | 'fp4';
}

export interface WeightOnlyLayer {
  /** node name (or its first output when unnamed) */
  name: string;
  /** body path when the node sits inside If/Loop/Scan bodies */
  scope?: string;
  opType: string;
  weight: string;
}

export interface WeightOnlyReport {
  op: 'MatMulNBits' | 'MatMulBnb4';
  blockSize: number;
  symmetric?: boolean;
  accuracyLevel?: number;
  quantType?: 'nf4' | 'fp4';
  /** float types of the quantized weights' scales ('float32', 'float16') */
  scaleTypes: string[];
  /**
   * MatMuls rewritten (K, N: the weight's [K, N]), and Gathers rewritten as GatherBlockQuantized
   * (K: the embedding width, quantized in blocks; N: the table's rows)
   */
  quantized: Array<WeightOnlyLayer & { as: string; K: number; N: number }>;
  /** MatMul / Gather nodes left float, with the reason */
  kept: Array<WeightOnlyLayer & { reason: string }>;
}

const reports = new WeakMap<Model, WeightOnlyReport>();

/** What quantizeMatMulNBits / quantizeBnb4 did to produce `model` (undefined for other models). */
export function weightOnlyReport(model: Model): WeightOnlyReport | undefined {
  return reports.get(model);
}

function checkBlockSize(where: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 16 || (v & (v - 1)) !== 0) {
    throw invalidArgument(`${where}.blockSize`, v, 'a power of 2 not smaller than 16 (what ORT\'s kernels accept), e.g. 32, 64, 128');
  }
  return v;
}

interface Weight { type: DataType; k: number; n: number; values: Float32Array }

/** The float 2-D constant `name` as defined in `g` itself, or why it is not one. */
function constantMatrix(g: Graph, name: string | undefined, what: string): Weight | string {
  if (!name || !g.isConstant(name)) {
    return name && !g.hasTensor(name) ? `its ${what} "${name}" is defined in an enclosing graph` : `its ${what} is not a constant (it is computed at run time)`;
  }
  if (g.proto.input.some((v) => v.name === name)) return `its ${what} "${name}" is also a graph input (a value the caller may feed)`;
  const t = g.constantValue(name)!;
  if (t.type !== DataType.FLOAT && t.type !== DataType.FLOAT16) return `its ${what} "${name}" is ${typeName(t.type)}; only float32 and float16 weights are quantized`;
  if (t.dims.length !== 2) return `its ${what} "${name}" has shape [${t.dims}], not 2-D`;
  const values = t.type === DataType.FLOAT ? (t.data as Float32Array) : toFloat32(t.type, t.data as Uint16Array);
  return { type: t.type, k: t.dims[0], n: t.dims[1], values };
}

const label = (n: NodeProto) => n.name || n.output[0];

type Rewrite = (g: Graph, n: NodeProto, w: Weight, fresh: (base: string) => string, cache: Map<string, string[]>) => { node: NodeProto; as: string } | string;

/** Applies `matmul` (and `gather`, when given) to every MatMul / Gather of every scope of a copy of `model`. */
function rewrite(model: Model, report: Omit<WeightOnlyReport, 'quantized' | 'kept' | 'scaleTypes'>, matmul: Rewrite, gather?: Rewrite, gatherMissing?: string): Model {
  const out = model.clone();
  const quantized: WeightOnlyReport['quantized'] = [];
  const kept: WeightOnlyReport['kept'] = [];
  const scaleTypes = new Set<string>();
  for (const s of scopes(out)) {
    const g = s.graph;
    const where = s.path ? { scope: s.path } : {};
    const names = g.nameSource();
    const fresh = (base: string) => names.fresh(base);
    const caches = { MatMul: new Map<string, string[]>(), Gather: new Map<string, string[]>() };
    let changed = false;
    for (const n of [...g.nodes]) {
      if ((n.domain ?? '') !== '' || (n.op_type !== 'MatMul' && n.op_type !== 'Gather')) continue;
      const isMatMul = n.op_type === 'MatMul';
      const weightName = isMatMul ? n.input[1] : n.input[0];
      const base = { name: label(n), ...where, opType: n.op_type!, weight: weightName };
      const w = constantMatrix(g, weightName, isMatMul ? 'B' : 'table (data)');
      if (typeof w === 'string') {
        // a Gather of a non-constant (shapes, indices) is not an embedding: not worth a line
        if (isMatMul || g.isConstant(n.input[0])) kept.push({ ...base, reason: `${n.op_type} kept float: ${w}` });
        continue;
      }
      if (!isMatMul && !gather) {
        kept.push({ ...base, reason: `Gather kept float: ${gatherMissing}` });
        continue;
      }
      const done = (isMatMul ? matmul : gather!)(g, n, w, fresh, caches[n.op_type as 'MatMul' | 'Gather']);
      if (typeof done === 'string') {
        kept.push({ ...base, reason: `${n.op_type} kept float: ${done}` });
        continue;
      }
      g.proto.node[g.proto.node.indexOf(n)] = done.node;
      changed = true;
      scaleTypes.add(w.type === DataType.FLOAT16 ? 'float16' : 'float32');
      quantized.push({ ...base, as: done.as, K: isMatMul ? w.k : w.n, N: isMatMul ? w.n : w.k });
    }
    if (changed) {
      g.invalidate();
      removeUnusedConstants(g);
    }
  }
  if (!quantized.some((q) => q.opType === 'MatMul')) {
    const why = kept.filter((k) => k.opType === 'MatMul').slice(0, 3).map((k) => `"${k.name}": ${k.reason}`);
    throw new QuantbookError('UNSUPPORTED', `${report.op}: the model has no MatMul with a constant 2-D float32/float16 weight to quantize${why.length ? ` (${why.join('; ')})` : ''}`);
  }
  if (!out.proto.opset_import.some((o) => (o.domain ?? '') === MS_DOMAIN)) out.proto.opset_import.push({ domain: MS_DOMAIN, version: 1 });
  out.graph.invalidate();
  reports.set(out, { ...report, scaleTypes: [...scaleTypes], quantized, kept });
  return out;
}

function addTensor(g: Graph, name: string, type: DataType, dims: number[], data: ArrayLike<number>): string {
  g.proto.initializer.push(makeTensor(name, type, dims, data as Uint8Array));
  return name;
}

/** The packed inputs of a weight, made once however many nodes read it (tied weights share them). */
function packedOnce(cache: Map<string, string[]>, weight: string, make: (weight: string) => string[]): string[] {
  let inputs = cache.get(weight);
  if (!inputs) {
    inputs = make(weight);
    cache.set(weight, inputs);
  }
  return inputs;
}

/**
 * q4 (q4f16 on a float16 model): MatMuls with constant 2-D float weights → com.microsoft.MatMulNBits,
 * embedding Gathers → com.microsoft.GatherBlockQuantized. Returns a new model.
 */
export function quantizeMatMulNBits(model: Model, opts: { blockSize?: number; symmetric?: boolean; accuracyLevel?: number } = {}): Model {
  const o = requireObject(opts, 'quantizeMatMulNBits options');
  checkKeys(o, ['blockSize', 'symmetric', 'accuracyLevel'], 'quantizeMatMulNBits options');
  const blockSize = checkBlockSize('quantizeMatMulNBits options', opts.blockSize ?? 32);
  const symmetric = opts.symmetric ?? true;
  if (typeof symmetric !== 'boolean') throw invalidArgument('quantizeMatMulNBits options.symmetric', symmetric, 'true or false');
  const level = opts.accuracyLevel;
  if (level !== undefined && (!Number.isInteger(level) || level < 0 || level > 4)) {
    throw invalidArgument('quantizeMatMulNBits options.accuracyLevel', level, 'an integer 0..4 (MatMulNBits accuracy_level) or undefined');
  }
  return rewrite(model, { op: 'MatMulNBits', blockSize, symmetric, ...(level !== undefined ? { accuracyLevel: level } : {}) },
    (g, n, w, fresh, cache) => {
      const scaleType = w.type as ScaleType;
      const inputs = packedOnce(cache, n.input[1], (b) => {
        const p = packMatMulNBits(w.values, w.k, w.n, blockSize, symmetric, scaleType);
        return [
          addTensor(g, fresh(`${b}_Q4`), DataType.UINT8, [w.n, p.q.blocks, blockSize / 2], p.b),
          addTensor(g, fresh(`${b}_scales`), scaleType, [w.n * p.q.blocks], p.scales),
          ...(p.zeroPoints ? [addTensor(g, fresh(`${b}_zero_points`), DataType.UINT8, [p.zeroPoints.length], p.zeroPoints)] : []),
        ];
      });
      const attribute = [makeAttribute('K', w.k), makeAttribute('N', w.n), makeAttribute('bits', 4), makeAttribute('block_size', blockSize)];
      if (level !== undefined) attribute.push(makeAttribute('accuracy_level', level));
      return { as: 'MatMulNBits', node: newNode({ op_type: 'MatMulNBits', domain: MS_DOMAIN, name: fresh(`${label(n)}_Q4`), input: [n.input[0], ...inputs], output: n.output, attribute }) };
    },
    (g, n, w, fresh, cache) => {
      const axis = (attributeValue(n, 'axis') as number | undefined) ?? 0;
      if (axis !== 0 && axis !== -2) return `it gathers along axis ${axis}; GatherBlockQuantized with uint8 data gathers rows (axis 0) only`;
      if (w.n % 2) return `the table width ${w.n} is odd; GatherBlockQuantized packs two 4-bit values per byte along it`;
      const scaleType = w.type as ScaleType;
      const inputs = packedOnce(cache, n.input[0], (t) => {
        const p = packGatherBlock(w.values, w.k, w.n, blockSize, symmetric, scaleType);
        return [
          addTensor(g, fresh(`${t}_Q4`), DataType.UINT8, [w.k, w.n / 2], p.data),
          addTensor(g, fresh(`${t}_scales`), scaleType, [w.k, p.q.blocks], p.scales),
          ...(p.zeroPoints ? [addTensor(g, fresh(`${t}_zero_points`), DataType.UINT8, [w.k, Math.ceil(p.q.blocks / 2)], p.zeroPoints)] : []),
        ];
      });
      const [data, scales, ...zp] = inputs;
      const attribute = [makeAttribute('bits', 4), makeAttribute('block_size', blockSize), makeAttribute('gather_axis', 0), makeAttribute('quantize_axis', 1)];
      return { as: 'GatherBlockQuantized', node: newNode({ op_type: 'GatherBlockQuantized', domain: MS_DOMAIN, name: fresh(`${label(n)}_Q4`), input: [data, n.input[1], scales, ...zp], output: n.output, attribute }) };
    });
}

/**
 * bnb4: MatMuls with constant 2-D float weights → com.microsoft.MatMulBnb4 (NF4 or FP4, absmax
 * per block). Embeddings stay float (ORT has no bnb4 Gather). Returns a new model.
 */
export function quantizeBnb4(model: Model, opts: { blockSize?: number; quantType?: 'nf4' | 'fp4' } = {}): Model {
  const o = requireObject(opts, 'quantizeBnb4 options');
  checkKeys(o, ['blockSize', 'quantType'], 'quantizeBnb4 options');
  const blockSize = checkBlockSize('quantizeBnb4 options', opts.blockSize ?? 64);
  const quantType = opts.quantType ?? 'nf4';
  if (quantType !== 'nf4' && quantType !== 'fp4') throw invalidArgument('quantizeBnb4 options.quantType', quantType, '"nf4" or "fp4"');
  return rewrite(model, { op: 'MatMulBnb4', blockSize, quantType },
    (g, n, w, fresh, cache) => {
      const scaleType = w.type as ScaleType;
      const inputs = packedOnce(cache, n.input[1], (b) => {
        const p = packBnb4(w.values, w.k, w.n, blockSize, quantType, scaleType);
        return [
          addTensor(g, fresh(`${b}_BNB4`), DataType.UINT8, [p.b.length], p.b),
          addTensor(g, fresh(`${b}_absmax`), scaleType, [p.absmax.length], p.absmaxStored),
        ];
      });
      const attribute = [makeAttribute('K', w.k), makeAttribute('N', w.n), makeAttribute('block_size', blockSize), makeAttribute('quant_type', BNB4_QUANT_TYPE[quantType])];
      return { as: 'MatMulBnb4', node: newNode({ op_type: 'MatMulBnb4', domain: MS_DOMAIN, name: fresh(`${label(n)}_BNB4`), input: [n.input[0], ...inputs], output: n.output, attribute }) };
    },
    undefined,
    'ONNX Runtime has no bitsandbytes-4-bit Gather kernel (GatherBlockQuantized reads int4/uint4/uint8 integer codes with scales, not NF4/FP4 levels); the table stays float');
}
