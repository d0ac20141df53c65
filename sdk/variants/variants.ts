/**
 * The dtype variants JavaScript users load through Transformers.js (`dtype: 'fp16' | 'q8' | …`),
 * written side by side under the file names those model repositories use, with a
 * `quantize_config.json` saying what each variant is, and an accuracy report (output SQNR and
 * cosine against fp32 on given or virtual inputs, file size). Every variant is loaded and run in
 * ONNX Runtime (CPU) before anything is written; all files appear together or none does.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError, invalidArgument } from '../errors';
import { CalibrationSource, collectBatches } from '../calibration/data';
import { Model, loadModel } from '../onnx/model';
import { PendingFile, writeAll, writeFilesAtomically } from '../util/atomic-write';
import { VariantAccuracy, measureAccuracy, variantInputs } from './accuracy';
import { Float16Target, convertToFloat16 } from './fp16';
import { quantizeDynamicWeights } from './q8';
import { WeightOnlyReport, quantizeBnb4, quantizeMatMulNBits, weightOnlyReport } from './q4';

export const VARIANT_DTYPES = ['fp32', 'fp16', 'q8', 'int8', 'uint8', 'q4', 'q4f16', 'bnb4'] as const;
export type VariantDtype = (typeof VARIANT_DTYPES)[number];

/** File names as Transformers.js model repositories have them (under onnx/). */
export const VARIANT_FILES: Record<VariantDtype, string> = {
  fp32: 'model.onnx', fp16: 'model_fp16.onnx', q8: 'model_quantized.onnx', int8: 'model_int8.onnx', uint8: 'model_uint8.onnx',
  q4: 'model_q4.onnx', q4f16: 'model_q4f16.onnx', bnb4: 'model_bnb4.onnx',
};

/** The dtypes this version builds (the default set). */
export const BUILT_DTYPES: readonly VariantDtype[] = VARIANT_DTYPES;

export const CONFIG_FILE = 'quantize_config.json';
export const REPORT_FILE = 'variants_report.json';

export interface MakeVariantsOptions {
  outDir: string;
  /** default BUILT_DTYPES */
  dtypes?: VariantDtype[];
  /** inputs for the accuracy report; default: virtual inputs from the model's input shapes */
  data?: CalibrationSource;
  /** batches of `data` used (default 4) */
  maxBatches?: number;
  /** q8/int8/uint8: one scale per output channel (default true) */
  perChannel?: boolean;
  /** q8/int8/uint8: 7-bit weights (default false; 'auto': on CPUs whose int8 products saturate) */
  reduceRange?: boolean | 'auto';
  /** fp16: 'cpu' (default) keeps float32 what ORT CPU has no float16 kernel for; 'any': only the sensitive ops */
  fp16Target?: Float16Target;
  onProgress?: (p: { dtype: VariantDtype; step: 'build' | 'measure' }) => void;
}

export interface VariantRecord {
  file: string;
  weight_type: string;
  op_types: string[];
  per_channel: boolean | null;
  reduce_range: boolean | null;
  symmetric: boolean | null;
  block_size: number | null;
  [k: string]: unknown;
}

export interface VariantReport extends VariantAccuracy {
  dtype: VariantDtype;
  file: string;
  /** bytes of the written file */
  bytes: number;
  /** bytes / the fp32 model's bytes */
  sizeRatio: number;
}

export interface MakeVariantsResult {
  outDir: string;
  variants: VariantReport[];
  config: Record<string, unknown>;
  /** what the accuracy was measured on */
  inputs: string;
  /** default-set variants the model has nothing for (e.g. q4 without a constant-weight MatMul), with the reason */
  skipped: Array<{ dtype: VariantDtype; reason: string }>;
  files: string[];
}

interface Built { bytes: Uint8Array; record: VariantRecord }

function countBy(items: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of items) out[i] = (out[i] ?? 0) + 1;
  return out;
}

