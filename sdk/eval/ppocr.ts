/**
 * PaddleOCR pre- and post-processing for the PP-OCR models quantbook ships with:
 * recognition (48-pixel lines, CTC decoding), direction classification (0°/180°) and
 * detection (probability map). Pixels are fed BGR, as PaddleOCR's OpenCV pipeline does.
 */
import * as fs from 'fs';
import * as ort from 'onnxruntime-node';
import { RgbaImage, resizeImage, writeNormalizedChw } from './image';

function lineBatch(images: RgbaImage[], height: number, width: number): ort.Tensor {
  const out = new Float32Array(images.length * 3 * height * width);
  images.forEach((img, i) => {
    const w = Math.min(width, Math.ceil((height * img.width) / img.height));
    writeNormalizedChw(resizeImage(img, w, height), out, i * 3 * height * width, width, { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], channelOrder: 'bgr' });
  });
  return new ort.Tensor('float32', out, [images.length, 3, height, width]);
}

/** PP-OCRv4 rec input: lines resized to height 48 (aspect kept), padded to width 320. */
export function recInput(images: RgbaImage[], width = 320): ort.Tensor {
  return lineBatch(images, 48, width);
}

/** PP-OCR cls input: 48 × 192. */
export function clsInput(images: RgbaImage[]): ort.Tensor {
  return lineBatch(images, 48, 192);
}

/** PP-OCRv4 det input: sides rounded to multiples of 32, ImageNet mean/std. */
export function detInput(img: RgbaImage): ort.Tensor {
  const h = Math.max(32, Math.round(img.height / 32) * 32);
  const w = Math.max(32, Math.round(img.width / 32) * 32);
  const out = new Float32Array(3 * h * w);
  writeNormalizedChw(resizeImage(img, w, h), out, 0, w, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], channelOrder: 'bgr' });
  return new ort.Tensor('float32', out, [1, 3, h, w]);
}

/** The rec model's character table: blank, the key file's characters, then space. */
export function loadRecKeys(file: string): string[] {
  const lines = fs.readFileSync(file, 'utf8').split(/\r?\n/);
  if (lines[lines.length - 1] === '') lines.pop();
  return ['', ...lines, ' '];
}

/** Greedy CTC decoding of [N, T, C] probabilities: best class per step, repeats merged, blanks dropped. */
export function ctcDecode(probs: ort.Tensor, keys: string[]): string[] {
  const [n, t, c] = probs.dims as number[];
  const data = probs.data as Float32Array;
  const texts: string[] = [];
  for (let b = 0; b < n; b++) {
    let text = '';
    let prev = -1;
    for (let s = 0; s < t; s++) {
      const base = (b * t + s) * c;
      let best = 0;
      for (let k = 1; k < c; k++) if (data[base + k] > data[base + best]) best = k;
      if (best !== 0 && best !== prev) text += keys[best] ?? '';
      prev = best;
    }
    texts.push(text);
  }
  return texts;
}

/** cls output [N, 2] → '0' or '180' per line. */
export function clsLabels(probs: ort.Tensor): string[] {
  const d = probs.data as Float32Array;
  return Array.from({ length: probs.dims[0] }, (_, i) => (d[2 * i + 1] > d[2 * i] ? '180' : '0'));
}
