/**
 * Publishing a set of files into a folder all at once.
 *
 * A save writes several files (models, safetensors shards and index, statistics, summary). Written
 * one by one into the target, a failed or killed save leaves a mix of two runs, and a run that
 * writes fewer files leaves stale ones (old shards beside a new unsharded file). Here:
 * 1. a lock file beside the folder admits one writer at a time (a second one fails with LOCKED;
 *    a lock left by a dead process is taken over);
 * 2. the new set is written whole into a staging folder beside the target, with a manifest
 *    (`<set>.manifest.json`: every file, its size and SHA-256); files in the target that belong to
 *    no earlier version of this set (user files, other sets) are hard-linked into the staging
 *    folder, files of the earlier version that the new one lacks are not;
 * 3. the staging folder replaces the target: rename(target → previous), rename(staging → target),
 *    then the previous one is removed.
 * Killed before step 3 the target is untouched; killed between its two renames the target is
 * missing, and the next publish (`recoverFileSet`) or the next reader that looks for a file in it
 * (`restoreInterruptedSet`, called by the SDK's file readers) renames the previous folder back. So
 * the folder holds one whole set, old or new, whenever anyone reads it.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError } from '../errors';
import { processAlive } from './atomic-write';

export interface SetManifest {
  set: string;
  producer: string;
  files: Array<{ name: string; bytes: number; sha256: string }>;
}

const manifestName = (set: string) => `${set}.manifest.json`;

function siblings(dir: string): { parent: string; base: string } {
  const abs = path.resolve(dir);
  return { parent: path.dirname(abs), base: path.basename(abs) };
}

const lockPath = (dir: string) => {
  const { parent, base } = siblings(dir);
  return path.join(parent, `.${base}.quantbook-lock`);
};

/** The pid in a lock file's text when it names another process that still runs. */
function liveHolder(text: string): number | undefined {
  const pid = Number(text);
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid) ? pid : undefined;
}

/** Renames the newest previous set left beside `dir` back to `dir`; whether it did. */
function restorePrevious(dir: string): boolean {
  const { parent, base } = siblings(dir);
  const previous = fs.readdirSync(parent).filter((f) => f.startsWith(`.${base}.quantbook-previous-`)).sort();
  if (!previous.length) return false;
  try {
    fs.renameSync(path.join(parent, previous[previous.length - 1]), path.join(parent, base));
    return true;
  } catch {
    return false; // another reader or writer got there first
  }
}

/** Takes the folder's lock, or fails with LOCKED naming the holder; a dead holder's lock is taken over. */
function lock(dir: string): () => void {
  const file = lockPath(dir);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx');
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      return () => fs.rmSync(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new QuantbookError('IO_ERROR', `cannot lock ${dir}: ${(e as Error).message}`, { cause: e });
      let text = '';
      let age = Infinity;
      try {
        text = fs.readFileSync(file, 'utf8');
        age = Date.now() - fs.statSync(file).mtimeMs;
      } catch {
        continue; // released meanwhile: try again
      }
      const holder = liveHolder(text);
      // an empty lock is one being created this instant: its holder has not written its pid yet
      if (!text && age < 10_000) throw new QuantbookError('LOCKED', `${dir} is being written by another quantbook process (its lock was just taken); wait for it, or choose another folder`);
      if (holder !== undefined) {
        throw new QuantbookError('LOCKED', `${dir} is being written by another quantbook process (pid ${holder}); wait for it, or choose another folder`);
      }
      fs.rmSync(file, { force: true }); // left by a process that died (or by this one): stale
    }
  }
  throw new QuantbookError('LOCKED', `${dir}: could not take the lock ${file}`);
}

/**
 * Brings a folder back to a whole set after an interrupted publish: the previous folder renamed
 * back if the target is missing, staging and previous folders of dead writers removed.
 */
export function recoverFileSet(dir: string): void {
  const { parent, base } = siblings(dir);
  if (!fs.existsSync(parent)) return;
  const whole = fs.existsSync(path.join(parent, base)) || restorePrevious(dir);
  const entries = fs.readdirSync(parent).filter((f) => f.startsWith(`.${base}.quantbook-`) && !f.endsWith('-lock'));
  for (const f of entries) {
    if (!whole && f.startsWith(`.${base}.quantbook-previous-`)) continue; // the only copy of the set: never removed
    const pid = Number(/-(\d+)-[0-9a-z]+$/.exec(f)?.[1]);
    if (pid === process.pid || !processAlive(pid)) fs.rmSync(path.join(parent, f), { recursive: true, force: true });
  }
}

const rank = (order: string[], name: string) => {
  const i = order.indexOf(name);
  return i < 0 ? order.length : i;
};

function linkOrCopy(from: string, to: string): void {
  try {
    fs.linkSync(from, to);
  } catch {
    fs.copyFileSync(from, to); // a filesystem without hard links
  }
}

/**
 * For readers: `file` is missing because its folder is missing, and a writer that died between
 * its two renames left the previous set beside it. Renames that set back (unless a live writer
 * holds the lock) and says whether it did, so the reader can try again.
 */
