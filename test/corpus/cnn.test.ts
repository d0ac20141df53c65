/**
 * The CNN half of the model corpus: every entry writes the same bytes twice, loads in ONNX
 * Runtime at the opset and IR it declares, gives finite outputs that depend on the input, has
 * the quirks its features name, and normalises its activations (per-channel std of each
 * normalisation point's output within [0.5, 2] on the calibration batch).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType } from '../../sdk/onnx/dtype';
import { attributeValue } from '../../sdk/onnx/graph';
import { loadModel } from '../../sdk/onnx/model';
import { ModelProto, NodeProto, int64ToNumber } from '../../sdk/onnx/proto';
import { tempDir } from '../helpers';
import { CNN_CORPUS, CnnEntry } from './cnn';
import { compareModels, excessAmplificationDb, quantizeW8A8 } from '../../sdk';
import { CALIBRATION_SEEDS, HELD_SEEDS } from './quantize-corpus';
import { ChannelStats, tensorFloats, withOutputs } from './normalize';

const SESSION: ort.InferenceSession.SessionOptions = { logSeverityLevel: 3 };

function filesOf(modelPath: string): string[] {
  return [modelPath, `${modelPath}.data`].filter((f) => fs.existsSync(f));
}

const ops = (m: ModelProto, type: string): NodeProto[] => m.graph!.node.filter((n) => n.op_type === type);
const hasAttr = (n: NodeProto, name: string): boolean => n.attribute.some((a) => a.name === name);
const group = (n: NodeProto): number => (attributeValue(n, 'group') as number | undefined) ?? 1;

/** Dims of a weight, from an initializer or a Constant node. */
function weightDims(m: ModelProto, name: string): number[] | undefined {
  const t = m.graph!.initializer.find((x) => x.name === name) ?? ops(m, 'Constant').find((c) => c.output[0] === name)?.attribute[0].t;
  return t?.dims.map(Number);
}

/** What each feature tag promises about the file, checked on the written model. */
const FEATURE_CHECKS: Record<string, (m: ModelProto, file: string) => boolean> = {
  'ir3-initializer-inputs': (m) => int64ToNumber(m.ir_version) === 3 && m.graph!.initializer.every((t) => m.graph!.input.some((i) => i.name === t.name)),
  'initializer-inputs-ir4': (m) => int64ToNumber(m.ir_version) >= 4 && m.graph!.initializer.every((t) => m.graph!.input.some((i) => i.name === t.name)),
  'dropout-ratio': (m) => ops(m, 'Dropout').length > 0 && ops(m, 'Dropout').every((n) => hasAttr(n, 'ratio')),
  'dropout-ratio-input': (m) => ops(m, 'Dropout').length > 0 && ops(m, 'Dropout').every((n) => n.input.length === 2),
  'bn-spatial': (m) => ops(m, 'BatchNormalization').some((n) => attributeValue(n, 'spatial') === 1),
  'bn-as-mul-add': (m) => ops(m, 'BatchNormalization').length === 0 && ops(m, 'Mul').length > 0 && ops(m, 'Add').length > 0,
  lrn: (m) => ops(m, 'LRN').length > 0,
  sum: (m) => ops(m, 'Sum').length > 0,
  upsample: (m) => ops(m, 'Upsample').length > 0,
  'upsample-scales-attribute': (m) => ops(m, 'Upsample').every((n) => hasAttr(n, 'scales') && n.input.length === 1),
  'upsample-scales-input': (m) => ops(m, 'Upsample').every((n) => n.input.length === 2),
  resize: (m) => ops(m, 'Resize').length > 0,
  'constant-node-weights': (m) => m.graph!.initializer.length === 0 && ops(m, 'Constant').length > 0 && ops(m, 'Conv').every((n) => ops(m, 'Constant').some((c) => c.output[0] === n.input[1])),
  'constant-of-shape': (m) => ops(m, 'ConstantOfShape').length > 0,
  'external-data': (_m, file) => fs.existsSync(`${file}.data`) && loadModel(file, { loadExternalData: false }).proto.graph!.initializer.some((t) => t.data_location === 1),
  fp16: (m) => m.graph!.input[0].type!.tensor_type!.elem_type === DataType.FLOAT16 && m.graph!.initializer.some((t) => t.data_type === DataType.FLOAT16) && !m.graph!.initializer.some((t) => t.data_type === DataType.FLOAT),
  'dynamic-batch': (m) => m.graph!.input[0].type!.tensor_type!.shape!.dim[0].dim_param === 'N',
  'clip-attributes': (m) => ops(m, 'Clip').length > 0 && ops(m, 'Clip').every((n) => hasAttr(n, 'min') && hasAttr(n, 'max') && n.input.length === 1),
  'pad-attribute': (m) => ops(m, 'Pad').length > 0 && ops(m, 'Pad').every((n) => hasAttr(n, 'pads')),
  'group-conv': (m) => ops(m, 'Conv').some((n) => group(n) > 1 && weightDims(m, n.input[1])?.[1] !== 1),
  depthwise: (m) => ops(m, 'Conv').some((n) => group(n) > 1 && weightDims(m, n.input[1])?.[1] === 1 && weightDims(m, n.input[1])?.[0] === group(n)),
  'se-block': (m) => ops(m, 'GlobalAveragePool').some((g) => m.graph!.node.some((n) => n.op_type === 'Conv' && n.input[0] === g.output[0])),
  'conv-transpose': (m) => ops(m, 'ConvTranspose').length > 0,
  split: (m) => ops(m, 'Split').length > 0,
  'channel-shuffle': (m) => ops(m, 'Transpose').some((n) => (attributeValue(n, 'perm') as number[]).length === 5),
  hardswish: (m) => ops(m, 'HardSwish').length > 0 || ops(m, 'HardSigmoid').some((h) => ops(m, 'Mul').some((n) => n.input.includes(h.output[0]) && n.input.includes(h.input[0]))),
  swish: (m) => ops(m, 'Sigmoid').some((s) => ops(m, 'Mul').some((n) => n.input.includes(s.output[0]) && n.input.includes(s.input[0]))),
  'nhwc-input': (m) => ops(m, 'Transpose').some((n) => n.input[0] === m.graph!.input[0].name),
  'gemm-only': (m) => ops(m, 'Conv').length === 0 && ops(m, 'Gemm').length > 0,
};

