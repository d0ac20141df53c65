import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { CalibrationResult, QuantbookError, Runner, calibrate, defaultTargets, loadModel, loopReductions } from '../../sdk';
import { MODELS, randomFloats, tempDir } from '../helpers';

const recBatch = (seed: number) => ({ x: new ort.Tensor('float32', randomFloats(2 * 3 * 48 * 160, seed), [2, 3, 48, 160]) });

/** A .npy (format 1.0, little-endian float32, C order) writer for the folder test. */
function writeNpy(file: string, data: Float32Array, shape: number[]): void {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat(64 - ((10 + header.length + 1) % 64)) + '\n';
  const pre = Buffer.alloc(10);
  pre.writeUInt8(0x93, 0);
  pre.write('NUMPY', 1, 'latin1');
  pre.writeUInt8(1, 6);
  pre.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

describe('calibrator on PP-OCRv4 rec', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const model = loadModel(MODELS.rec);
  const batches = [recBatch(1), recBatch(2), recBatch(3)];
  let result: CalibrationResult;
  const progress: number[] = [];

  before(async () => {
    result = await calibrate(model, batches, { observer: 'minmax', onProgress: (p) => progress.push(p.batch) });
  });

  it('observes the activation input of every quantizable layer', () => {
    const targets = defaultTargets(model);
    assert.equal(result.targets.length, targets.length);
    const layers = new Set(targets.flatMap((t) => t.layers.map((l) => l.name)));
    const quantizable = model.graph.nodes.filter((n) => ['Conv', 'MatMul', 'AveragePool', 'GlobalAveragePool'].includes(n.op_type!));
    assert.equal(layers.size, quantizable.length);
    assert.deepEqual(progress, [1, 2, 3]);
  });

  it('min/max statistics equal a direct computation over the same batches', async () => {
    const runner = await Runner.create(model, { expose: result.targets.map((t) => t.tensor) });
    const ref = new Map<string, { min: number; max: number }>();
    for (const b of batches) {
      const { exposed } = await runner.run(b);
      for (const [name, t] of Object.entries(exposed)) {
        const m = loopReductions.minMax(t.data as Float32Array);
        const r = ref.get(name) ?? { min: Infinity, max: -Infinity };
        ref.set(name, { min: Math.min(r.min, m.min), max: Math.max(r.max, m.max) });
      }
    }
    await runner.dispose();
    for (const row of result.rows()) {
      assert.equal(row.min, ref.get(row.tensor)!.min, row.tensor);
      assert.equal(row.max, ref.get(row.tensor)!.max, row.tensor);
      assert.equal(row.batches, 3);
    }
  });

  it('writes an Arrow file and reads it back with identical numbers, and re-quantizes from it', () => {
    const file = path.join(dir, 'rec-minmax.arrow');
    result.save(file);
    const back = CalibrationResult.load(file);
    assert.deepEqual(back.rows(), result.rows());
    for (const t of result.targets) {
      const [a, b] = [result.qparams(t.tensor), back.qparams(t.tensor)];
      assert.deepEqual([...a.scale, ...a.zeroPoint], [...b.scale, ...b.zeroPoint]);
    }
    assert.match(back.metadata.backend, /wasm|cpu|tensorflow/);
    const kernels = JSON.parse(back.metadata.kernels) as Record<string, string>;
    assert.ok(['loop', 'tfjs'].includes(kernels.minMax) && ['loop', 'wasm'].includes(kernels.countCodes), back.metadata.kernels);
  });

  it('a separate process reads the file with the Arrow JS reader', () => {
    const file = path.join(dir, 'rec-minmax.arrow');
    const script = `const a=require('apache-arrow');const fs=require('fs');const t=a.tableFromIPC(fs.readFileSync(process.argv[1]));` +
      `let s=0;for(const v of t.getChild('scale'))s+=v;console.log(JSON.stringify({rows:t.numRows,cols:t.schema.fields.map(f=>f.name),scaleSum:s,backend:t.schema.metadata.get('backend')}))`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script, file], { cwd: path.join(__dirname, '..', '..', '..') }).toString());
    const rows = result.rows();
    assert.equal(out.rows, rows.length);
    assert.ok(out.cols.includes('histogram') && out.cols.includes('zeroPoint'));
    assert.ok(Math.abs(out.scaleSum - rows.reduce((a, r) => a + Math.fround(r.scale), 0)) < 1e-9);
  });

  it('histogram statistics saved once re-quantize with another method without running the model', async () => {
    const hist = await calibrate(model, batches.slice(0, 2), { observer: 'histogram' });
    const file = path.join(dir, 'rec-hist.arrow');
    hist.save(file);
    const same = CalibrationResult.load(file);
    const pct = CalibrationResult.load(file, { observer: 'percentile', observerOptions: { percentile: 0.99 } });
    for (const t of hist.targets) {
      assert.deepEqual([...same.qparams(t.tensor).scale], [...hist.qparams(t.tensor).scale], t.tensor);
      const [lo, hi] = (pct.observers.get(t.tensor) as { clipRange(): [number, number] }).clipRange();
      const row = hist.rows().find((r) => r.tensor === t.tensor)!;
      assert.ok(lo >= row.min - 1e-9 && hi <= row.max + 1e-9);
    }
    assert.throws(() => CalibrationResult.load(path.join(dir, 'rec-minmax.arrow'), { observer: 'entropy' }), /needs histograms/);
  });

  it('can be cancelled; says after how many batches', async () => {
    const ctl = new AbortController();
    await assert.rejects(
      calibrate(model, batches, { signal: ctl.signal, onProgress: () => ctl.abort() }),
      (e: QuantbookError) => e.code === 'CANCELLED' && /after 1 batch$/.test(e.message),
    );
  });

  it('reads batches from a folder of .npy and .json files', async () => {
    const folder = fs.mkdtempSync(path.join(dir, 'calib-'));
    const b0 = batches[0].x;
    writeNpy(path.join(folder, '000.npy'), b0.data as Float32Array, [...b0.dims]);
    const b1 = batches[1].x;
    fs.writeFileSync(path.join(folder, '001.json'), JSON.stringify({ x: { dims: b1.dims, data: Array.from(b1.data as Float32Array) } }));
    fs.writeFileSync(path.join(folder, 'notes.txt'), 'ignored');
    const fromFolder = await calibrate(model, folder);
    const fromArrays = await calibrate(model, batches.slice(0, 2));
    assert.deepEqual(fromFolder.rows().map((r) => [r.min, r.max]), fromArrays.rows().map((r) => [r.min, r.max]));
    await assert.rejects(calibrate(model, path.join(dir, 'nope')), /calibration data folder not found/);
  });
});

