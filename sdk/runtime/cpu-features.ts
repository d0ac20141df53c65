/**
 * What the host CPU means for int8 on ONNX Runtime. On x86 without VNNI, ORT's u8×s8 kernels
 * (AVX2 vpmaddubsw) add pairs of products into int16 with saturation: 255·127·2 overflows, and
 * accuracy drops (PP-OCR cls: 94% of labels kept instead of 99+%). Weights on 7 bits
 * (ORT's reduce_range) keep every pair sum in range: 255·63·2 < 32767.
 */
import * as fs from 'fs';
import { invalidArgument } from '../errors';

let cached: boolean | undefined;

/** True where ORT's int8 products are exact: VNNI on x86 (AVX512-VNNI or AVX-VNNI), or a CPU that is not x86. Unknown x86 (no /proc/cpuinfo): true. */
export function int8ProductsExact(): boolean {
  if (cached !== undefined) return cached;
  if (process.arch !== 'x64' && process.arch !== 'ia32') return (cached = true);
  let info: string;
  try {
    info = fs.readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return (cached = true);
  }
  const flags = /^flags\s*:(.*)$/m.exec(info)?.[1].split(/\s+/) ?? [];
  return (cached = flags.includes('avx512_vnni') || flags.includes('avx_vnni'));
}

/** Resolves a reduceRange option (default false, as in ORT): 'auto' reduces weights to 7 bits where int8 products would saturate. */
export function resolveReduceRange(option: boolean | 'auto' | undefined): boolean {
  if (option === undefined) return false;
  if (option === 'auto') return !int8ProductsExact();
  if (typeof option !== 'boolean') throw invalidArgument('reduceRange', option, "true, false or 'auto'");
  return option;
}

/** The weight width a resolved reduceRange stands for. */
export function weightBits(reduceRange: boolean): number {
  return reduceRange ? 7 : 8;
}
