/**
 * Command line of the decoder generator (test/llm/decoder.ts), for the bench and by hand:
 *
 *   npm run build
 *   node dist/test/llm/make-decoder.js --shape tiny|tinyllama|7b --out <dir>
 *        [--seed N] [--tied] [--part-size <MiB>] [--model-name model.onnx] [--quiet]
 *
 * Prints one JSON line: files, parameters, data bytes, seconds and the process's peak RSS
 * (VmHWM from /proc/self/status).
 */
import * as fs from 'fs';
import { SHAPES, ShapeName, generateDecoder } from './decoder';

export function peakRssBytes(): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

function usage(msg: string): never {
  process.stderr.write(`${msg}\nusage: make-decoder --shape ${Object.keys(SHAPES).join('|')} --out <dir> [--seed N] [--tied] [--part-size <MiB>] [--model-name model.onnx] [--quiet]\n`);
  process.exit(2);
}

function main(argv: string[]): void {
  let shape: ShapeName | undefined;
  let out: string | undefined;
  let seed = 0;
  let tied = false;
  let partBytes: number | undefined;
  let modelName: string | undefined;
  let quiet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    if (a === '--shape') {
      const v = value();
      if (!(v in SHAPES)) usage(`--shape: got "${v}"; expected one of ${Object.keys(SHAPES).join(', ')}`);
      shape = v as ShapeName;
    } else if (a === '--out') out = value();
    else if (a === '--seed') seed = Number(value());
    else if (a === '--tied') tied = true;
    else if (a === '--part-size') {
      const mib = Number(value());
      if (!(mib > 0)) usage(`--part-size: expected a positive number of MiB`);
      partBytes = Math.floor(mib * 2 ** 20);
    } else if (a === '--model-name') modelName = value();
    else if (a === '--quiet') quiet = true;
    else usage(`unknown argument "${a}"`);
  }
  if (!shape) usage('--shape is required');
  if (!out) usage('--out is required');

  const t0 = process.hrtime.bigint();
  let lastPct = -1;
  const res = generateDecoder(out, {
    shape, seed, tiedEmbeddings: tied, partBytes, modelName,
    onChunk: quiet ? undefined : (_name, _bytes, done, total) => {
      const pct = Math.floor((100 * done) / total);
      if (pct !== lastPct && process.stderr.isTTY) {
        lastPct = pct;
        process.stderr.write(`\r${pct}% of ${(total / 2 ** 30).toFixed(2)} GiB`);
      }
    },
  });
  if (!quiet) process.stderr.write('\n');
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const rss = peakRssBytes();
  console.log(JSON.stringify({
    model: res.modelPath, dataFiles: res.dataFiles, shape, params: res.params, dataBytes: res.dataBytes,
    outlierChannels: res.outlierChannels, seconds: Number(seconds.toFixed(2)), peakRssBytes: rss,
    peakRssOverData: rss !== undefined ? Number((rss / res.dataBytes).toFixed(4)) : undefined,
  }));
}

if (require.main === module) main(process.argv.slice(2));
