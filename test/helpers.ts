/** Shared test fixtures: the real models, deterministic inputs, temp folders, onnx.checker. */
import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { bundledModelPath } from '../sdk/models';
import { int8ProductsExact } from '../sdk/runtime/cpu-features';
import { seededRandom } from '../sdk/util/seeded-random';

export const MODELS = {
  det: bundledModelPath('det'),
  rec: bundledModelPath('rec'),
  cls: bundledModelPath('cls'),
  vad: bundledModelPath('vad'),
};
export const OCR_KEYS = bundledModelPath('recKeys');

export { seededRandom };

export function randomFloats(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = seededRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

function imageFeed(dims: number[], seed: number): Record<string, ort.Tensor> {
  return { x: new ort.Tensor('float32', randomFloats(dims.reduce((a, b) => a * b), seed), dims) };
}

/** Inputs each real model accepts, at sizes that keep tests quick. */
export const FEEDS: Record<keyof typeof MODELS, () => Record<string, ort.Tensor>> = {
  det: () => imageFeed([1, 3, 96, 128], 1),
  rec: () => imageFeed([2, 3, 48, 160], 2),
  cls: () => imageFeed([2, 3, 48, 192], 3),
  vad: () => ({
    input: new ort.Tensor('float32', randomFloats(512, 4, -0.3, 0.3), [1, 512]),
    sr: new ort.Tensor('int64', BigInt64Array.of(16000n), []),
    h: new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]),
    c: new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]),
  }),
};

export function tempDir(prefix = 'quantbook-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Byte-level equality of two ORT tensors' data. */
export function sameBytes(a: ort.Tensor, b: ort.Tensor): boolean {
  const da = a.data as ArrayBufferView;
  const db = b.data as ArrayBufferView;
  if (a.type !== b.type || da.byteLength !== db.byteLength) return false;
  return Buffer.compare(Buffer.from(da.buffer, da.byteOffset, da.byteLength), Buffer.from(db.buffer, db.byteOffset, db.byteLength)) === 0;
}

export async function runModel(model: string | Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const s = typeof model === 'string' ? await ort.InferenceSession.create(model) : await ort.InferenceSession.create(model);
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

const SYSTEM_PYTHON = '/usr/bin/python3';

/** True when Debian's python3-onnx is installed (CI installs it; see .ci/run). */
export function hasOnnxChecker(): boolean {
  try {
    execFileSync(SYSTEM_PYTHON, ['-c', 'import onnx'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Runs onnx.checker.check_model on a file (full_check also runs shape inference). Throws on rejection. */
export function onnxCheck(file: string): void {
  // check_model(path, full_check=True) in onnx 1.12 writes the shape-inferred model back over
  // the file it checks; infer shapes into a temporary file instead, so a check never edits the model under test
  const script = [
    'import onnx, os, sys, tempfile',
    'onnx.checker.check_model(sys.argv[1])',
    'fd, out = tempfile.mkstemp(suffix=".onnx", dir=os.path.dirname(os.path.abspath(sys.argv[1]))); os.close(fd)',
    'try: onnx.shape_inference.infer_shapes_path(sys.argv[1], out, check_type=True, strict_mode=True)',
    'finally: os.remove(out)',
  ].join('\n');
  execFileSync(SYSTEM_PYTHON, ['-c', script, file], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** In CI the checker must be there; on a developer machine without it the test is skipped. */
export function requireChecker(ctx: Mocha.Context): void {
  if (hasOnnxChecker()) return;
  if (process.env.CI) throw new Error('python3-onnx (onnx.checker) is missing; .ci/run installs it with apt-get');
  ctx.skip();
}

/** Runs a Python snippet under Debian's python3 (numpy comes with python3-onnx) and returns its stdout. */
export function runPython(script: string, args: string[] = []): string {
  return execFileSync(SYSTEM_PYTHON, ['-c', script, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * ORT's int8 kernels compute exactly only with VNNI (or off x86); on AVX2 alone u8×s8 pair sums
 * saturate in int16, so a QDQ model's score may move a little from what the float simulation says.
 * Exact where the kernels are exact, within `tolerance` (accuracy points as a fraction) elsewhere.
 */
export function assertSameScoreOnOrt(score: number, expected: number, message: string, tolerance = 0.005): void {
  if (int8ProductsExact()) assert.equal(score, expected, message);
  else assert.ok(Math.abs(score - expected) <= tolerance, `${message}: ${score} vs ${expected} (x86 without VNNI: within ${tolerance})`);
}
