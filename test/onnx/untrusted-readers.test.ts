/**
 * Readers of files the SDK did not write: each malformed field is a QuantbookError naming it,
 * no path leads outside the file's folder, nothing but regular files is read. A seeded fuzz per
 * reader mutates valid files (truncations, bit flips, field swaps, hostile names and paths):
 * every outcome must be a QuantbookError or a correct load, never another exception or a hang.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError, batchesFrom, calibrate, loadModel, loadSessionConfig, readNpy, readStats, writeNpy } from '../../sdk';
import { loadSafetensors, readSafetensors, writeSafetensors, writeSafetensorsSet, StoredTensor } from '../../sdk/export/safetensors';
import { DataType } from '../../sdk/onnx/dtype';
import { makeTensor } from '../../sdk/onnx/tensor';
import { Model } from '../../sdk/onnx/model';
import { GraphBuilder } from '../corpus/builder';
import { MODELS, randomFloats, seededRandom, tempDir } from '../helpers';
import { clsBatch } from '../ocr-fixtures';

const named = (code: string, pattern: RegExp) => (e: unknown) => {
  assert.ok(e instanceof QuantbookError, `expected a QuantbookError, got ${(e as Error)?.stack ?? e}`);
  assert.equal(e.code, code, e.message);
  assert.match(e.message, pattern);
  return true;
};

/** Mutations of valid bytes: truncations, bit flips, byte runs, splices of other text. */
function* mutations(bytes: Buffer, seed: number, count: number, texts: string[] = []): Generator<Buffer> {
  const r = seededRandom(seed);
  const at = (n: number) => Math.floor(r() * n);
  for (let i = 0; i < count; i++) {
    const b = Buffer.from(bytes);
    switch (i % 5) {
      case 0: yield b.subarray(0, at(b.length)); break;
      case 1: for (let k = 0; k < 1 + at(8); k++) b[at(b.length)] ^= 1 << at(8); yield b; break;
      case 2: { const p = at(b.length); b.fill(at(256), p, Math.min(b.length, p + 1 + at(16))); yield b; break; }
      case 3: { const p = at(b.length); yield Buffer.concat([b.subarray(0, p), Buffer.from(texts.length ? texts[at(texts.length)] : '"x"'), b.subarray(p + at(8))]); break; }
      default: { const p = at(b.length); const q = at(b.length); yield Buffer.concat([b.subarray(0, Math.min(p, q)), b.subarray(Math.max(p, q))]); }
    }
  }
}

/** Runs `read` on each mutated file; counts loads and named errors; anything else fails with the case. */
function fuzz(label: string, dir: string, name: string, cases: Iterable<Buffer>, read: (file: string) => unknown): { loaded: number; refused: number } {
  let loaded = 0;
  let refused = 0;
  let i = 0;
  const started = Date.now();
  for (const content of cases) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, content);
    try {
      read(file);
      loaded++;
    } catch (e) {
      if (!(e instanceof QuantbookError)) {
        fs.writeFileSync(path.join(dir, `failing-${label}-${i}`), content);
        assert.fail(`${label} case ${i}: ${(e as Error)?.stack ?? e}`);
      }
      refused++;
    }
    i++;
  }
  assert.ok(Date.now() - started < 60_000, `${label}: fuzzing took ${Date.now() - started} ms`);
  return { loaded, refused };
}

const sample = (): Array<[string, StoredTensor]> => [
  ['w', { dtype: 'F32', shape: [2, 3], data: randomFloats(6, 1) }],
  ['b', { dtype: 'I32', shape: [3], data: Int32Array.of(1, -2, 3) }],
  ['__proto__', { dtype: 'I8', shape: [2], data: Int8Array.of(7, -7) }],
];

