/**
 * The `quantbook` subcommands that work on the user's own model and data:
 *   quantize   model + calibration data (+ session config file or flags) → output folder
 *   calibrate  statistics only → .arrow
 *   compare    fp32 vs quantized, per layer
 *   report     quantize + compare → self-contained HTML
 * Results go to stdout (a table, or JSON with --json); progress to stderr on a TTY.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError, requireObject } from '../errors';
import { readJsonFile } from '../util/json-file';
import { CalibrationSource, batchesFrom, isBatchFile } from '../calibration/data';
import { calibrate } from '../calibration/calibrator';
import { OBSERVER_KINDS, ObserverKind } from '../observers';
import { Model, loadModel } from '../onnx/model';
import { compareModels, LayerComparison } from '../quantize/compare';
import { worstFirst } from '../quantize/attribution';
import { QUANTIZABLE_OP_TYPES } from '../quantize/layers';
import { ACT_METHODS, OP_SETS } from '../quantize/w8a8';
import { DEVICES, SAVE_TYPES, normalizeSessionConfig, SessionConfig } from '../session/config';
import { runSession } from '../session/session';
import { renderReport } from '../export/report';
import { ParsedArgs, numberList, parseArgs, positiveInt, requirePositional, wholeNumber } from './args';
import { ProgressBar } from './progress';

const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg'];

const DATA_OPTIONS = { data: 'value', 'image-size': 'value', mean: 'value', std: 'value', bgr: 'flag', 'batch-size': 'value', json: 'flag', quiet: 'flag' } as const;

/** --data folder: .npy/.json batches, or images with --image-size HxW [--mean --std --bgr --batch-size]. */
function dataSource(args: ParsedArgs, command: string): { source: CalibrationSource; dir: string } {
  const dir = args.values.get('data');
  if (!dir) throw new QuantbookError('INVALID_ARGUMENT', `${command}: --data <folder> is required (a folder of .npy/.json batches, or of images with --image-size HxW)`);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new QuantbookError('FILE_NOT_FOUND', `${command}: --data folder not found: ${dir}`);
  const files = fs.readdirSync(dir);
  const hasBatches = files.some(isBatchFile);
  const hasImages = files.some((f) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase()));
  const size = args.values.get('image-size');
  if (!hasBatches && hasImages) {
    if (!size) throw new QuantbookError('INVALID_ARGUMENT', `${command}: ${dir} holds images; say how to feed them with --image-size HxW (and --mean r,g,b --std r,g,b --bgr --batch-size N as the model expects)`);
    const [h, w] = numberList(size, 2, 'image-size');
    const triple = (name: string) => (args.values.has(name) ? (numberList(args.values.get(name)!, 3, name) as [number, number, number]) : undefined);
    return { dir, source: { imageFolder: dir, preprocess: { size: [h, w], mean: triple('mean'), std: triple('std'), channelOrder: args.flags.has('bgr') ? 'bgr' : 'rgb', batchSize: positiveInt(args.values.get('batch-size'), 'batch-size') } } };
  }
  return { dir, source: dir };
}

function output(args: ParsedArgs, json: unknown, text: string): void {
  if (args.flags.has('json')) console.log(JSON.stringify(json, null, 2));
  else if (!args.flags.has('quiet')) console.log(text);
}

function progress(args: ParsedArgs, label: string): ProgressBar {
  return new ProgressBar(label, undefined, !!process.stderr.isTTY && !args.flags.has('json') && !args.flags.has('quiet'));
}

function list(v: string | undefined): string[] {
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : [];
}

