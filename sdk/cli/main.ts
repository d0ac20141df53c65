#!/usr/bin/env node
/**
 * The `quantbook` command. Subcommands grow with the SDK (see the README); today:
 *   inspect <model.onnx> [--json]   what the model holds and which layers are quantizable
 *   start                           the main job on the shipped PP-OCRv4 rec model
 */
import { QuantbookError } from '../errors';
import { loadModel } from '../onnx/model';
import { runStart } from './start';
import { formatSummary, summarize } from './inspect';

const USAGE = `usage: quantbook <command>
  inspect <model.onnx> [--json]   layers, operators, quantizable ops, shapes
  start [out/]                    quantize the shipped PP-OCRv4 rec model, evaluate it, write out/`;

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
      await runStart(rest.find((a) => !a.startsWith('--')) ?? 'out');
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