describe('readers of untrusted files', () => {
  const dir = tempDir();
  const outside = tempDir();
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  });

  describe('safetensors', () => {
    it('a tensor named "__proto__" is stored and read back like any other, single and sharded', () => {
      const file = path.join(dir, 'proto.safetensors');
      writeSafetensors(file, sample());
      const back = readSafetensors(file);
      assert.deepEqual([...back.tensors.keys()].sort(), ['__proto__', 'b', 'w']);
      assert.deepEqual([...back.tensors.get('__proto__')!.data as Int8Array], [7, -7]);
      const set = writeSafetensorsSet(dir, 'sharded.safetensors', sample(), { partBytes: 8 });
      const index = JSON.parse(fs.readFileSync(set.index!, 'utf8'));
      assert.ok(Object.prototype.hasOwnProperty.call(index.weight_map, '__proto__'), 'the index maps "__proto__"');
      assert.deepEqual([...loadSafetensors(set.index!).tensors.get('__proto__')!.data as Int8Array], [7, -7]);
    });

    it('an index whose weight_map leads outside its folder is refused: "../x", an absolute path, a symlink, a device', () => {
      const set = writeSafetensorsSet(dir, 'conf.safetensors', sample(), { partBytes: 8 });
      const index = JSON.parse(fs.readFileSync(set.index!, 'utf8'));
      fs.copyFileSync(set.files[0], path.join(outside, 'x.safetensors'));
      fs.symlinkSync(path.join(outside, 'x.safetensors'), path.join(dir, 'link.safetensors'));
      fs.symlinkSync('/dev/zero', path.join(dir, 'zero.safetensors'));
      const shard = index.weight_map.w;
      for (const [target, pattern] of [
        [path.relative(dir, path.join(outside, 'x.safetensors')), /absolute paths, "\.\." and "\." are refused/],
        ['/etc/passwd', /absolute paths/],
        ['link.safetensors', /leads outside .* through a symbolic link/],
        ['zero.safetensors', /leads outside/],
        ['.', /absolute paths, "\.\." and "\." are refused/],
      ] as Array<[string, RegExp]>) {
        const bad = path.join(dir, 'bad.safetensors.index.json');
        fs.writeFileSync(bad, JSON.stringify({ ...index, weight_map: { ...index.weight_map, w: target } }));
        assert.throws(() => loadSafetensors(bad), named('INVALID_ARGUMENT', pattern), target);
      }
      assert.ok(shard);
      assert.throws(() => readSafetensors('/dev/zero'), named('INVALID_ARGUMENT', /is not a regular file/));
    });

    it('malformed headers and indexes are named errors', () => {
      const header = (h: unknown) => {
        const json = Buffer.from(JSON.stringify(h));
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(json.length));
        const file = path.join(dir, 'h.safetensors');
        fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(8)]));
        return file;
      };
      assert.throws(() => readSafetensors(header(null)), named('INVALID_ARGUMENT', /not a JSON object/));
      assert.throws(() => readSafetensors(header({ a: { dtype: 'F32', data_offsets: [0, 8] } })), named('INVALID_ARGUMENT', /tensor "a": shape undefined/));
      assert.throws(() => readSafetensors(header({ a: { dtype: 'F32', shape: [2] } })), named('INVALID_ARGUMENT', /"a" needs "data_offsets"/));
      assert.throws(() => readSafetensors(header({ a: { dtype: 'F32', shape: [2], data_offsets: ['0', '8'] } })), named('INVALID_ARGUMENT', /data_offsets must be numbers/));
      assert.throws(() => readSafetensors(header({ a: { dtype: 'constructor', shape: [2], data_offsets: [0, 8] } })), named('INVALID_ARGUMENT', /unknown dtype "constructor"/));
      assert.throws(() => readSafetensors(header({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } })), named('INVALID_ARGUMENT', /non-negative integers/));
      assert.throws(() => readSafetensors(header({ a: { dtype: 'F32', shape: [1e9, 1e9], data_offsets: [0, 8] } })), named('INVALID_ARGUMENT', /more elements than/));
      assert.throws(() => readSafetensors(header({ __metadata__: { k: 1 } })), named('INVALID_ARGUMENT', /"__metadata__"\["k"\] is number/));
      const big = path.join(dir, 'len.safetensors');
      fs.writeFileSync(big, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7b, 0x7d]));
      assert.throws(() => readSafetensors(big), named('INVALID_ARGUMENT', /header length 18446744073709551615 runs past the end/));
      const idx = path.join(dir, 'i.safetensors.index.json');
      fs.writeFileSync(idx, 'not json');
      assert.throws(() => loadSafetensors(idx), named('INVALID_ARGUMENT', /not valid JSON/));
      fs.writeFileSync(idx, 'null');
      assert.throws(() => loadSafetensors(idx), named('INVALID_ARGUMENT', /expected a JSON object, got null/));
      fs.writeFileSync(idx, JSON.stringify({ weight_map: { a: 3 } }));
      assert.throws(() => loadSafetensors(idx), named('INVALID_ARGUMENT', /weight_map\["a"\] is 3/));
    });

    it('fuzz: 3000 mutated files and 600 mutated indexes load or are refused by name', () => {
      const file = path.join(dir, 'fuzz-src.safetensors');
      writeSafetensors(file, sample(), { note: 'fuzz' });
      const one = fuzz('safetensors', dir, 'fuzz.safetensors', mutations(fs.readFileSync(file), 11, 3000, ['"__proto__"', '"constructor"', '{"dtype":"F32"}', '-8', '1e308', 'null', '[]']), readSafetensors);
      const set = writeSafetensorsSet(dir, 'fz.safetensors', sample(), { partBytes: 8 });
      const idx = fuzz('index', dir, 'fz.safetensors.index.json', mutations(fs.readFileSync(set.index!), 12, 600, ['"../x.safetensors"', '"/etc/passwd"', '"."', '"__proto__"', 'null', '{}']), loadSafetensors);
      console.log(`      safetensors: ${one.loaded} loaded, ${one.refused} refused; index: ${idx.loaded} loaded, ${idx.refused} refused`);
      assert.ok(one.refused > 2000 && idx.refused > 100);
    });
  });

  describe('.npy and JSON batches', () => {
    it('.npy: short body, bad header length, negative / NaN / huge shape are named errors', () => {
      const file = path.join(dir, 'a.npy');
      writeNpy(file, randomFloats(6, 3), [2, 3]);
      const good = fs.readFileSync(file);
      assert.deepEqual(readNpy(file).dims, [2, 3]);
      const put = (b: Buffer) => { fs.writeFileSync(file, b); return file; };
      assert.throws(() => readNpy(put(good.subarray(0, good.length - 4))), named('INVALID_ARGUMENT', /needs 24 data bytes; the file has 20/));
      const longHeader = Buffer.from(good);
      longHeader.writeUInt16LE(60000, 8);
      assert.throws(() => readNpy(put(longHeader)), named('INVALID_ARGUMENT', /header length 60000 runs past the end/));
      const withShape = (shape: string) => put(Buffer.from(good.toString('latin1').replace("'shape': (2, 3)", `'shape': (${shape})`.padEnd("'shape': (2, 3)".length)), 'latin1'));
      assert.throws(() => readNpy(withShape('-2, 3')), named('INVALID_ARGUMENT', /non-negative integers/));
      assert.throws(() => readNpy(withShape('nan, 3')), named('INVALID_ARGUMENT', /non-negative integers/));
      assert.throws(() => readNpy(withShape('99999, 9')), named('INVALID_ARGUMENT', /needs 3599964 data bytes; the file has \d+\)/));
      assert.throws(() => readNpy(withShape('99999999999')), named('INVALID_ARGUMENT', /more elements than/));
      assert.throws(() => readNpy('/dev/zero'), named('INVALID_ARGUMENT', /not a regular file/));
    });

    it('JSON batches: null, a number, dims ≠ data, negative dims, unknown and missing inputs are named errors', async () => {
      const folder = path.join(dir, 'json');
      fs.mkdirSync(folder);
      const file = path.join(folder, 'b.json');
      const first = async (content: string, inputs = ['x']) => {
        fs.writeFileSync(file, content);
        for await (const b of batchesFrom(folder, inputs)) return b;
      };
      await assert.rejects(first('null'), named('INVALID_ARGUMENT', /expected a JSON object, got null/));
      await assert.rejects(first('3'), named('INVALID_ARGUMENT', /expected a JSON object, got number/));
      await assert.rejects(first('{"dims": [2, 2], "data": [1, 2, 3]}'), named('INVALID_ARGUMENT', /dims \[2,2\] \(4 values\) but 3 data values/));
      await assert.rejects(first('{"dims": [-1, 3], "data": [1, 2, 3]}'), named('INVALID_ARGUMENT', /non-negative integers/));
      await assert.rejects(first('{"dims": [3], "data": [1, "a", 3]}'), named('INVALID_ARGUMENT', /data\[1\] is "a"/));
      await assert.rejects(first('{"y": {"dims": [1], "data": [1]}}', ['x']), named('INVALID_ARGUMENT', /"y" is not an input of the model; its inputs: x/));
      await assert.rejects(first('{"x": {"dims": [1], "data": [1]}}', ['x', 'z']), named('INVALID_ARGUMENT', /no value for input z/));
      const ok = await first('{"x": {"dims": [1, 2], "data": [1, 2]}}');
      assert.deepEqual(ok!.x.dims, [1, 2]);
    });

    it('fuzz: 2000 mutated .npy files and 2000 mutated JSON batches load or are refused by name', async () => {
      const npy = path.join(dir, 'src.npy');
      writeNpy(npy, randomFloats(12, 4), [3, 4]);
      const a = fuzz('npy', dir, 'fz.npy', mutations(fs.readFileSync(npy), 13, 2000, ["'shape': (-1,)", "'descr': '<f4'", '\x00', "'fortran_order': True"]), readNpy);
      const folder = path.join(dir, 'jfuzz');
      fs.mkdirSync(folder);
      const json = Buffer.from(JSON.stringify({ x: { dims: [2, 2], data: [1, 2, 3, 4] } }));
      let loaded = 0;
      let refused = 0;
      for (const content of mutations(json, 14, 2000, ['null', '"__proto__"', '-1', '[]', '{"dims":[]}', '1e400'])) {
        fs.writeFileSync(path.join(folder, 'b.json'), content);
        try {
          for await (const b of batchesFrom(folder, ['x'])) assert.ok(b.x.dims.length >= 0);
          loaded++;
        } catch (e) {
          if (!(e instanceof QuantbookError)) assert.fail(`JSON batch ${content.toString()}: ${(e as Error).stack}`);
          refused++;
        }
      }
      console.log(`      npy: ${a.loaded} loaded, ${a.refused} refused; JSON: ${loaded} loaded, ${refused} refused`);
      assert.ok(a.refused > 1000 && refused > 1000);
    });
  });

  describe('ONNX models, Arrow statistics, session configs', () => {
    it('fuzz: 1500 mutated ONNX files load (and validate) or are refused by name', () => {
      const b = new GraphBuilder('small');
      const x = b.input('x', DataType.FLOAT, [1, 2, 4, 4]);
      const c = b.op('Conv', [x, b.constant('w', DataType.FLOAT, [3, 2, 3, 3], randomFloats(54, 2)), b.constant('b', DataType.FLOAT, [3], [0.1, 0.2, 0.3])], { pads: [1, 1, 1, 1] }, 'conv');
      b.output(b.op('Relu', [c]), DataType.FLOAT, [1, 3, 4, 4]);
      const bytes = Buffer.from(new Model(b.model({ opset: 13, irVersion: 7 })).toBytes());
      const r = fuzz('onnx', dir, 'fz.onnx', mutations(bytes, 15, 1500), (file) => {
        const m = loadModel(file);
        // what a quantization run reads first: the graph index and every node's inputs
        for (const n of m.graph.nodes) for (const i of n.input) if (i) m.graph.hasTensor(i);
      });
      console.log(`      onnx: ${r.loaded} loaded, ${r.refused} refused`);
      assert.ok(r.refused > 500);
    });

    it('fuzz: 1000 mutated Arrow statistics files and 1000 mutated session configs load or are refused by name', async () => {
      const stats = path.join(dir, 'src.arrow');
      const { x } = clsBatch();
      const per = x.dims.slice(1).reduce((a, b) => a * b, 1);
      const ort = await import('onnxruntime-node');
      const small = new ort.Tensor('float32', (x.data as Float32Array).slice(0, 2 * per), [2, ...x.dims.slice(1)]);
      (await calibrate(loadModel(MODELS.cls), [{ x: small }], { observer: 'histogram', tensors: undefined })).save(stats);
      const a = fuzz('arrow', dir, 'fz.arrow', mutations(fs.readFileSync(stats), 16, 1000), readStats);
      const config = Buffer.from(JSON.stringify({ processor_cfg_map: { w8a8_dynamic: { cfg: { act_method: 'minmax' }, disable_names: ['a'] }, save: { output_path: 'o', save_type: ['onnx'], part_file_size: 2 } }, device: 'cpu' }));
      assert.ok(loadSessionConfig((fs.writeFileSync(path.join(dir, 'ok.json'), config), path.join(dir, 'ok.json'))), 'the unmutated config loads');
      const b = fuzz('config', dir, 'fz.json', mutations(config, 17, 1000, ['"__proto__"', '"constructor"', 'null', '[]', '"processorCfgMap"', '1e999']), (file) => loadSessionConfig(file));
      console.log(`      arrow: ${a.loaded} loaded, ${a.refused} refused; config: ${b.loaded} loaded, ${b.refused} refused`);
      assert.ok(a.refused > 300 && b.refused > 300);
    });
  });

  describe('ONNX external data', () => {
    /** A model whose weight lives in `model.onnx.data` with the given location/offset/length entries. */
    const externalModel = (folder: string, entries: Record<string, string>) => {
      const b = new GraphBuilder('ext');
      const x = b.input('x', DataType.FLOAT, [1, 4]);
      b.output(b.op('Add', [x, b.constant('w', DataType.FLOAT, [1, 4], [1, 2, 3, 4])]), DataType.FLOAT, [1, 4]);
      const proto = b.model({ opset: 13, irVersion: 7 });
      const w = proto.graph!.initializer.find((t) => t.name === 'w') ?? makeTensor('w', DataType.FLOAT, [1, 4], Float32Array.of(1, 2, 3, 4));
      fs.writeFileSync(path.join(folder, 'model.onnx.data'), Buffer.from(Float32Array.of(1, 2, 3, 4).buffer));
      w.raw_data = new Uint8Array(0);
      w.float_data = [];
      w.data_location = 1;
      w.external_data = Object.entries(entries).map(([key, value]) => ({ key, value }));
      const file = path.join(folder, 'model.onnx');
      fs.writeFileSync(file, new Model(proto).toBytes());
      return file;
    };

    it('fuzz: 600 models with hostile external-data entries (location, offset, length) load or are refused by name, never reading outside the folder', () => {
      const folder = path.join(dir, 'ext-fuzz');
      fs.mkdirSync(folder);
      fs.symlinkSync('/etc/hostname', path.join(folder, 'escape'));
      const r = seededRandom(18);
      const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
      const locations = ['model.onnx.data', '../model.onnx.data', '/etc/passwd', '.', '', 'escape', 'missing.bin', 'model.onnx.data/', './model.onnx.data', 'a\u0000b', '__proto__', 'model.onnx'];
      const numbers = ['0', '4', '16', '-8', 'NaN', '0.5', '1e30', '99999999999999999999', ' 4', '0x10', '', '64'];
      let loaded = 0;
      let refused = 0;
      for (let i = 0; i < 600; i++) {
        const entries: Record<string, string> = { location: pick(locations) };
        if (r() < 0.7) entries.offset = pick(numbers);
        if (r() < 0.7) entries.length = pick(numbers);
        try {
          const m = loadModel(externalModel(folder, entries));
          assert.equal((m.graph.constantValue('w')!.data as Float32Array).length, 4, JSON.stringify(entries));
          // what loaded came from a regular file inside the folder
          const real = fs.realpathSync(path.join(folder, entries.location));
          assert.ok(real.startsWith(fs.realpathSync(folder) + path.sep) && fs.statSync(real).isFile(), `${JSON.stringify(entries)} read ${real}`);
          loaded++;
        } catch (e) {
          if (!(e instanceof QuantbookError)) assert.fail(`${JSON.stringify(entries)}: ${(e as Error).stack}`);
          refused++;
        }
      }
      console.log(`      external data: ${loaded} loaded, ${refused} refused`);
      assert.ok(loaded > 10 && refused > 300);
    });

    it('offsets −8 / NaN / 0.5 / past the end, location "." or through a symlink out of the folder: named errors; a good one loads', () => {
      const folder = path.join(dir, 'ext');
      fs.mkdirSync(folder);
      assert.deepEqual([...(loadModel(externalModel(folder, { location: 'model.onnx.data', offset: '0', length: '16' })).graph.constantValue('w')!.data as Float32Array)], [1, 2, 3, 4]);
      for (const [entries, pattern] of [
        [{ location: 'model.onnx.data', offset: '-8' }, /offset: got "-8"; expected a non-negative integer/],
        [{ location: 'model.onnx.data', offset: 'NaN' }, /offset: got "NaN"/],
        [{ location: 'model.onnx.data', offset: '0.5' }, /offset: got "0.5"/],
        [{ location: 'model.onnx.data', offset: '64' }, /offset 64 is past the end/],
        [{ location: 'model.onnx.data', length: '-4' }, /length: got "-4"/],
        [{ location: '.' }, /"\." is not a file name inside/],
        [{ location: 'secret' }, /leads outside .* through a symbolic link/],
      ] as Array<[Record<string, string>, RegExp]>) {
        fs.rmSync(path.join(folder, 'secret'), { force: true });
        fs.symlinkSync('/etc/passwd', path.join(folder, 'secret'));
        assert.throws(() => loadModel(externalModel(folder, entries)), named('INVALID_MODEL', pattern), JSON.stringify(entries));
      }
    });
  });
});