describe('calibration from a folder of images', () => {
  it('prepares images as stated (size, BGR, mean/std) and gives the same statistics as the same tensors fed directly', async () => {
    const { DATA_DIR } = await import('../../sdk/eval/ocr-data');
    const model = loadModel(MODELS.cls);
    const folder = path.join(DATA_DIR, 'cls');
    const fromImages = await calibrate(model, { imageFolder: folder, preprocess: { size: [48, 192], mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], channelOrder: 'bgr', batchSize: 40 } }, { maxBatches: 1 });
    assert.equal(fromImages.timing!.batches, 1);
    // the same images through the stretch-to-size path, built by hand
    const { readImage, resizeImage } = await import('../../sdk');
    const files = fs.readdirSync(folder).filter((f) => f.endsWith('.png')).sort().slice(0, 40);
    const data = new Float32Array(40 * 3 * 48 * 192);
    files.forEach((f, i) => {
      const img = resizeImage(readImage(path.join(folder, f)), 192, 48);
      for (let p = 0; p < 48 * 192; p++) for (let c = 0; c < 3; c++) data[i * 3 * 48 * 192 + c * 48 * 192 + p] = (img.data[p * 4 + 2 - c] / 255 - 0.5) / 0.5;
    });
    const direct = await calibrate(model, [{ x: new ort.Tensor('float32', data, [40, 3, 48, 192]) }]);
    assert.deepEqual(fromImages.rows().map((r) => [r.min, r.max]), direct.rows().map((r) => [r.min, r.max]));
  });

  it('names what is wrong with the preprocessing', async () => {
    const model = loadModel(MODELS.cls);
    await assert.rejects(calibrate(model, { imageFolder: '/tmp', preprocess: { size: [48] as never } }), /preprocess.size: got \[48\]; expected \[height, width\] in pixels/);
    await assert.rejects(calibrate(model, { imageFolder: '/no/such/folder', preprocess: { size: [48, 192] } }), /image folder not found/);
  });
});
