/**
 * Writes a set of files so that either all of them appear complete or none does:
 * each is written to a temporary name beside its target, then all are renamed.
 * Used by every writer in the SDK so a failed save never leaves a partial file.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError } from '../errors';

export interface PendingFile {
  path: string;
  /** writes the file's content to the open descriptor */
  write: (fd: number) => void;
}

/** Writes all bytes of `data` to fd (fs.writeSync may write less than asked). */
export function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) done += fs.writeSync(fd, data, done, data.byteLength - done);
}

/** Whether a process with this id runs (a writer's lock or temporary file is stale when it does not). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Temporary files a killed writer of `file` left behind (`.<name>.<pid>.<time>.tmp` of a dead pid). */
function removeStaleTemps(file: string): void {
  const dir = path.dirname(path.resolve(file));
  const prefix = `.${path.basename(file)}.`;
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const e of entries) {
    if (!e.startsWith(prefix) || !e.endsWith('.tmp')) continue;
    const pid = Number(e.slice(prefix.length).split('.')[0]);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !processAlive(pid)) fs.rmSync(path.join(dir, e), { force: true });
  }
}

export function writeFilesAtomically(files: PendingFile[]): void {
  for (const f of files) removeStaleTemps(f.path);
  const temps: string[] = [];
  const renamed: string[] = [];
  try {
    for (const f of files) {
      const dir = path.dirname(path.resolve(f.path));
      if (!fs.existsSync(dir)) throw new QuantbookError('IO_ERROR', `cannot write ${f.path}: folder ${dir} does not exist`);
      if (fs.existsSync(f.path) && fs.statSync(f.path).isDirectory()) throw new QuantbookError('IO_ERROR', `cannot write ${f.path}: it is a folder`);
      const tmp = path.join(dir, `.${path.basename(f.path)}.${process.pid}.${Date.now().toString(36)}.tmp`);
      temps.push(tmp);
      const fd = fs.openSync(tmp, 'w');
      try {
        f.write(fd);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
    files.forEach((f, i) => {
      fs.renameSync(temps[i], f.path);
      renamed.push(f.path);
    });
  } catch (e) {
    for (const t of temps) fs.rmSync(t, { force: true });
    // A rename failing half way would leave a mixed set: remove what was already moved.
    for (const r of renamed) fs.rmSync(r, { force: true });
    if (e instanceof QuantbookError) throw e;
    throw new QuantbookError('IO_ERROR', `could not write ${files.map((f) => f.path).join(', ')}: ${(e as Error).message}`, { cause: e });
  }
}
