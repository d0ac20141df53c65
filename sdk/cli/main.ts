#!/usr/bin/env node
/**
 * The `quantbook` command. Subcommands grow with the SDK (see the README); today:
 *   inspect <model.onnx> [--json]   what the model holds and which layers are quantizable
 *   start                           the main job on the shipped PP-OCRv4 rec model
 */
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';
import { loadModel } from '../onnx/model';
import { Runner } from '../runtime/runner';
import { bundledModelPath } from '../models';
import { formatSummary, summarize } from './inspect';

const USAGE = `usage: quantbook <command>
  inspect <model.onnx> [--json]   layers, operators, quantizable ops, shapes
  start                           run the main job on the shipped PP-OCRv4 rec model`;

async function start(): Promise<void> {
  const file = bundledModelPath('rec');
  const model = loadModel(file);
  console.log(`PP-OCRv4 recognition model (${path.relative(process.cwd(), file)})`);
  console.log(formatSummary(summarize(model)));
  const runner = await Runner.create(model);
  const dims = [8, 3, 48, 320];
  const x = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b)).fill(0.5), dims);
  await runner.run({ x });
  const runs = 5;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) await runner.run({ x });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6 / runs;
  console.log(`ONNX Runtime CPU fp32, batch ${dims.join('x')}: ${ms.toFixed(1)} ms per batch`);
  console.log('Quantization (W8A8 to ONNX QDQ) joins this job when the W8A8 issue lands; see README.');
  await runner.dispose();
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'inspect': {
      const file = rest.find((a) => !a.startsWith('--'));
      if (!file) throw new QuantbookError('INVALID_ARGUMENT', `inspect: a model path is required\n${USAGE}`);
      const summary = summarize(loadModel(file));
      console.log(rest.includes('--json') ? JSON.stringify(summary, null, 2) : formatSummary(summary));
      return 0;
    }
    case 'start':
      await start();
      return 0;
    case undefined: case '--help': case '-h':
      console.log(USAGE);
      return command ? 0 : 2;
    default:
      console.error(`unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(e instanceof QuantbookError ? `quantbook: ${e.message}` : e);
    process.exit(1);
  },
);