function formatRows(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((v, c) => v.padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}

const QUANTIZE_OPTIONS = { ...DATA_OPTIONS, config: 'value', method: 'value', dynamic: 'flag', 'op-set': 'value', 'speed-fallback': 'flag', disable: 'value', device: 'value', 'save-type': 'value', out: 'value', report: 'flag' } as const;

/** The SessionConfig from --config, or from the flags that mirror the fluent API. */
function sessionConfig(args: ParsedArgs, file: ConfigFile | undefined, calibData: CalibrationSource | undefined, out: string): SessionConfig {
  const saveType = args.values.has('save-type') ? list(args.values.get('save-type')) : [...SAVE_TYPES];
  if (file) {
    const conflicting = ['method', 'op-set', 'disable', 'device'].filter((k) => args.values.has(k)).concat(['dynamic', 'speed-fallback'].filter((k) => args.flags.has(k)));
    if (conflicting.length) throw new QuantbookError('INVALID_ARGUMENT', `quantize: --config sets the processors; drop ${conflicting.map((c) => `--${c}`).join(', ')} or put them in the config`);
    const map = { ...file.processors };
    if (!map.save) map.save = { output_path: out, save_type: saveType };
    const saveSection = map.save as Record<string, unknown> | null;
    const configured = saveSection && typeof saveSection === 'object' ? saveSection.output_path ?? saveSection.outputPath : undefined;
    if (typeof configured === 'string' && path.resolve(configured) !== path.resolve(out)) {
      throw new QuantbookError('INVALID_ARGUMENT', `quantize: the config's save.output_path "${configured}" and --out "${out}" name two folders; give one (outputs and the report go to the same folder)`);
    }
    return normalizeSessionConfig({ ...file.raw, processorCfgMap: undefined, processor_cfg_map: map, calib_data: calibData });
  }
  const method = args.values.get('method') ?? 'minmax';
  const disable = list(args.values.get('disable'));
  // the CLI spells the third method 'mixed' for both; msModelSlim's dynamic processors spell it 'mix'
  const processor = args.flags.has('dynamic')
    ? { w8a8_dynamic: { cfg: { act_method: method === 'mixed' ? 'mix' : method }, disable_names: disable } }
    : { w8a8: { cfg: { act_method: method, op_set: args.values.get('op-set') ?? 'amct', speed_fallback: args.flags.has('speed-fallback') }, disable_names: disable } };
  if (args.flags.has('dynamic') && args.flags.has('speed-fallback')) throw new QuantbookError('INVALID_ARGUMENT', '--speed-fallback: applies to static W8A8 (drop --dynamic)');
  if (!(ACT_METHODS as readonly string[]).includes(method)) throw new QuantbookError('INVALID_ARGUMENT', `--method: got "${method}"; expected one of ${ACT_METHODS.join(', ')}`);
  if (args.values.has('op-set') && !(OP_SETS as readonly string[]).includes(args.values.get('op-set')!)) throw new QuantbookError('INVALID_ARGUMENT', `--op-set: got "${args.values.get('op-set')}"; expected one of ${OP_SETS.join(', ')}`);
  const device = args.values.get('device') ?? 'cpu';
  if (!(DEVICES as readonly string[]).includes(device)) throw new QuantbookError('INVALID_ARGUMENT', `--device: got "${device}"; expected one of ${DEVICES.join(', ')}`);
  return normalizeSessionConfig({ processor_cfg_map: { ...processor, save: { output_path: out, save_type: saveType } }, calib_data: calibData, device });
}

interface ConfigFile { raw: Record<string, unknown>; processors: Record<string, unknown> }

/** A session config file as JSON (validated when combined with the data), and its processor map under either spelling. */
function readConfigFile(file: string): ConfigFile {
  const raw = requireObject(readJsonFile(file, '--config: session config'), file);
  if ('calib_data' in raw || 'calibData' in raw) throw new QuantbookError('INVALID_ARGUMENT', `${file}: calib_data comes from --data on the command line; remove it from the file`);
  return { raw, processors: (raw.processor_cfg_map ?? raw.processorCfgMap ?? {}) as Record<string, unknown> };
}


const REPORT_FILE = 'report.html';

async function quantizeCommand(argv: string[], command: 'quantize' | 'report'): Promise<number> {
  const args = parseArgs(argv, QUANTIZE_OPTIONS, command);
  const [modelPath] = requirePositional(args, 1, 'one model path', command);
  const out = args.values.get('out');
  if (!out) throw new QuantbookError('INVALID_ARGUMENT', `${command}: --out <folder> is required`);
  const file = args.values.has('config') ? readConfigFile(args.values.get('config')!) : undefined;
  const fileMap = file?.processors ?? {};
  const dynamic = args.flags.has('dynamic') || ('w8a8_dynamic' in fileMap && !('w8a8' in fileMap));
  const data = dynamic && !args.values.has('data') ? undefined : dataSource(args, command);
  const config = sessionConfig(args, file, data?.source, out);
  const withReport = command === 'report' || args.flags.has('report');
  const bar = progress(args, 'calibrating');
  // with a report, the session saves nothing yet: the report is published in the same set as the models
  const result = await runSession(modelPath, config, { onProgress: (p) => bar.update(p.batch), deferSave: withReport, reserve: withReport ? [REPORT_FILE] : [] });
  bar.done();
  const save = config.processorCfgMap.save!;
  let comparison: LayerComparison[] | undefined;
  let files: string[];
  if (withReport) {
    if (data) {
      const cmp = progress(args, 'comparing');
      comparison = await result.compare(data.source);
      cmp.done();
    }
    const report = (file: string) => fs.writeFileSync(file, renderReport(result.reportInput({ title: `quantbook report: ${path.basename(modelPath)}`, model: modelPath, comparison })));
    files = result.save(save.outputPath, save, [{ name: REPORT_FILE, write: report }]).files;
  } else {
    files = result.saved?.files ?? result.save(save.outputPath, save).files;
  }
  const speed = result.extras.speedFallback;
  const speedLine = speed ? `\nspeed fallback: ${speed.keptFloat.length} of ${speed.layers.length} layers kept float (int8 slower on this CPU); latency fp32 ${speed.latencyMs.float.toFixed(2)} ms, all-int8 ${speed.latencyMs.allInt8.toFixed(2)} ms${speed.latencyMs.mixed !== undefined ? `, mixed ${speed.latencyMs.mixed.toFixed(2)} ms` : ''}: kept ${speed.chosen}` : '';
  output(args, { model: modelPath, processor: result.kind, layers: result.layers.length, skipped: result.selection.skipped.length, files, comparison, ...(speed ? { speedFallback: speed } : {}) },
    `quantized ${result.layers.length} layers of ${modelPath} (${result.kind}; ${result.selection.skipped.length} kept in float)${speedLine}\n${files.map((f) => `  wrote ${f}`).join('\n')}`);
  return 0;
}

const CALIBRATE_OPTIONS = { ...DATA_OPTIONS, observer: 'value', 'per-channel': 'flag', symmetric: 'flag', signed: 'flag', bits: 'value', 'max-batches': 'value', 'histogram-sample': 'value', out: 'value' } as const;

async function calibrateCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, CALIBRATE_OPTIONS, 'calibrate');
  const [modelPath] = requirePositional(args, 1, 'one model path', 'calibrate');
  const out = args.values.get('out');
  if (!out || !out.endsWith('.arrow')) throw new QuantbookError('INVALID_ARGUMENT', 'calibrate: --out <stats.arrow> is required (an Arrow IPC file)');
  const observer = args.values.get('observer') ?? 'minmax';
  if (!(OBSERVER_KINDS as readonly string[]).includes(observer)) throw new QuantbookError('INVALID_ARGUMENT', `--observer: got "${observer}"; expected one of ${OBSERVER_KINDS.join(', ')}`);
  const { source } = dataSource(args, 'calibrate');
  const bar = progress(args, 'calibrating');
  const result = await calibrate(loadModel(modelPath), source, {
    observer: observer as ObserverKind,
    spec: { perChannel: args.flags.has('per-channel'), symmetric: args.flags.has('symmetric'), signed: args.flags.has('signed'), numBits: positiveInt(args.values.get('bits'), 'bits') ?? 8 },
    maxBatches: positiveInt(args.values.get('max-batches'), 'max-batches'),
    histogramSample: wholeNumber(args.values.get('histogram-sample'), 'histogram-sample'),
    onProgress: (p) => bar.update(p.batch),
  });
  bar.done();
  fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  result.save(out);
  const rows = result.rows();
  const tensors = new Set(rows.map((r) => r.tensor)).size;
  output(args, { model: modelPath, observer, tensors, rows: rows.length, file: out, metadata: result.metadata },
    `calibrated ${tensors} tensors of ${modelPath} with ${observer} over ${result.metadata.batches} batch${result.metadata.batches === '1' ? '' : 'es'}\n  wrote ${out}`);
  return 0;
}