export function restoreInterruptedSet(file: string): boolean {
  const dir = path.dirname(path.resolve(file));
  if (fs.existsSync(dir)) return false;
  if (!fs.existsSync(path.dirname(dir))) return false;
  const lockFile = lockPath(dir);
  if (fs.existsSync(lockFile) && liveHolder(fs.readFileSync(lockFile, 'utf8')) !== undefined) return false;
  return restorePrevious(dir);
}

/** SHA-256 of a file read in 16 MiB chunks (a model's data file can pass Node's 2 GiB buffer limit). */
function sha256(file: string): string {
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(16 * 2 ** 20);
  const fd = fs.openSync(file, 'r');
  try {
    for (let got: number; (got = fs.readSync(fd, chunk, 0, chunk.length, null)) > 0;) hash.update(chunk.subarray(0, got));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** The manifest of `set` in `dir`, if one was published there. */
export function readManifest(dir: string, set: string): SetManifest | undefined {
  const file = path.join(dir, manifestName(set));
  if (!fs.existsSync(file)) return undefined;
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as SetManifest;
    return Array.isArray(m?.files) ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Checks a published set against its manifest: every file present with its size and hash. */
export function verifyFileSet(dir: string, set: string): { ok: boolean; problems: string[] } {
  const m = readManifest(dir, set);
  if (!m) return { ok: false, problems: [`no manifest ${manifestName(set)} in ${dir}`] };
  const problems: string[] = [];
  for (const f of m.files) {
    const file = path.join(dir, f.name);
    if (!fs.existsSync(file)) problems.push(`${f.name} is missing`);
    else if (fs.statSync(file).size !== f.bytes || sha256(file) !== f.sha256) problems.push(`${f.name} differs from the manifest`);
  }
  return { ok: problems.length === 0, problems };
}

/** Refuses an output folder that cannot be one (an existing file, a file on its path), before any work. */
export function checkOutputFolder(dir: string): void {
  if (typeof dir !== 'string' || !dir) throw new QuantbookError('INVALID_ARGUMENT', `output folder: got ${JSON.stringify(dir)}; expected a folder path`);
  let at = path.resolve(dir);
  for (;;) {
    if (fs.existsSync(at)) {
      if (!fs.statSync(at).isDirectory()) throw new QuantbookError('INVALID_ARGUMENT', `output folder ${dir}: ${at} is a file, not a folder`);
      return;
    }
    const up = path.dirname(at);
    if (up === at) return;
    at = up;
  }
}

/**
 * Writes the set `set` into `dir` at once: `write(stage)` writes every file of the set into the
 * staging folder it is given, and may return them in the order callers should see; the paths
 * returned are the published files in that order (manifest last). See the module comment for what holds if this is interrupted.
 */
export function publishFileSet(dir: string, set: string, write: (stage: string) => string[] | void, producer = 'quantbook'): string[] {
  checkOutputFolder(dir);
  const { parent, base } = siblings(dir);
  fs.mkdirSync(parent, { recursive: true });
  const unlock = lock(dir);
  try {
    recoverFileSet(dir);
    const tag = `${process.pid}-${Date.now().toString(36)}`;
    const stage = path.join(parent, `.${base}.quantbook-staging-${tag}`);
    fs.mkdirSync(stage);
    try {
      // the writer's order when it gives one (its main file first), else by name
      const order = (write(stage) ?? []).map((f) => path.basename(f));
      const names = fs.readdirSync(stage).filter((f) => fs.statSync(path.join(stage, f)).isFile())
        .sort((a, b) => rank(order, a) - rank(order, b) || (a < b ? -1 : a > b ? 1 : 0));
      const manifest: SetManifest = { set, producer, files: names.map((name) => ({ name, bytes: fs.statSync(path.join(stage, name)).size, sha256: sha256(path.join(stage, name)) })) };
      // what the folder holds besides the earlier version of this set moves along (hard links: no copy)
      const target = path.join(parent, base);
      if (fs.existsSync(target)) {
        const earlier = new Set((readManifest(target, set)?.files ?? []).map((f) => f.name));
        earlier.add(manifestName(set));
        for (const f of fs.readdirSync(target)) {
          if (earlier.has(f) || fs.existsSync(path.join(stage, f))) continue;
          const from = path.join(target, f);
          if (fs.lstatSync(from).isDirectory()) fs.cpSync(from, path.join(stage, f), { recursive: true });
          else linkOrCopy(from, path.join(stage, f));
        }
      }
      const text = `${JSON.stringify(manifest, null, 2)}\n`;
      const fd = fs.openSync(path.join(stage, manifestName(set)), 'w');
      try {
        fs.writeSync(fd, text);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      if (fs.existsSync(target)) {
        const previous = path.join(parent, `.${base}.quantbook-previous-${tag}`);
        fs.renameSync(target, previous);
        fs.renameSync(stage, target);
        fs.rmSync(previous, { recursive: true, force: true });
      } else {
        fs.renameSync(stage, target);
      }
      return [...names, manifestName(set)].map((f) => path.join(dir, f));
    } finally {
      fs.rmSync(stage, { recursive: true, force: true });
    }
  } finally {
    unlock();
  }
}
