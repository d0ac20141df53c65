#!/usr/bin/env node
/**
 * The `quantbook` command: quantize, calibrate, compare, report, variants, inspect, start.
 * Exit codes: 0 done; 1 failed while running (ONNX Runtime, I/O); 2 bad input (usage, missing
 * file, bad config key or value — the message names what is allowed); 3 not supported here
 * (e.g. device 'npu' without CANN, a processor this version does not run).
 */
import { ErrorCode, QuantbookError } from '../errors';
import { COMMANDS, COMMAND_USAGE } from './commands';
import { loadModel } from '../onnx/model';
import { runStart } from './start';
import { formatSummary, summarize } from './inspect';
import { VARIANTS_USAGE, variantsCommand } from './variants';

const USAGE = `usage: quantbook <command>
${COMMAND_USAGE}
${VARIANTS_USAGE}
  inspect <model.onnx> [--json]   layers, operators, quantizable ops, shapes
  start [out/]                    quantize the shipped PP-OCRv4 rec model, evaluate it, write out/`;

const EXIT_CODES: Partial<Record<ErrorCode, number>> = { INVALID_ARGUMENT: 2, FILE_NOT_FOUND: 2, INVALID_MODEL: 2, UNKNOWN_TENSOR: 2, GRAPH_INVALID: 2, UNSUPPORTED: 3, LOCKED: 4 };

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
    case 'variants':
      return variantsCommand(rest);
    case 'quantize': case 'calibrate': case 'compare': case 'report':
      return COMMANDS[command](rest);
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
    process.exit(e instanceof QuantbookError ? EXIT_CODES[e.code] ?? 1 : 1);
  },
);