async function run(file: string, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(file, SESSION);
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

async function normalisationStds(e: CnnEntry, model: ModelProto): Promise<Map<string, Float64Array>> {
  const names = e.normalizedTensors();
  const bytes = withOutputs(model, names, e.elementType === 'float16' ? DataType.FLOAT16 : DataType.FLOAT);
  const s = await ort.InferenceSession.create(bytes, SESSION);
  const stats = new Map(names.map((n) => [n, new ChannelStats()]));
  try {
    for (const feeds of e.calibrationFeeds()) {
      const out = await s.run(feeds, names);
      for (const n of names) stats.get(n)!.add(out[n]);
    }
  } finally {
    await s.release();
  }
  return new Map([...stats].map(([n, st]) => [n, st.std()]));
}

describe('corpus: CNN half', () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('has at least 20 entries, unique names, the old zoos\' opset/IR pairs', () => {
    assert.ok(CNN_CORPUS.length >= 20, `${CNN_CORPUS.length} entries`);
    assert.equal(new Set(CNN_CORPUS.map((e) => e.name)).size, CNN_CORPUS.length);
    const pairs = new Set(CNN_CORPUS.map((e) => `${e.opset}/${e.irVersion}`));
    for (const p of ['7/3', '8/3', '9/3', '9/4', '10/5', '11/6', '12/7', '13/7', '17/8', '21/10']) assert.ok(pairs.has(p), `no entry at opset/IR ${p}`);
    for (const e of CNN_CORPUS) {
      assert.equal(e.family, 'cnn');
      assert.match(e.name, /^[a-z0-9][a-z0-9.-]*$/);
      for (const f of e.features) assert.equal(typeof f, 'string');
    }
  });

  for (const e of CNN_CORPUS) {
    it(e.name, async () => {
      const a = tempDir('quantbook-cnn-a-');
      const b = tempDir('quantbook-cnn-b-');
      dirs.push(a, b);
      const file = await e.write(a);
      const again = await e.write(b);
      assert.equal(file, path.join(a, `${e.name}.onnx`));
      const fa = filesOf(file);
      const fb = filesOf(again);
      assert.deepEqual(fa.map((f) => path.basename(f)), fb.map((f) => path.basename(f)), 'same files');
      for (let i = 0; i < fa.length; i++) assert.ok(fs.readFileSync(fa[i]).equals(fs.readFileSync(fb[i])), `${path.basename(fa[i])}: two writes differ`);
      const bytes = fa.reduce((s, f) => s + fs.statSync(f).size, 0);
      assert.ok(bytes < 2 * 2 ** 20, `${bytes} bytes; the corpus keeps models under 2 MB`);

      const model = loadModel(file).proto;
      assert.equal(int64ToNumber(model.ir_version), e.irVersion, 'IR version');
      const opset = model.opset_import.find((o) => !o.domain || o.domain === 'ai.onnx');
      assert.equal(int64ToNumber(opset?.version), e.opset, 'default-domain opset');
      for (const f of e.features) {
        const check = FEATURE_CHECKS[f];
        if (check) assert.ok(check(model, file), `feature ${f} not found in the file`);
      }

      const f1 = e.feeds(1);
      const f2 = e.feeds(2);
      assert.deepEqual(Object.keys(f1), model.graph!.input.filter((i) => !model.graph!.initializer.some((t) => t.name === i.name)).map((i) => i.name));
      const o1 = await run(file, f1);
      const o2 = await run(file, f2);
      for (const name of Object.keys(o1)) {
        const v1 = tensorFloats(o1[name]);
        const v2 = tensorFloats(o2[name]);
        assert.ok(v1.every(Number.isFinite) && v2.every(Number.isFinite), `${name}: non-finite output`);
        let diff = 0;
        let power = 0;
        for (let i = 0; i < v1.length; i++) {
          diff += (v1[i] - v2[i]) ** 2;
          power += v1[i] ** 2;
        }
        assert.ok(diff > 1e-4 * power, `${name}: the output hardly depends on the input (seeds 1 and 2)`);
        const mean = v1.reduce((s, x) => s + x, 0) / v1.length;
        const std = Math.sqrt(v1.reduce((s, x) => s + (x - mean) ** 2, 0) / v1.length);
        assert.ok(std > 1e-3 && Math.max(...v1.map(Math.abs)) < 1e3, `${name}: output spread ${std}, max |x| ${Math.max(...v1.map(Math.abs))}`);
      }

      const stds = await normalisationStds(e, model);
      assert.ok(stds.size > 0, 'no normalisation points');
      for (const [name, std] of stds) {
        const bad = [...std].map((s, c) => [c, s]).filter(([, s]) => !(s >= 0.5 && s <= 2));
        assert.equal(bad.length, 0, `${name}: per-channel std outside [0.5, 2] on the calibration batch: ${bad.slice(0, 5).map(([c, s]) => `channel ${c}: ${s.toFixed(3)}`).join(', ')}`);
      }
    });
  }

  it('carries quantization noise as trained networks do: median excess amplification over four CNNs ≥ −3 dB (random filters: about −10; PP-OCRv4: +1.8 … +9.6)', async function () {
    // the corpus exists so quantization error means what it would on a trained model (align.ts);
    // a generator that drifts back to noise-amplifying random networks fails here
    const dir = tempDir('quantbook-cnn-noise-');
    dirs.push(dir);
    const measured: string[] = [];
    const excess: number[] = [];
    for (const name of ['vgg-bn-op8-ir3', 'alexnet-op7-ir3', 'resnet-basic-op9-ir4', 'mobilenetv2-op10-ir5']) {
      const e = CNN_CORPUS.find((x) => x.name === name)!;
      const r = await quantizeW8A8(loadModel(await e.write(dir)), CALIBRATION_SEEDS.map((s) => e.feeds(s)));
      const layers = r.layers.map((l) => ({ layer: l.name, opType: l.opType, tensor: r.float.graph.node(l.name)!.output[0] }));
      const rows = await compareModels(r.float, r.qdq, layers, HELD_SEEDS.map((s) => e.feeds(s)));
      const x = excessAmplificationDb(rows);
      excess.push(x);
      measured.push(`${name} ${x.toFixed(1)} dB`);
    }
    console.log(`      excess amplification: ${measured.join(', ')}`);
    const median = [...excess].sort((a, b) => a - b)[Math.floor(excess.length / 2)];
    assert.ok(median >= -3, `median ${median.toFixed(1)} dB: ${measured.join(', ')}`);
  });
});
