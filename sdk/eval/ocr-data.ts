/**
 * The OCR data shipped in data/ (made by data/make-ocr-data.ts), loaded and preprocessed
 * for the PP-OCR models: rec line batches, the cls set with its labels, det pages.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { readImage } from './image';
import { clsInput, detInput, recInput } from './ppocr';

/** data/ of this package. */
export const DATA_DIR = path.join(__dirname, '..', '..', '..', 'data');

export function pngFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.png')).sort();
}

/** labels.json of a data folder, in file-name order. */
export function folderLabels(dir: string): string[] {
  const labels: Record<string, string> = JSON.parse(fs.readFileSync(path.join(dir, 'labels.json'), 'utf8'));
  return pngFiles(dir).map((f) => labels[f]);
}

/** Rec batches of `size` lines from a folder of line images. */
export function recBatches(dir: string, size = 8): Array<{ x: ort.Tensor }> {
  const files = pngFiles(dir);
  const out: Array<{ x: ort.Tensor }> = [];
  for (let i = 0; i < files.length; i += size) out.push({ x: recInput(files.slice(i, i + size).map((f) => readImage(path.join(dir, f)))) });
  return out;
}

/** All cls lines as one batch, with their labels ('0' or '180'). */
export function clsSet(dir = path.join(DATA_DIR, 'cls')): { x: ort.Tensor; expected: string[] } {
  return { x: clsInput(pngFiles(dir).map((f) => readImage(path.join(dir, f)))), expected: folderLabels(dir) };
}

export function detPages(dir = path.join(DATA_DIR, 'det')): Array<{ x: ort.Tensor }> {
  return pngFiles(dir).map((f) => ({ x: detInput(readImage(path.join(dir, f))) }));
}