const COMPARE_OPTIONS = { ...DATA_OPTIONS, 'max-batches': 'value' } as const;

/** Layers of the quantized model whose output tensor the float model also has. */
function sharedLayerOutputs(float: Model, quantized: Model): Array<{ layer: string; opType: string; tensor: string }> {
  const f = float.graph;
  const q = quantized.graph;
  return q.nodes
    .filter((n) => (QUANTIZABLE_OP_TYPES as readonly string[]).includes(n.op_type!) && n.output[0] && f.producer(n.output[0]) && !f.outputNames.includes(n.output[0]))
    .map((n) => ({ layer: n.name || n.output[0], opType: n.op_type!, tensor: n.output[0] }));
}

/**
 * The comparison in graph order (accumulated and own error side by side), then the layers where
 * error is born: the worst own SQNR first.
 */
function comparisonText(rows: LayerComparison[]): string {
  const db = (v: number) => (Number.isNaN(v) ? '—' : v.toFixed(2));
  const table = formatRows([['layer', 'op', 'SQNR dB', 'own SQNR dB', 'cosine', 'max |error|'],
    ...rows.map((r) => [r.opType === 'output' ? `(model output ${r.tensor})` : r.layer, r.opType, db(r.sqnrDb), db(r.localSqnrDb), r.cosine.toFixed(6), r.maxAbsError.toPrecision(4)])]);
  const worst = worstFirst(rows).slice(0, 5);
  if (!worst.length) return table;
  return `${table}\nwhere error is born (own SQNR: the layer fed the fp32 input), worst first: ${worst.map((r) => `${r.layer} ${r.localSqnrDb.toFixed(1)} dB`).join(', ')}`;
}