async function build(dtype: VariantDtype, model: Model, fp32: Uint8Array, options: MakeVariantsOptions): Promise<Built> {
  const file = VARIANT_FILES[dtype];
  switch (dtype) {
    case 'fp32':
      return { bytes: fp32, record: { file, weight_type: 'float32', op_types: [], per_channel: null, reduce_range: null, symmetric: null, block_size: null } };
    case 'fp16': {
      const r = await convertToFloat16(model, { target: options.fp16Target });
      return {
        bytes: r.model.toBytes(),
        record: {
          file, weight_type: 'float16', op_types: [...new Set(r.model.proto.graph!.node.map((n) => n.op_type!))].sort(), per_channel: null, reduce_range: null, symmetric: null, block_size: null,
          io_type: 'float32', target: options.fp16Target ?? 'cpu', kept_float32: countBy(r.keptFloat32.map((k) => k.opType)),
          kept_float32_reasons: countBy(r.keptFloat32.map((k) => k.reason)), float16_tensors: r.float16Tensors, float32_tensors: r.float32Tensors, casts: r.casts,
        },
      };
    }
    case 'q8': case 'int8': case 'uint8': {
      // q8 as Transformers.js makes it: int8 weights, uint8 where the model has a Conv (onnxruntime-web has no int8 ConvInteger)
      const hasConv = model.proto.graph!.node.some((n) => n.op_type === 'Conv');
      const weightType = dtype === 'int8' ? 'int8' : dtype === 'uint8' ? 'uint8' : hasConv ? 'uint8' : 'int8';
      const r = quantizeDynamicWeights(model, { weightType, perChannel: options.perChannel, reduceRange: options.reduceRange });
      return {
        bytes: r.model.toBytes(),
        record: {
          file, weight_type: weightType, activation_type: 'uint8 (DynamicQuantizeLinear at run time)', op_types: [...new Set(r.layers.map((l) => l.opType))].sort(),
          per_channel: options.perChannel ?? true, reduce_range: r.reduceRange, symmetric: weightType === 'int8', block_size: null,
          gather_per_channel: false, layers: countBy(r.layers.map((l) => l.opType)),
          smoothed_layernorm: r.smoothed.map((x) => ({ node: x.node, channels: x.channels, max_scale: x.maxScale })),
          kept_float: r.skipped.map((s) => ({ name: s.name, op_type: s.opType, reason: s.reason })),
        },
      };
    }
    case 'q4': case 'q4f16': {
      // q4f16 as Transformers.js ships it: the q4 model with float16 activations and scales (MatMulNBits has float16 CPU kernels)
      const q4 = quantizeMatMulNBits(model, { blockSize: Q4_BLOCK, symmetric: Q4_SYMMETRIC });
      const report = weightOnlyReport(q4)!;
      const out = dtype === 'q4' ? q4 : (await convertToFloat16(q4, { target: options.fp16Target })).model;
      return { bytes: out.toBytes(), record: { ...weightOnlyRecord(file, report), ...(dtype === 'q4f16' ? { io_type: 'float32', activation_type: 'float16 where ORT CPU has kernels' } : {}) } };
    }
    case 'bnb4': {
      const b = quantizeBnb4(model, { blockSize: BNB4_BLOCK });
      return { bytes: b.toBytes(), record: weightOnlyRecord(file, weightOnlyReport(b)!) };
    }
    default:
      return requireBuilt(dtype);
  }
}

/** Transformers.js' defaults: MatMulNBits blocks of 32, bnb4 blocks of 64. */
const Q4_BLOCK = 32;
const BNB4_BLOCK = 64;
/** zero points per block: +0.8–1 dB over symmetric on the transformer, BERT and GPT-2 rows of the tests, for 3 % more bytes */
const Q4_SYMMETRIC = false;

function weightOnlyRecord(file: string, r: WeightOnlyReport): VariantRecord {
  return {
    file,
    weight_type: r.op === 'MatMulBnb4' ? r.quantType! : 'int4', op_types: [...new Set(r.quantized.map((l) => l.as))].sort(), per_channel: null, reduce_range: null,
    symmetric: r.symmetric ?? null, block_size: r.blockSize, scale_types: r.scaleTypes, layers: countBy(r.quantized.map((l) => l.as)),
    kept_float: r.kept.map((k) => ({ name: k.name, op_type: k.opType, reason: k.reason })),
  };
}

/** Refuses a dtype this version does not build (q4, q4f16, bnb4), naming it and what is built. */
function requireBuilt(dtype: VariantDtype): never {
  if (!(VARIANT_DTYPES as readonly string[]).includes(dtype)) throw invalidArgument('dtypes', dtype, `one of ${VARIANT_DTYPES.join(', ')}`);
  throw new QuantbookError('UNSUPPORTED', `dtypes: "${dtype}" (${VARIANT_FILES[dtype]}) is not built yet in this version (4-bit MatMulNBits/MatMulBnb4 variants); build one of ${BUILT_DTYPES.join(', ')}`);
}

