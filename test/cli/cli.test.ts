import * as assert from 'assert';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { loadSafetensors, readStats, verifyFileSet } from '../../sdk';
import { MODELS, tempDir } from '../helpers';
import { clsBatch } from '../ocr-fixtures';

const CLI = path.join(__dirname, '..', '..', 'sdk', 'cli', 'main.js');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A NumPy .npy file (format 1.0) holding one float32 tensor. */
function writeNpy(file: string, t: ort.Tensor): void {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${t.dims.join(', ')}${t.dims.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const pre = Buffer.alloc(10);
  Buffer.from('\x93NUMPY', 'latin1').copy(pre);
  pre[6] = 1;
  pre.writeUInt16LE(header.length, 8);
  const data = t.data as Float32Array;
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

describe('quantbook command', function () {
  const dir = tempDir();
  const data = path.join(dir, 'data');

  before(() => {
    fs.mkdirSync(data);
    const { x } = clsBatch();
    const per = x.dims.slice(1).reduce((a, b) => a * b, 1);
    for (let b = 0; b < 2; b++) {
      const slice = (x.data as Float32Array).slice(b * 8 * per, (b + 1) * 8 * per);
      writeNpy(path.join(data, `batch${b}.npy`), new ort.Tensor('float32', slice, [8, ...x.dims.slice(1)]));
    }
  });

  it('quantize --report writes the models, safetensors, report.html and a JSON summary', () => {
    const out = path.join(dir, 'q');
    const r = run(['quantize', MODELS.cls, '--data', data, '--out', out, '--method', 'histogram', '--disable', 'p2o.Conv.0', '--report', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.processor, 'w8a8');
    assert.ok(summary.layers > 10);
    assert.equal(summary.skipped, 1);
    assert.ok(summary.comparison.length > 10 && summary.comparison.every((c: { sqnrDb: number }) => Number.isFinite(c.sqnrDb)));
    const files = fs.readdirSync(out).sort();
    for (const f of ['quant_model_weight_w8a8.safetensors', 'quant_model_description_w8a8.json', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8.onnx', 'report.html']) assert.ok(files.includes(f), `${f} in ${files}`);
    assert.ok(loadSafetensors(path.join(out, 'quant_model_weight_w8a8.safetensors')).tensors.size > 0);
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(html, /Plotly\.newPlot\("sqnr"/);
    // the report is published in the same set as the models it describes (one manifest, one swap)
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'ch_ppocr_mobile_v2.0_cls_infer_w8a8.manifest.json'), 'utf8'));
    assert.ok(manifest.files.some((f: { name: string }) => f.name === 'report.html'), 'report.html in the manifest');
    assert.ok(manifest.files.some((f: { name: string }) => f.name === 'ch_ppocr_mobile_v2.0_cls_infer_w8a8.onnx'));
    assert.match(html, /data hash<\/td><td>xxh3-128:[0-9a-f]{32}/);
    assert.ok(!/<script src=/.test(html), 'no external scripts');
  });

  it('quantize from a session config file (snake_case) and --save-type', () => {
    const cfg = path.join(dir, 'session.json');
    fs.writeFileSync(cfg, JSON.stringify({ processor_cfg_map: { w8a8_dynamic: { cfg: { act_method: 'minmax' }, disable_names: [] } } }));
    const out = path.join(dir, 'dyn');
    const r = run(['quantize', MODELS.cls, '--config', cfg, '--out', out, '--save-type', 'safe_tensor', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.ok(fs.existsSync(path.join(out, 'quant_model_description_w8a8_dynamic.json')));
    assert.ok(!fs.existsSync(path.join(out, 'ch_ppocr_mobile_v2.0_cls_infer_w8a8_dynamic.onnx')));
  });

  it('calibrate writes Arrow statistics; compare prints per-layer errors', () => {
    const stats = path.join(dir, 'stats.arrow');
    const c = run(['calibrate', MODELS.cls, '--data', data, '--out', stats, '--observer', 'percentile', '--max-batches', '1', '--histogram-sample', '4096', '--json']);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(JSON.parse(c.stdout).metadata.batches, '1');
    assert.equal(JSON.parse(c.stdout).metadata.histogram_values, 'about 4096 values per tensor and batch (every k-th value, odd k)');
    const bad = run(['calibrate', MODELS.cls, '--data', data, '--out', stats, '--histogram-sample', '-3']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--histogram-sample: got "-3"; expected a whole number \(0 or more\)/);
    assert.ok(readStats(stats).rows.every((row) => row.observer === 'percentile'));
    const cmp = run(['compare', MODELS.cls, path.join(dir, 'q', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8.onnx'), '--data', data, '--max-batches', '1']);
    assert.equal(cmp.code, 0, cmp.stderr);
    assert.match(cmp.stdout, /^layer\s+op\s+SQNR dB\s+own SQNR dB\s+cosine/);
    assert.ok(cmp.stdout.trim().split('\n').length > 5);
    // the original (opset-older, BN unfolded) float model still gets every layer's own error, and the worst are named
    const convRows = cmp.stdout.split('\n').filter((l) => /^\S+\s+Conv\s/.test(l));
    assert.ok(convRows.length > 10 && convRows.every((l) => /^\S+\s+Conv\s+-?\d+\.\d\d\s+-?\d+\.\d\d\s/.test(l)), convRows.join('\n'));
    // each model output row names its output, as --json does
    const json = run(['compare', MODELS.cls, path.join(dir, 'q', 'ch_ppocr_mobile_v2.0_cls_infer_w8a8.onnx'), '--data', data, '--max-batches', '1', '--json']);
    const outputs = (JSON.parse(json.stdout) as Array<{ opType: string; tensor: string }>).filter((r) => r.opType === 'output').map((r) => r.tensor);
    assert.ok(outputs.length > 0);
    for (const o of outputs) assert.ok(cmp.stdout.split('\n').some((l) => l.startsWith(`(model output ${o})`)), `output ${o} named in\n${cmp.stdout}`);
    assert.match(cmp.stdout, /where error is born .*, worst first: \S+ -?\d+\.\d dB/);
  });

  it('--data folders: labels.json beside images or batches is not a batch (the shipped data/cls with --image-size)', () => {
    const cls = path.join(__dirname, '..', '..', '..', 'data', 'cls');
    assert.ok(fs.existsSync(path.join(cls, 'labels.json')), 'data/cls ships labels.json');
    const stats = path.join(dir, 'cls-images.arrow');
    const r = run(['calibrate', MODELS.cls, '--data', cls, '--image-size', '48x192', '--batch-size', '4', '--max-batches', '1', '--out', stats, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).metadata.batches, '1');
    // a folder of .npy batches with labels.json and meta.json beside them: the two batches only
    const mixed = path.join(dir, 'with-labels');
    fs.mkdirSync(mixed);
    for (const f of fs.readdirSync(data)) fs.copyFileSync(path.join(data, f), path.join(mixed, f));
    fs.writeFileSync(path.join(mixed, 'labels.json'), JSON.stringify({ 'batch0.npy': '0' }));
    fs.writeFileSync(path.join(mixed, 'meta.json'), JSON.stringify({ source: 'test' }));
    const b = run(['calibrate', MODELS.cls, '--data', mixed, '--out', path.join(dir, 'mixed.arrow'), '--histogram-sample', '1024', '--json']);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(JSON.parse(b.stdout).metadata.batches, '2');
  });

  it('two quantize runs into one folder at once: each ends whole (exit 0) or is turned away (LOCKED, exit 4); the folder holds one whole set', async () => {
    const out = path.join(dir, 'twice');
    const start = (method: string) => new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [CLI, 'quantize', MODELS.cls, '--data', data, '--out', out, '--method', method, '--quiet']);
      let stderr = '';
      c.stderr.on('data', (d) => { stderr += d; });
      c.on('exit', (code) => resolve({ code, stderr }));
    });
    const results = await Promise.all([start('minmax'), start('histogram')]);
    for (const r of results) assert.ok(r.code === 0 || (r.code === 4 && /being written by another quantbook process/.test(r.stderr)), `exit ${r.code}: ${r.stderr}`);
    assert.ok(verifyFileSet(out, 'ch_ppocr_mobile_v2.0_cls_infer_w8a8').ok);
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'ch_ppocr_mobile_v2.0_cls_infer_w8a8_summary.json'), 'utf8'));
    assert.ok(['minmax', 'histogram'].includes(summary.actMethod));
  });

  it('output problems are found before calibration (exit 2): --out is a file, json_name collides with the summary, config and --out name two folders; a malformed graph exits 2', () => {
    const file = path.join(dir, 'not-a-folder');
    fs.writeFileSync(file, 'x');
    const t0 = Date.now();
    const onFile = run(['quantize', MODELS.cls, '--data', data, '--out', path.join(file, 'sub')]);
    assert.equal(onFile.code, 2, onFile.stderr);
    assert.match(onFile.stderr, /output folder .*not-a-folder is a file, not a folder/);
    const cfg = path.join(dir, 'collide.json');
    fs.writeFileSync(cfg, JSON.stringify({ processor_cfg_map: { w8a8: {}, save: { output_path: path.join(dir, 'c'), json_name: 'ch_ppocr_mobile_v2.0_cls_infer_w8a8_summary.json' } } }));
    const collide = run(['quantize', MODELS.cls, '--data', data, '--out', path.join(dir, 'c'), '--config', cfg]);
    assert.equal(collide.code, 2, collide.stderr);
    assert.match(collide.stderr, /the summary and json_name would both be written as "ch_ppocr_mobile_v2.0_cls_infer_w8a8_summary.json"/);
    const two = run(['quantize', MODELS.cls, '--data', data, '--out', path.join(dir, 'elsewhere'), '--config', cfg]);
    assert.equal(two.code, 2, two.stderr);
    assert.match(two.stderr, /save.output_path ".*c" and --out ".*elsewhere" name two folders/);
    // none of these calibrated (each is refused in the time a process takes to start and load the model)
    assert.ok(!fs.existsSync(path.join(dir, 'c')) && !fs.existsSync(path.join(dir, 'elsewhere')));
    console.log(`      three refusals in ${Date.now() - t0} ms`);
    // a graph whose node reads a tensor nothing provides
    const model = fs.readFileSync(MODELS.cls);
    const proto = require('../../sdk').proto.decodeModel(model);
    proto.graph.node[3].input[0] = 'nowhere';
    const broken = path.join(dir, 'dangling.onnx');
    fs.writeFileSync(broken, require('../../sdk').proto.encodeModel(proto));
    const dangling = run(['quantize', broken, '--data', data, '--out', path.join(dir, 'd')]);
    assert.equal(dangling.code, 2, dangling.stderr);
    assert.match(dangling.stderr, /reads "nowhere", which no node, input or initializer/);
  });

  it('--dynamic --method reaches the dynamic processor (mixed → mix), which warns that it has no effect without fa3; an unknown method exits 2', () => {
    const mixed = run(['quantize', MODELS.cls, '--data', data, '--out', path.join(dir, 'dyn-mixed'), '--dynamic', '--method', 'mixed', '--quiet']);
    assert.equal(mixed.code, 0, mixed.stderr);
    assert.match(mixed.stderr, /act_method 'mix' has no effect without fa3/);
    const bogus = run(['quantize', MODELS.cls, '--data', data, '--out', path.join(dir, 'dyn-bogus'), '--dynamic', '--method', 'kl']);
    assert.equal(bogus.code, 2);
    assert.match(bogus.stderr, /--method: got "kl"; expected one of minmax, histogram, mixed/);
  });

  it('--speed-fallback: the measured layer times reach stdout and the summary; layers kept float carry the profile as their reason; with --dynamic it exits 2', () => {
    const out = path.join(dir, 'speed');
    const r = run(['quantize', MODELS.cls, '--data', data, '--out', out, '--speed-fallback', '--op-set', 'extended', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const printed = JSON.parse(r.stdout);
    const summary = JSON.parse(fs.readFileSync(path.join(out, fs.readdirSync(out).find((f) => f.endsWith('_summary.json'))!), 'utf8'));
    for (const report of [printed.speedFallback, summary.speedFallback]) {
      assert.ok(report, 'no speedFallback report');
      assert.equal(report.layers.length, printed.layers + report.keptFloat.length);
      assert.ok(report.latencyMs.float > 0 && report.latencyMs.allInt8 > 0);
    }
    for (const name of summary.speedFallback.keptFloat) assert.match(summary.skipped.find((s: { name: string }) => s.name === name).reason, /int8 slower than float on this CPU/);
    const dynamic = run(['quantize', MODELS.cls, '--data', data, '--out', path.join(dir, 'speed-dyn'), '--speed-fallback', '--dynamic']);
    assert.equal(dynamic.code, 2);
    assert.match(dynamic.stderr, /--speed-fallback: applies to static W8A8/);
  });

  it('bad input: exit code 2 with what is allowed; unsupported device: exit code 3', () => {
    const unknown = run(['quantize', MODELS.cls, '--data', data, '--out', dir, '--methd', 'minmax']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown option --methd; allowed: --data, .*--method/);
    const noData = run(['quantize', MODELS.cls, '--data', path.join(dir, 'nope'), '--out', dir]);
    assert.equal(noData.code, 2);
    assert.match(noData.stderr, /--data folder not found/);
    const badKey = path.join(dir, 'bad.json');
    fs.writeFileSync(badKey, JSON.stringify({ processor_cfg_map: { w8a8: { cfg: { act_methd: 'minmax' } } } }));
    const bad = run(['quantize', MODELS.cls, '--data', data, '--out', dir, '--config', badKey]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /w8a8.cfg: unknown key "act_methd"; allowed: act_method, op_set/);
    const npu = run(['quantize', MODELS.cls, '--data', data, '--out', dir, '--device', 'npu']);
    assert.equal(npu.code, 3);
    assert.match(npu.stderr, /device 'npu': missing/);
    assert.equal(run(['frobnicate']).code, 2);
  });
});
