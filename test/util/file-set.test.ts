/**
 * Sets of files published at once (sdk/util/file-set.ts): a save killed at any point leaves the
 * old set or the new one, whole; stale files of an earlier version go; other files stay; two
 * writers never mix.
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError } from '../../sdk';
import { publishFileSet, readManifest, recoverFileSet, verifyFileSet } from '../../sdk/util/file-set';
import { loadSafetensors, writeSafetensors } from '../../sdk/export/safetensors';
import { seededRandom, tempDir } from '../helpers';

const FILE_SET = path.join(__dirname, '..', '..', 'sdk', 'util', 'file-set.js');

/** Version A writes six shards and an index; version B one file and no index (a re-run without sharding). */
const VERSIONS: Record<'A' | 'B', string[]> = {
  A: ['w-00001-of-00006.bin', 'w-00002-of-00006.bin', 'w-00003-of-00006.bin', 'w-00004-of-00006.bin', 'w-00005-of-00006.bin', 'w-00006-of-00006.bin', 'w.index.json'],
  B: ['w.bin', 'summary.json'],
};

/** A child that publishes version `v` (3 MB per file, written in 64 KB chunks so a kill lands mid-file). */
const CHILD = (dir: string, v: 'A' | 'B') => `
const fs = require('fs'), path = require('path');
const { publishFileSet } = require(${JSON.stringify(FILE_SET)});
const files = ${JSON.stringify(VERSIONS)}[${JSON.stringify(v)}];
publishFileSet(${JSON.stringify(dir)}, 'model', (stage) => {
  files.forEach((f, i) => {
    const fd = fs.openSync(path.join(stage, f), 'w');
    const chunk = Buffer.alloc(65536, ${v === 'A' ? 1 : 2} + i);
    for (let k = 0; k < 48; k++) fs.writeSync(fd, chunk);
    fs.closeSync(fd);
  });
});
process.stdout.write('published');
`;

function expectedHashes(v: 'A' | 'B'): Map<string, string> {
  return new Map(VERSIONS[v].map((f, i) => [f, createHash('sha256').update(Buffer.alloc(48 * 65536, (v === 'A' ? 1 : 2) + i)).digest('hex')]));
}

/** Which whole version the folder holds ('A' or 'B'), or a description of the mix. */
function versionIn(dir: string): string {
  const names = fs.readdirSync(dir).filter((f) => f !== 'user-notes.txt' && !f.endsWith('.manifest.json')).sort();
  for (const v of ['A', 'B'] as const) {
    const want = expectedHashes(v);
    if (names.length === want.size && names.every((n) => want.get(n) === createHash('sha256').update(fs.readFileSync(path.join(dir, n))).digest('hex'))) {
      assert.ok(verifyFileSet(dir, 'model').ok, `version ${v}: manifest does not match`);
      return v;
    }
  }
  return `a mix: ${names.join(', ')}`;
}

function run(script: string): ChildProcess {
  return spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
}

const exited = (c: ChildProcess) => new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
  let stderr = '';
  c.stderr!.on('data', (d) => { stderr += d; });
  c.on('exit', (code, signal) => resolve({ code, signal, stderr }));
});

