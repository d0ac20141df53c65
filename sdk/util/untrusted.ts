/**
 * Reading files the SDK did not write: a folder they must stay inside (symlinks resolved), only
 * regular files (a device such as /dev/zero is never read), and shapes and offsets checked
 * before anything is allocated. Every refusal is a QuantbookError naming the file and field.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError } from '../errors';
import { restoreInterruptedSet } from './file-set';

/** The whole content of a regular file; anything else (missing, a folder, a device, a pipe) is a named error. */
export function readRegularFile(file: string, what: string): Buffer {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    // a save killed between its two renames leaves the previous set beside its folder: restore it
    if (!restoreInterruptedSet(file) || !fs.existsSync(file)) throw new QuantbookError('FILE_NOT_FOUND', `${what} not found: ${file}`);
    stat = fs.statSync(file);
  }
  if (!stat.isFile()) throw new QuantbookError('INVALID_ARGUMENT', `${what} ${file} is not a regular file`);
  return fs.readFileSync(file);
}

/**
 * `relative` (a name read from a file) resolved inside `folder`: no absolute path, no `..`, and,
 * once symlinks are resolved, still inside the folder's real path. Returns the path to open.
 */
export function confinedPath(folder: string, relative: unknown, what: string): string {
  if (typeof relative !== 'string' || relative.length === 0 || relative.includes('\0')) {
    throw new QuantbookError('INVALID_ARGUMENT', `${what}: got ${JSON.stringify(relative)}; expected a file name inside ${folder}`);
  }
  const parts = relative.split(/[\\/]/);
  if (path.isAbsolute(relative) || parts.includes('..') || parts.every((p) => p === '.' || p === '')) {
    throw new QuantbookError('INVALID_ARGUMENT', `${what}: "${relative}" is not a file name inside ${folder} (absolute paths, ".." and "." are refused)`);
  }
  const target = path.join(folder, relative);
  let real: string;
  try {
    real = fs.realpathSync(target);
  } catch {
    return target; // does not exist: the reader reports it as not found
  }
  const root = fs.realpathSync(folder);
  if (real !== root && !real.startsWith(root + path.sep)) {
    throw new QuantbookError('INVALID_ARGUMENT', `${what}: "${relative}" leads outside ${folder} (to ${real}) through a symbolic link`);
  }
  return target;
}

/** A shape read from a file: a list of non-negative integers whose product is at most `maxElements`. */
export function checkedShape(value: unknown, maxElements: number, where: string): number[] {
  if (!Array.isArray(value) || value.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)) {
    throw new QuantbookError('INVALID_ARGUMENT', `${where}: shape ${JSON.stringify(value)?.slice(0, 80)} must be a list of non-negative integers`);
  }
  let n = 1;
  for (const d of value as number[]) {
    n *= d;
    if (n > maxElements) throw new QuantbookError('INVALID_ARGUMENT', `${where}: shape [${value}] holds more elements than the ${maxElements} the file has room for`);
  }
  return value as number[];
}

/** A non-negative integer read from a file (offsets, lengths), or a named error. */
export function checkedIndex(value: unknown, where: string): number {
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new QuantbookError('INVALID_ARGUMENT', `${where}: got ${JSON.stringify(value)}; expected a non-negative integer`);
  return n;
}

/** A JSON object from a file (not null, not an array): the root of an index or config. */
export function jsonObject(text: string, where: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new QuantbookError('INVALID_ARGUMENT', `${where}: not valid JSON (${(e as Error).message})`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new QuantbookError('INVALID_ARGUMENT', `${where}: expected a JSON object, got ${doc === null ? 'null' : Array.isArray(doc) ? 'an array' : typeof doc}`);
  return doc as Record<string, unknown>;
}

export const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);
