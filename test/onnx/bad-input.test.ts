import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError, loadModel } from '../../sdk';
import { MODELS, OCR_KEYS, tempDir } from '../helpers';

const isError = (code: string, pattern: RegExp) => (e: unknown) => {
  assert.ok(e instanceof QuantbookError, `expected a QuantbookError, got ${e}`);
  assert.equal(e.code, code);
  assert.match(e.message, pattern);
  return true;
};

describe('bad input gives clear errors and leaves nothing half-written', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a missing path', () => {
    assert.throws(() => loadModel('/no/such/model.onnx'), isError('FILE_NOT_FOUND', /model file not found: \/no\/such\/model.onnx/));
  });

  it('a folder instead of a file', () => {
    assert.throws(() => loadModel(dir), isError('INVALID_ARGUMENT', /is a folder/));
  });

  it('a truncated model file', () => {
    const file = path.join(dir, 'truncated.onnx');
    const bytes = fs.readFileSync(MODELS.rec);
    fs.writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    assert.throws(() => loadModel(file), isError('INVALID_MODEL', /truncated\.onnx is not a valid ONNX model.*truncated/));
  });

  it('files that are not ONNX (text, JSON, empty, random bytes)', () => {
    const cases: Array<[string, Buffer]> = [
      ['keys.txt', fs.readFileSync(OCR_KEYS)],
      ['package.json', Buffer.from(JSON.stringify({ name: 'x', version: '1.0.0' }))],
      ['empty.onnx', Buffer.alloc(0)],
      ['noise.onnx', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 251))],
    ];
    for (const [name, content] of cases) {
      const file = path.join(dir, name);
      fs.writeFileSync(file, content);
      assert.throws(() => loadModel(file), isError('INVALID_MODEL', new RegExp(`${name.replace('.', '\\.')} (is empty|is not a valid ONNX model)`)), name);
    }
  });

  it('something that is neither a path nor bytes', () => {
    assert.throws(() => loadModel(42 as never), isError('INVALID_ARGUMENT', /expected a file path \(string\) or the file's bytes/));
  });

  it('an unknown tensor name in an edit', () => {
    const g = loadModel(MODELS.cls).graph;
    assert.throws(() => g.renameTensor('no_such_tensor', 'y'), isError('UNKNOWN_TENSOR', /tensor "no_such_tensor" is not in graph/));
    assert.throws(() => g.insertNodeAfter('no_such_tensor', { opType: 'Identity' }), isError('UNKNOWN_TENSOR', /no_such_tensor/));
  });

  const leftovers = (d: string) => fs.readdirSync(d).filter((f) => f.endsWith('.tmp'));

  it('a save into a missing folder fails and creates nothing', () => {
    const m = loadModel(MODELS.cls);
    const target = path.join(dir, 'missing-folder', 'out.onnx');
    assert.throws(() => m.save(target), isError('IO_ERROR', /folder .*missing-folder does not exist/));
    assert.equal(fs.existsSync(path.dirname(target)), false);
  });

  it('a save whose target is a folder fails and leaves no partial or temporary file', () => {
    const m = loadModel(MODELS.vad);
    const target = path.join(dir, 'taken');
    fs.mkdirSync(target);
    const before = fs.readdirSync(dir).sort();
    assert.throws(() => m.save(target, { externalData: true }), isError('IO_ERROR', /taken: it is a folder/));
    assert.deepEqual(fs.readdirSync(dir).sort(), before, 'no data file and no temporary files were left');
    assert.deepEqual(leftovers(dir), []);
  });

  it('a save removes the temporary files a killed earlier save of that file left (dead writer), not a live writer\'s', () => {
    const file = path.join(dir, 'stale.onnx');
    const stale = path.join(dir, '.stale.onnx.999999.abc.tmp');
    const live = path.join(dir, `.stale.onnx.${process.ppid}.abc.tmp`);
    fs.writeFileSync(stale, Buffer.alloc(1024));
    fs.writeFileSync(live, Buffer.alloc(16));
    loadModel(MODELS.cls).save(file);
    assert.ok(!fs.existsSync(stale), 'the dead writer\'s temporary file was removed');
    assert.ok(fs.existsSync(live), 'a live writer\'s temporary file was left alone');
    fs.rmSync(live);
  });

  it('a save that fails while writing removes its temporary files and keeps the old file', () => {
    // a model that still points at an external data file which disappears before the save
    const srcDir = fs.mkdtempSync(path.join(dir, 'src-'));
    const src = path.join(srcDir, 'vad.onnx');
    loadModel(MODELS.vad).save(src, { externalData: true });
    const lazy = loadModel(src, { loadExternalData: false });
    fs.rmSync(`${src}.data`);
    const target = path.join(dir, 'keep.onnx');
    fs.writeFileSync(target, 'previous content');
    assert.throws(() => lazy.save(target), isError('FILE_NOT_FOUND', /external data file of tensor .* not found/));
    assert.equal(fs.readFileSync(target, 'utf8'), 'previous content');
    assert.equal(fs.existsSync(`${target}.data`), false);
    assert.deepEqual(leftovers(dir), []);
  });
});
