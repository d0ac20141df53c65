/** Reads a JSON file, or fails naming the file: FILE_NOT_FOUND when missing, INVALID_ARGUMENT when not JSON. */
import * as fs from 'fs';
import { QuantbookError } from '../errors';

export function readJsonFile(file: string, what: string): unknown {
  if (!fs.existsSync(file)) throw new QuantbookError('FILE_NOT_FOUND', `${what} not found: ${file}`);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new QuantbookError('INVALID_ARGUMENT', `${file}: not valid JSON (${(e as Error).message})`);
  }
}
