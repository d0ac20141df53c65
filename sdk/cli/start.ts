/**
 * `npm start`: the main job on a fresh clone. Quantizes the shipped PP-OCRv4 recognition model
 * (W8A8, default config) on data/rec/calib, evaluates fp32 and int8 on data/rec/held, writes
 * out/ (QDQ and fake-quant ONNX, msModelSlim safetensors + description, stats .arrow,
 * report.html) and prints accuracy, latency and size side by side.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { bundledModelPath } from '../models';
import { DATA_DIR, folderLabels, recBatches } from '../eval/ocr-data';
import { characterAccuracy, exactMatchRate } from '../eval/metrics';
import { ctcDecode, loadRecKeys } from '../eval/ppocr';
import { session } from '../session/session';
import { dataHashOf } from '../calibration/calibrator';
import { writeReport } from '../export/report';

const DATA = path.join(DATA_DIR, 'rec');

async function evaluate(model: string, held: Array<{ x: ort.Tensor }>, keys: string[]): Promise<{ texts: string[]; msPerBatch: number }> {
  const s = await ort.InferenceSession.create(model);
  const texts: string[] = [];
  for (const b of held) texts.push(...ctcDecode(Object.values(await s.run(b))[0], keys));
  // latency: median of repeated runs on one full batch, after the loop above warmed the session
  const times: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t0 = process.hrtime.bigint();
    await s.run(held[0]);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  await s.release();
  return { texts, msPerBatch: times.sort((a, b) => a - b)[3] };
}

function progressLine(text: string): void {
  if (process.stdout.isTTY) process.stdout.write(`\r${text}`);
}

export async function runStart(outDir = 'out'): Promise<void> {
  const started = Date.now();
  const modelPath = bundledModelPath('rec');
  const keys = loadRecKeys(bundledModelPath('recKeys'));
  const truth = folderLabels(path.join(DATA, 'held'));
  const calib = recBatches(path.join(DATA, 'calib'));
  const held = recBatches(path.join(DATA, 'held'));
  console.log(`quantbook: W8A8 (int8 weights per channel, uint8 activations, minmax) on PP-OCRv4 rec`);
  console.log(`  calibration: ${calib.length} batches of data/rec/calib; evaluation: ${truth.length} lines of data/rec/held`);

  const s = session(modelPath, { calibData: calib }).w8a8('minmax').onProgress((p) => progressLine(`  calibrating: batch ${p.batch}/${calib.length}`));
  const result = await s.run();
  if (process.stdout.isTTY) process.stdout.write('\n');
  const { files } = result.save(outDir);
  const qdqFile = files.find((f) => f.endsWith('_w8a8.onnx'))!;
  const floatFile = path.join(outDir, 'ch_PP-OCRv4_rec_infer_fp32_prepared.onnx');
  result.float.save(floatFile);

  const fp32 = await evaluate(modelPath, held, keys);
  const int8 = await evaluate(qdqFile, held, keys);
  const size = (f: string) => fs.statSync(f).size / 2 ** 20;
  const rows = [
    ['', 'fp32', 'int8 (QDQ)'],
    ['exact text match vs labels', pct(exactMatchRate(fp32.texts, truth)), pct(exactMatchRate(int8.texts, truth))],
    ['character accuracy', pct(characterAccuracy(fp32.texts, truth)), pct(characterAccuracy(int8.texts, truth))],
    ['int8 text = fp32 text', '', pct(exactMatchRate(int8.texts, fp32.texts))],
    [`latency, batch ${held[0].x.dims.join('x')} (ORT CPU)`, `${fp32.msPerBatch.toFixed(1)} ms`, `${int8.msPerBatch.toFixed(1)} ms (${(fp32.msPerBatch / int8.msPerBatch).toFixed(2)}x)`],
    ['model size', `${size(modelPath).toFixed(2)} MB`, `${size(qdqFile).toFixed(2)} MB (${(size(modelPath) / size(qdqFile)).toFixed(2)}x smaller)`],
  ];
  progressLine('  comparing layers for the report…');
  const comparison = await result.compare(held.slice(0, 2));
  if (process.stdout.isTTY) process.stdout.write('\r\x1b[K');
  files.push(writeReport(path.join(outDir, 'report.html'), result.reportInput({
    title: 'quantbook: PP-OCRv4 rec, W8A8 (minmax)',
    model: path.relative(process.cwd(), modelPath),
    data: { description: 'data/rec/calib (calibration), data/rec/held (evaluation)', hash: result.calibration && dataHashOf(result.calibration.metadata), batches: calib.length },
    comparison,
    accuracy: rows.slice(1).map((r) => ({ metric: r[0], fp32: r[1], int8: r[2] })),
    files: files.map((f) => path.relative(outDir, f)),
  })));
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log('');
  for (const r of rows) console.log(`  ${r.map((v, c) => v.padEnd(widths[c])).join('  ').trimEnd()}`);
  console.log('');
  console.log(`  wrote ${[...files, floatFile].map((f) => path.relative(process.cwd(), f)).join(', ')}`);
  console.log(`  done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

function pct(v: number): string {
  return `${(100 * v).toFixed(2)}%`;
}
