/**
 * Folders of images as calibration batches. Images need the model's own preparation, so it is
 * stated explicitly: target size, channel order, mean/std on 0..1 values, NCHW batches.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { QuantbookError, invalidArgument } from '../errors';
import { IMAGE_EXTENSIONS, readImage, resizeImage, writeNormalizedChw } from '../eval/image';
import type { Feeds } from '../runtime/runner';

export interface ImagePreprocess {
  /** [height, width] every image is resized to */
  size: [number, number];
  /** subtracted from each channel after scaling pixels to 0..1 (default 0) */
  mean?: [number, number, number];
  /** each channel is divided by it after the mean (default 1) */
  std?: [number, number, number];
  channelOrder?: 'rgb' | 'bgr';
  batchSize?: number;
}

export interface ImageFolderSource { imageFolder: string; preprocess: ImagePreprocess }

export function isImageFolderSource(v: unknown): v is ImageFolderSource {
  return !!v && typeof v === 'object' && 'imageFolder' in (v as object);
}

function validate(p: ImagePreprocess): Required<ImagePreprocess> {
  if (!p || !Array.isArray(p.size) || p.size.length !== 2 || !p.size.every((d) => Number.isInteger(d) && d > 0)) {
    throw invalidArgument('preprocess.size', p?.size, '[height, width] in pixels');
  }
  const triple = (name: string, v: unknown, dflt: number): [number, number, number] => {
    if (v === undefined) return [dflt, dflt, dflt];
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) throw invalidArgument(`preprocess.${name}`, v, 'three numbers, one per channel');
    return v as [number, number, number];
  };
  const std = triple('std', p.std, 1);
  if (std.some((s) => s === 0)) throw invalidArgument('preprocess.std', std, 'non-zero values');
  const order = p.channelOrder ?? 'rgb';
  if (order !== 'rgb' && order !== 'bgr') throw invalidArgument('preprocess.channelOrder', order, "'rgb' or 'bgr'");
  const batchSize = p.batchSize ?? 8;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw invalidArgument('preprocess.batchSize', batchSize, 'a positive integer');
  return { size: p.size, mean: triple('mean', p.mean, 0), std, channelOrder: order, batchSize };
}

/** Batches [N, 3, H, W] from the images of `dir` (sorted by name), for a single-input model. */
export async function* imageFolderBatches(source: ImageFolderSource, inputNames: readonly string[]): AsyncGenerator<Feeds, void, undefined> {
  const p = validate(source.preprocess);
  const dir = source.imageFolder;
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new QuantbookError('FILE_NOT_FOUND', `image folder not found: ${dir}`);
  if (inputNames.length !== 1) throw new QuantbookError('INVALID_ARGUMENT', `image folders feed single-input models; this model has inputs ${inputNames.join(', ')}`);
  const files = fs.readdirSync(dir).filter((f) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase())).sort();
  if (!files.length) throw new QuantbookError('INVALID_ARGUMENT', `image folder ${dir} holds no images (${IMAGE_EXTENSIONS.join(', ')})`);
  const [h, w] = p.size;
  const plane = h * w;
  for (let start = 0; start < files.length; start += p.batchSize) {
    const chunk = files.slice(start, start + p.batchSize);
    const data = new Float32Array(chunk.length * 3 * plane);
    chunk.forEach((f, i) => writeNormalizedChw(resizeImage(readImage(path.join(dir, f)), w, h), data, i * 3 * plane, w, p));
    yield { [inputNames[0]]: new ort.Tensor('float32', data, [chunk.length, 3, h, w]) };
  }
}
