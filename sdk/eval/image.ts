/** Image files to pixel arrays (PNG/JPEG/WebP decoded by @napi-rs/canvas), with resizing. */
import * as fs from 'fs';
import { Image, createCanvas } from '@napi-rs/canvas';
import { QuantbookError } from '../errors';

export interface RgbaImage { width: number; height: number; data: Uint8ClampedArray }

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.bmp'];

export function readImage(file: string): RgbaImage {
  if (!fs.existsSync(file)) throw new QuantbookError('FILE_NOT_FOUND', `image not found: ${file}`);
  const img = new Image();
  try {
    img.src = fs.readFileSync(file);
  } catch (e) {
    throw new QuantbookError('INVALID_ARGUMENT', `${file} is not an image quantbook can decode (${IMAGE_EXTENSIONS.join(', ')}): ${(e as Error).message}`);
  }
  if (!img.width || !img.height) throw new QuantbookError('INVALID_ARGUMENT', `${file} is not an image quantbook can decode (${IMAGE_EXTENSIONS.join(', ')})`);
  return resizeImage(img, img.width, img.height);
}

/** Draws the image (or pixels) scaled to width × height (bilinear). */
export function resizeImage(src: Image | RgbaImage, width: number, height: number): RgbaImage {
  const canvas = createCanvas(width, height);
  const ctx = canvas.getContext('2d');
  if (src instanceof Image) {
    ctx.drawImage(src, 0, 0, width, height);
  } else {
    const from = createCanvas(src.width, src.height);
    const fctx = from.getContext('2d');
    const id = fctx.createImageData(src.width, src.height);
    id.data.set(src.data);
    fctx.putImageData(id, 0, 0);
    ctx.drawImage(from, 0, 0, width, height);
  }
  const out = ctx.getImageData(0, 0, width, height);
  return { width, height, data: out.data };
}