async function compareCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, COMPARE_OPTIONS, 'compare');
  const [floatPath, quantPath] = requirePositional(args, 2, 'two model paths: <float.onnx> <quantized.onnx>', 'compare');
  const { source } = dataSource(args, 'compare');
  const float = loadModel(floatPath);
  const quantized = loadModel(quantPath);
  const layers = sharedLayerOutputs(float, quantized);
  const max = positiveInt(args.values.get('max-batches'), 'max-batches');
  async function* limited() {
    let n = 0;
    for await (const b of batchesFrom(source, float.graph.inputNames)) {
      if (max && n++ >= max) return;
      yield b;
    }
  }
  const rows = await compareModels(float, quantized, layers, limited());
  output(args, rows, comparisonText(rows));
  return 0;
}

export const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  quantize: (a) => quantizeCommand(a, 'quantize'),
  report: (a) => quantizeCommand(a, 'report'),
  calibrate: calibrateCommand,
  compare: compareCommand,
};

export const COMMAND_USAGE = `  quantize <model.onnx> --data <folder> --out <folder> [--config session.json | --method minmax|histogram|mixed
           [--dynamic] [--op-set amct|extended|msmodelslim] [--speed-fallback] [--disable a,b*] [--device cpu|npu|cuda]] [--save-type safe_tensor,onnx,...] [--report]
  calibrate <model.onnx> --data <folder> --out <stats.arrow> [--observer ${OBSERVER_KINDS.join('|')}] [--per-channel] [--symmetric] [--signed] [--bits N] [--max-batches N] [--histogram-sample N (0: every value)]
  compare <float.onnx> <quantized.onnx> --data <folder> [--max-batches N]
  report <model.onnx> --data <folder> --out <folder> [quantize options]   quantize, compare, write report.html
  data: a folder of .npy/.json batches, or of images with --image-size HxW [--mean r,g,b] [--std r,g,b] [--bgr] [--batch-size N]
        (labels.json and other metadata files are not batches; formats: docs/formats.md)
  every command: --json (machine-readable result on stdout), --quiet`;
