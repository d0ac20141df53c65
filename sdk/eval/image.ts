/**
 * Image files to RGBA pixels (PNG via pngjs, JPEG via jpeg-js: pure JavaScript, so results are
 * the same on every machine), and bilinear resizing with half-pixel centres (OpenCV's
 * INTER_LINEAR convention, which PaddleOCR's preprocessing uses).
 */
import * as fs from 'fs';
import * as path from 'path';
import { PNG } from 'pngjs';
import * as jpeg from 'jpeg-js';
import { QuantbookError } from '../errors';

export interface RgbaImage { width: number; height: number; data: Uint8ClampedArray | Uint8Array }

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg'];

export function readImage(file: string): RgbaImage {
  if (!fs.existsSync(file)) throw new QuantbookError('FILE_NOT_FOUND', `image not found: ${file}`);
  const ext = path.extname(file).toLowerCase();
  const bytes = fs.readFileSync(file);
  try {
    if (ext === '.png') {
      const png = PNG.sync.read(bytes);
      return { width: png.width, height: png.height, data: png.data };
    }
    if (ext === '.jpg' || ext === '.jpeg') {
      const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true });
      return { width: img.width, height: img.height, data: img.data };
    }
  } catch (e) {
    throw new QuantbookError('INVALID_ARGUMENT', `${file}: not a readable ${ext.slice(1).toUpperCase()} image (${(e as Error).message})`);
  }
  throw new QuantbookError('UNSUPPORTED', `${file}: image type ${ext || '(none)'} is not supported; use one of ${IMAGE_EXTENSIONS.join(', ')}`);
}

/** Bilinear resize to width × height (RGBA), sampling at pixel centres. */
export function resizeImage(src: RgbaImage, width: number, height: number): RgbaImage {
  if (src.width === width && src.height === height) return src;
  const out = new Uint8ClampedArray(width * height * 4);
  const sx = src.width / width;
  const sy = src.height / height;
  for (let y = 0; y < height; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), src.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, src.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), src.width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, src.width - 1);
      const wx = fx - x0;
      const a = (y0 * src.width + x0) * 4;
      const b = (y0 * src.width + x1) * 4;
      const c = (y1 * src.width + x0) * 4;
      const d = (y1 * src.width + x1) * 4;
      const o = (y * width + x) * 4;
      for (let k = 0; k < 4; k++) {
        const top = src.data[a + k] + (src.data[b + k] - src.data[a + k]) * wx;
        const bottom = src.data[c + k] + (src.data[d + k] - src.data[c + k]) * wx;
        out[o + k] = top + (bottom - top) * wy;
      }
    }
  }
  return { width, height, data: out };
}

/**
 * Writes an image into a [3, height, fullWidth] plane set of `out` at `offset` (NCHW), each channel
 * scaled to 0..1 then normalised as (v − mean) / std; columns past the image width are left as
 * they are (zero padding in a fresh array).
 */
export function writeNormalizedChw(
  img: RgbaImage, out: Float32Array, offset: number, fullWidth: number,
  norm: { mean: readonly number[]; std: readonly number[]; channelOrder: 'rgb' | 'bgr' },
): void {
  const plane = img.height * fullWidth;
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const p = (y * img.width + x) * 4;
      for (let c = 0; c < 3; c++) {
        const v = img.data[p + (norm.channelOrder === 'bgr' ? 2 - c : c)] / 255;
        out[offset + c * plane + y * fullWidth + x] = (v - norm.mean[c]) / norm.std[c];
      }
    }
  }
}