/** Builds, checks and writes the variants (see the module comment). */
export async function makeVariants(model: Model | string, options: MakeVariantsOptions): Promise<MakeVariantsResult> {
  if (!options || typeof options.outDir !== 'string' || !options.outDir) throw invalidArgument('outDir', options?.outDir, 'the folder to write the variants to');
  const dtypes = options.dtypes ?? [...BUILT_DTYPES];
  if (!Array.isArray(dtypes) || !dtypes.length) throw invalidArgument('dtypes', dtypes, `a non-empty list of ${VARIANT_DTYPES.join(', ')}`);
  // refuse what cannot be built before any work
  for (const d of dtypes) if (!BUILT_DTYPES.includes(d)) requireBuilt(d);
  const unique = [...new Set(dtypes)];
  if (!unique.length) throw invalidArgument('dtypes', dtypes, `a non-empty list of ${VARIANT_DTYPES.join(', ')}`);
  const source = typeof model === 'string' ? loadModel(model) : model;
  const fp32 = source.toBytes();
  const inputNames = source.graph.inputNames;
  const maxBatches = options.maxBatches ?? 4;
  let batches;
  let inputs: string;
  if (options.data !== undefined) {
    batches = await collectBatches(options.data, inputNames, maxBatches);
    inputs = `${batches.length} given batch${batches.length === 1 ? '' : 'es'}`;
  } else {
    const v = variantInputs(source, Math.min(2, maxBatches));
    batches = v.feeds;
    inputs = v.description;
  }
  const variants: VariantReport[] = [];
  const built = new Map<VariantDtype, Built>();
  // the default set skips (and names) a variant the model has nothing for, e.g. q4 on a CNN
  // without MatMul; a dtype asked for by name is built or refused
  const skipped: Array<{ dtype: VariantDtype; reason: string }> = [];
  for (const dtype of unique) {
    options.onProgress?.({ dtype, step: 'build' });
    let b: Built;
    try {
      b = await build(dtype, source, fp32, options);
    } catch (e) {
      if (options.dtypes || !(e instanceof QuantbookError) || e.code !== 'UNSUPPORTED') throw e;
      skipped.push({ dtype, reason: e.message });
      continue;
    }
    options.onProgress?.({ dtype, step: 'measure' });
    const acc = await measureAccuracy(fp32, b.bytes, batches, `${dtype} variant (${b.record.file})`);
    built.set(dtype, b);
    variants.push({ dtype, file: b.record.file, bytes: b.bytes.byteLength, sizeRatio: b.bytes.byteLength / fp32.byteLength, ...acc });
  }
  const config: Record<string, unknown> = {
    producer: 'quantbook',
    modes: unique.filter((d) => d !== 'fp32'),
    per_channel: options.perChannel ?? true,
    reduce_range: [...built.values()].some((b) => b.record.reduce_range === true),
    variants: Object.fromEntries([...built].map(([d, b]) => [d, b.record])),
    ...(skipped.length ? { skipped: Object.fromEntries(skipped.map((x) => [x.dtype, x.reason])) } : {}),
  };
  const report = { inputs, variants: variants.map((v) => ({ dtype: v.dtype, file: v.file, bytes: v.bytes, size_ratio: v.sizeRatio, sqnr_db: v.sqnrDb, cosine: v.cosine, max_abs_error: v.maxAbsError, outputs: v.outputs })) };
  fs.mkdirSync(options.outDir, { recursive: true });
  const json = (o: unknown) => new TextEncoder().encode(`${JSON.stringify(o, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2)}\n`);
  const pending: PendingFile[] = [
    ...[...built].map(([, b]) => ({ path: path.join(options.outDir, b.record.file), write: (fd: number) => writeAll(fd, b.bytes) })),
    { path: path.join(options.outDir, CONFIG_FILE), write: (fd: number) => writeAll(fd, json(config)) },
    { path: path.join(options.outDir, REPORT_FILE), write: (fd: number) => writeAll(fd, json(report)) },
  ];
  writeFilesAtomically(pending);
  return { outDir: options.outDir, variants, skipped, config, inputs, files: pending.map((p) => p.path) };
}
