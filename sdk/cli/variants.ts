/**
 * `quantbook variants <model.onnx> --out <dir> [--dtypes fp16,q8,…] [--data <folder>]`: the dtype
 * variants Transformers.js loads (variants/variants.ts), and a table of their size and accuracy.
 */
import { QuantbookError } from '../errors';
import { BUILT_DTYPES, VARIANT_DTYPES, VariantDtype, makeVariants } from '../variants/variants';
import { parseArgs, positiveInt, requirePositional } from './args';

export const VARIANTS_OPTIONS = { out: 'value', dtypes: 'value', data: 'value', 'max-batches': 'value', 'per-channel': 'value', 'reduce-range': 'flag', 'fp16-target': 'value', json: 'flag', quiet: 'flag' } as const;

export const VARIANTS_USAGE = `  variants <model.onnx> --out <folder> [--dtypes ${VARIANT_DTYPES.filter((d) => d !== 'fp32').join(',')}] [--data <folder>] [--max-batches N]
           [--per-channel true|false] [--reduce-range] [--fp16-target cpu|any]   Transformers.js dtype variants + quantize_config.json`;

function formatRows(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((v, c) => v.padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}

export async function variantsCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, VARIANTS_OPTIONS, 'variants');
  const [modelPath] = requirePositional(args, 1, 'one model path', 'variants');
  const out = args.values.get('out');
  if (!out) throw new QuantbookError('INVALID_ARGUMENT', 'variants: --out <folder> is required');
  const named = args.values.has('dtypes');
  const dtypes = named ? args.values.get('dtypes')!.split(',').map((s) => s.trim()).filter(Boolean) : [...BUILT_DTYPES];
  const bad = dtypes.filter((d) => !(VARIANT_DTYPES as readonly string[]).includes(d));
  if (bad.length || !dtypes.length) throw new QuantbookError('INVALID_ARGUMENT', `--dtypes: got "${args.values.get('dtypes')}"; expected a comma-separated list of ${VARIANT_DTYPES.join(', ')}`);
  // the fp32 copy is always written: it is what the others are measured against
  const wanted = [...new Set(['fp32', ...dtypes])] as VariantDtype[];
  const pc = args.values.get('per-channel');
  if (pc !== undefined && pc !== 'true' && pc !== 'false') throw new QuantbookError('INVALID_ARGUMENT', `--per-channel: got "${pc}"; expected true or false`);
  const target = args.values.get('fp16-target');
  if (target !== undefined && target !== 'cpu' && target !== 'any') throw new QuantbookError('INVALID_ARGUMENT', `--fp16-target: got "${target}"; expected cpu or any`);
  const progress = !!process.stderr.isTTY && !args.flags.has('json') && !args.flags.has('quiet');
  const result = await makeVariants(modelPath, {
    // without --dtypes, the default set skips (and names) what the model has nothing for
    outDir: out, dtypes: named ? wanted : undefined, data: args.values.get('data'), maxBatches: positiveInt(args.values.get('max-batches'), 'max-batches'),
    perChannel: pc === undefined ? undefined : pc === 'true', reduceRange: args.flags.has('reduce-range'), fp16Target: target as 'cpu' | 'any' | undefined,
    onProgress: progress ? (p) => process.stderr.write(`${p.step === 'build' ? 'building' : 'measuring'} ${p.dtype}\n`) : undefined,
  });
  if (args.flags.has('json')) {
    console.log(JSON.stringify({ model: modelPath, out, inputs: result.inputs, files: result.files, skipped: result.skipped, variants: result.variants.map(({ dtype, file, bytes, sizeRatio, sqnrDb, cosine }) => ({ dtype, file, bytes, sizeRatio, sqnrDb, cosine })) }, null, 2));
  } else if (!args.flags.has('quiet')) {
    const table = formatRows([['dtype', 'file', 'size', 'x fp32', 'SQNR dB', 'cosine'],
      ...result.variants.map((v) => [v.dtype, v.file, `${(v.bytes / 1024).toFixed(1)} KiB`, v.sizeRatio.toFixed(3), Number.isFinite(v.sqnrDb) ? v.sqnrDb.toFixed(2) : 'inf', v.cosine.toFixed(6)])]);
    const skipped = result.skipped.map((x) => `  skipped ${x.dtype}: ${x.reason}\n`).join('');
    console.log(`${table}\naccuracy vs fp32 on ${result.inputs}\n${skipped}${result.files.map((f) => `  wrote ${f}`).join('\n')}`);
  }
  return 0;
}