describe('publishing a set of files at once', () => {
  const root = tempDir();
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('a re-run that writes fewer files removes the earlier version\'s extra files and keeps files that are not the set\'s', () => {
    const dir = path.join(root, 'rerun');
    const write = (v: 'A' | 'B') => publishFileSet(dir, 'model', (stage) => VERSIONS[v].forEach((f, i) => fs.writeFileSync(path.join(stage, f), Buffer.alloc(10, i))));
    write('A');
    fs.writeFileSync(path.join(dir, 'user-notes.txt'), 'mine');
    const files = write('B');
    assert.deepEqual(fs.readdirSync(dir).sort(), ['model.manifest.json', 'summary.json', 'user-notes.txt', 'w.bin']);
    assert.deepEqual(files.map((f) => path.basename(f)), ['summary.json', 'w.bin', 'model.manifest.json']);
    assert.equal(fs.readFileSync(path.join(dir, 'user-notes.txt'), 'utf8'), 'mine');
    assert.deepEqual(readManifest(dir, 'model')!.files.map((f) => f.name), ['summary.json', 'w.bin']);
    assert.ok(verifyFileSet(dir, 'model').ok);
    fs.writeFileSync(path.join(dir, 'w.bin'), 'changed');
    assert.deepEqual(verifyFileSet(dir, 'model').problems, ['w.bin differs from the manifest']);
  });

  it('a file past Node\'s 2 GiB buffer limit (a 7B model\'s data file) is hashed in chunks: its manifest entry is coreutils\' sha256sum', () => {
    const dir = path.join(root, 'large');
    const bytes = 2 ** 31 + 7;
    // sparse: no disk space; `head -c 2147483655 /dev/zero | sha256sum` gave the digest
    publishFileSet(dir, 'model', (stage) => {
      const file = path.join(stage, 'model.onnx.data');
      fs.writeFileSync(file, '');
      fs.truncateSync(file, bytes);
    });
    const entry = readManifest(dir, 'model')!.files.find((f) => f.name === 'model.onnx.data')!;
    assert.equal(entry.bytes, bytes);
    assert.equal(entry.sha256, '4faf054bcce4f3f1718586ceb36106e28a780ea261ba3c7fc1c8519d048f9b2f');
    assert.ok(verifyFileSet(dir, 'model').ok);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a writer that throws leaves the earlier set as it was, and no staging folder', () => {
    const dir = path.join(root, 'throws');
    publishFileSet(dir, 'model', (stage) => fs.writeFileSync(path.join(stage, 'a.bin'), 'old'));
    assert.throws(() => publishFileSet(dir, 'model', (stage) => {
      fs.writeFileSync(path.join(stage, 'a.bin'), 'new');
      throw new QuantbookError('IO_ERROR', 'disk full');
    }), /disk full/);
    assert.equal(fs.readFileSync(path.join(dir, 'a.bin'), 'utf8'), 'old');
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.includes('.throws.quantbook-')), []);
  });

  it('a reader finding the folder missing mid-swap (its writer died between the two renames) restores the previous set and loads it', () => {
    const dir = path.join(root, 'mid-swap');
    publishFileSet(dir, 'model', (stage) => writeSafetensors(path.join(stage, 'w.safetensors'), [['a', { dtype: 'F32', shape: [2], data: Float32Array.of(1, 2) }]]));
    // what a writer killed after rename(target → previous) leaves (pid 999999: no such process)
    fs.renameSync(dir, path.join(root, '.mid-swap.quantbook-previous-999999-x'));
    assert.deepEqual([...loadSafetensors(path.join(dir, 'w.safetensors')).tensors.get('a')!.data as Float32Array], [1, 2]);
    assert.ok(verifyFileSet(dir, 'model').ok);
    // with a live writer holding the lock, a reader leaves the swap alone
    fs.renameSync(dir, path.join(root, '.mid-swap.quantbook-previous-999999-y'));
    fs.writeFileSync(path.join(root, '.mid-swap.quantbook-lock'), String(process.ppid));
    assert.throws(() => loadSafetensors(path.join(dir, 'w.safetensors')), (e: QuantbookError) => e.code === 'FILE_NOT_FOUND');
    fs.rmSync(path.join(root, '.mid-swap.quantbook-lock'));
    recoverFileSet(dir);
    assert.ok(verifyFileSet(dir, 'model').ok);
  });

  it('killed at 30 random points of a save, the folder holds the old set or the new one, whole, never a mix', async function () {
    this.timeout(300_000);
    const dir = path.join(root, 'killed');
    const first = await exited(run(CHILD(dir, 'A')));
    assert.equal(first.code, 0, first.stderr);
    fs.writeFileSync(path.join(dir, 'user-notes.txt'), 'mine');
    const r = seededRandom(5);
    const seen = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const v = i % 2 ? 'A' : 'B';
      const child = run(CHILD(dir, v));
      const done = exited(child);
      await new Promise((resolve) => setTimeout(resolve, 5 + r() * 250));
      child.kill('SIGKILL');
      await done;
      // before anyone recovers: a whole set, or (killed between the two renames) no folder at all
      const state = fs.existsSync(dir) ? versionIn(dir) : 'missing';
      assert.ok(['A', 'B', 'missing'].includes(state), `kill ${i}: ${state}`);
      recoverFileSet(dir); // what the next run does first
      const after = versionIn(dir);
      assert.ok(after === 'A' || after === 'B', `kill ${i}, after recovery: ${after}`);
      assert.equal(fs.readFileSync(path.join(dir, 'user-notes.txt'), 'utf8'), 'mine');
      seen.set(after, (seen.get(after) ?? 0) + 1);
    }
    // no staging or previous folders left once a later run has recovered
    recoverFileSet(dir);
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.includes('.killed.quantbook-') && !f.endsWith('-lock')), []);
    console.log(`      30 kills: ${[...seen].map(([k, n]) => `${n}× version ${k}`).join(', ')}`);
  });

  it('a real session save (PP-OCR cls) killed at 20 random points: the folder holds the sharded set or the unsharded one, whole', async function () {
    this.timeout(600_000);
    const dir = path.join(root, 'session');
    const SDK = path.join(__dirname, '..', '..', 'sdk', 'index.js');
    const CLS = require(path.join(__dirname, '..', 'helpers')).MODELS.cls as string;
    // version A: models, fake-quant and sharded safetensors; version B: unsharded safetensors only
    const child = (v: 'A' | 'B') => `
const q = require(${JSON.stringify(SDK)});
const result = q.session(${JSON.stringify(CLS)}).w8a8Dynamic();
result.run().then((res) => {
  process.stdout.write('ready');
  res.save(${JSON.stringify(dir)}, ${v === 'A' ? "{ saveType: ['safe_tensor', 'onnx', 'fake_quant_onnx'], partFileSize: 0.0002 }" : "['safe_tensor']"});
});
`;
    const listing = () => fs.readdirSync(dir).filter((f) => f !== 'notes.txt').sort().join(',');
    const sets: Record<string, string> = {};
    for (const v of ['B', 'A'] as const) {
      const done = await exited(run(child(v)));
      assert.equal(done.code, 0, done.stderr);
      sets[v] = listing();
    }
    assert.notEqual(sets.A, sets.B);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    const r = seededRandom(9);
    const seen = new Map<string, number>();
    for (let i = 0; i < 20; i++) {
      const v = i % 2 ? 'A' : 'B';
      const c = run(child(v));
      const done = exited(c);
      await new Promise<void>((resolve) => c.stdout!.on('data', (d) => { if (String(d).includes('ready')) resolve(); }));
      // a save takes 5–30 ms here: kill within that window (before, during or just after it)
      await new Promise((resolve) => setTimeout(resolve, r() * 25));
      c.kill('SIGKILL');
      await done;
      recoverFileSet(dir);
      const now = listing();
      const which = Object.entries(sets).find(([, l]) => l === now)?.[0];
      assert.ok(which, `kill ${i}: a mix: ${now}`);
      assert.ok(verifyFileSet(dir, 'ch_ppocr_mobile_v2.0_cls_infer_w8a8_dynamic').ok, `kill ${i}: manifest`);
      assert.equal(fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8'), 'mine');
      seen.set(which!, (seen.get(which!) ?? 0) + 1);
    }
    console.log(`      20 kills of a session save: ${[...seen].map(([k, n]) => `${n}× set ${k}`).join(', ')}`);
  });

  it('two writers into one folder at once: one wins whole, the other fails with LOCKED (or runs after it)', async function () {
    this.timeout(120_000);
    const dir = path.join(root, 'concurrent');
    for (let round = 0; round < 5; round++) {
      const [a, b] = [exited(run(CHILD(dir, 'A'))), exited(run(CHILD(dir, 'B')))];
      const results = await Promise.all([a, b]);
      for (const res of results) assert.ok(res.code === 0 || /LOCKED|being written by another quantbook process/.test(res.stderr), res.stderr);
      const state = versionIn(dir);
      assert.ok(state === 'A' || state === 'B', `round ${round}: ${state}`);
    }
    // a lock left by a dead process is taken over
    fs.writeFileSync(path.join(root, '.concurrent.quantbook-lock'), '999999');
    publishFileSet(dir, 'model', (stage) => fs.writeFileSync(path.join(stage, 'w.bin'), 'x'));
    // a live holder is refused by name
    fs.writeFileSync(path.join(root, '.concurrent.quantbook-lock'), String(process.ppid));
    assert.throws(() => publishFileSet(dir, 'model', () => undefined), (e: QuantbookError) => e.code === 'LOCKED' && /being written by another quantbook process \(pid \d+\)/.test(e.message));
    fs.rmSync(path.join(root, '.concurrent.quantbook-lock'));
  });
});
