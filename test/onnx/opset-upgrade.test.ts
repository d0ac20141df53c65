/**
 * upgradeOpset on tiny old-opset models, one per changed operator and variant: ONNX Runtime
 * runs the original, the converted model must give the same outputs, pass onnx.checker, and
 * keep none of the old attributes. Refusals name every problem node and leave the model as it was.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { DataType, Model, QuantbookError, loadModel, proto, upgradeOpset } from '../../sdk';
import { attributeValue } from '../../sdk/onnx/graph';
import { GraphBuilder, valueInfo } from '../corpus/builder';
import { hasOnnxChecker, onnxCheck, randomFloats, requireChecker, runModel, tempDir } from '../helpers';

type Feeds = Record<string, ort.Tensor>;
const F = DataType.FLOAT;

function floats(dims: number[], seed: number, lo = -3, hi = 3): ort.Tensor {
  return new ort.Tensor('float32', randomFloats(dims.reduce((a, b) => a * b, 1), seed, lo, hi), dims);
}

/** A one-graph model: `build` adds nodes to a builder that already has input x of `shape`. */
function oldModel(opset: number, shape: number[], build: (b: GraphBuilder) => void, irVersion = opset < 9 ? 3 : 4): Uint8Array {
  const b = new GraphBuilder('old');
  b.input('x', F, shape);
  build(b);
  return proto.encodeModel(b.model({ opset, irVersion }));
}

/** Declares graph outputs: float unless given as [name, type]; no shapes (onnx.checker infers them). */
function outputs(b: GraphBuilder, ...names: Array<string | [string, DataType]>): void {
  for (const o of names) b.outputs.push(typeof o === 'string' ? valueInfo(o, F) : valueInfo(o[0], o[1]));
}

function nodesOf(m: Model, op: string): proto.NodeProto[] {
  const found: proto.NodeProto[] = [];
  m.graph.walk((n) => { if (n.op_type === op) found.push(n); });
  return found;
}

function attrNames(n: proto.NodeProto): string[] {
  return n.attribute.map((a) => a.name ?? '');
}

const dir = tempDir('quantbook-opset-');
let saved = 0;

/**
 * Runs `bytes` in ORT, converts it to `target`, runs the result, and compares every output:
 * exactly unless `tolerance` is given (relative, for rewrites whose float steps differ).
 */
async function convertsExactly(ctx: Mocha.Context, bytes: Uint8Array, feeds: Feeds, opts: { target?: number; tolerance?: number } = {}): Promise<Model> {
  const target = opts.target ?? 13;
  const before = await runModel(bytes, feeds); // ORT runs the old opset as it is
  const m = upgradeOpset(loadModel(bytes), target);
  assert.equal(m.opsetVersion(), target);
  const after = await runModel(m.toBytes(), feeds);
  assert.deepEqual(Object.keys(after).sort(), Object.keys(before).sort());
  for (const k of Object.keys(before)) {
    const [a, b] = [before[k], after[k]];
    assert.equal(b.type, a.type, `${k}: element type`);
    assert.deepEqual(b.dims, a.dims, `${k}: shape`);
    const [x, y] = [Array.from(a.data as ArrayLike<number | bigint | boolean>, Number), Array.from(b.data as ArrayLike<number | bigint | boolean>, Number)];
    for (let i = 0; i < x.length; i++) {
      const ok = opts.tolerance === undefined ? Object.is(x[i], y[i]) : Math.abs(x[i] - y[i]) <= opts.tolerance * Math.max(1, Math.abs(x[i]));
      assert.ok(ok, `${k}[${i}]: ${y[i]} after conversion, ${x[i]} before`);
    }
  }
  if (hasOnnxChecker() || process.env.CI) {
    requireChecker(ctx);
    // the checker wants shapes on graph outputs: the ones ORT produced (full_check infers and compares them)
    const copy = m.clone();
    for (const v of copy.proto.graph!.output) {
      const tt = v.type!.tensor_type!;
      tt.shape ??= { dim: after[v.name!].dims.map((d) => ({ dim_value: d })) };
    }
    const file = path.join(dir, `converted-${saved++}.onnx`);
    copy.save(file);
    onnxCheck(file);
  }
  return m;
}

/** The conversion throws UNSUPPORTED matching every pattern, and the model is left byte-identical. */
function refuses(bytes: Uint8Array, patterns: RegExp[], target = 13): string {
  const m = loadModel(bytes);
  const original = Buffer.from(m.toBytes());
  let message = '';
  assert.throws(() => upgradeOpset(m, target), (e: QuantbookError) => {
    message = e.message;
    return e instanceof QuantbookError && e.code === 'UNSUPPORTED';
  });
  for (const p of patterns) assert.match(message, p);
  assert.ok(Buffer.from(m.toBytes()).equals(original), 'the refused model was changed');
  assert.equal(m.opsetVersion(), loadModel(bytes).opsetVersion());
  return message;
}

describe('upgradeOpset: old operators keep their results at opset 13', function () {
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('Upsample and Resize-10 → Resize-13', () => {
    for (const mode of ['nearest', 'linear']) {
      it(`Upsample-7 ${mode} (scales attribute, IR 3)`, async function () {
        const bytes = oldModel(7, [1, 2, 3, 4], (b) => {
          b.node('Upsample', ['x'], { mode, scales: [1, 1, 2, 1.5] }, { name: 'up', outputs: ['y'] });
          outputs(b, 'y');
        });
        const m = await convertsExactly(this, bytes, { x: floats([1, 2, 3, 4], 1) });
        assert.equal(nodesOf(m, 'Upsample').length, 0);
        const [r] = nodesOf(m, 'Resize');
        assert.equal(attributeValue(r, 'coordinate_transformation_mode'), 'asymmetric');
        assert.equal(attributeValue(r, 'nearest_mode'), mode === 'nearest' ? 'floor' : undefined);
        assert.ok(!attrNames(r).includes('scales'));
        assert.deepEqual(r.input.slice(0, 2), ['x', '']);
      });

      it(`Upsample-9 ${mode} (scales input, non-integer factors)`, async function () {
        const bytes = oldModel(9, [1, 2, 5, 4], (b) => {
          b.constant('s', F, [4], Float32Array.of(1, 1, 1.7, 2.5));
          b.node('Upsample', ['x', 's'], { mode }, { name: 'up', outputs: ['y'] });
          outputs(b, 'y');
        });
        await convertsExactly(this, bytes, { x: floats([1, 2, 5, 4], 2) });
      });

      for (const [label, scales] of [['up', [1, 1, 2, 1.5]], ['down', [1, 1, 0.6, 0.45]]] as const) {
        it(`Resize-10 ${mode}, ${label}-sampling`, async function () {
          const bytes = oldModel(10, [1, 1, 7, 9], (b) => {
            b.constant('s', F, [4], Float32Array.from(scales));
            b.node('Resize', ['x', 's'], { mode }, { name: 'rs', outputs: ['y'] });
            outputs(b, 'y');
          });
          const m = await convertsExactly(this, bytes, { x: floats([1, 1, 7, 9], 3) });
          // ORT rounds the source pixel up when down-sampling at opset 10
          if (mode === 'nearest') assert.equal(attributeValue(nodesOf(m, 'Resize')[0], 'nearest_mode'), label === 'up' ? 'floor' : 'ceil');
        });
      }
    }

    it('Upsample-9 nearest whose scales are computed at run time (they are ≥ 1 by definition)', async function () {
      const bytes = oldModel(9, [1, 1, 3, 3], (b) => {
        b.input('k', F, [2]);
        b.constant('ones', F, [2], Float32Array.of(1, 1));
        b.node('Concat', ['ones', 'k'], { axis: 0 }, { name: 'cat', outputs: ['s'] });
        b.node('Upsample', ['x', 's'], {}, { name: 'up', outputs: ['y'] });
        outputs(b, 'y');
      });
      await convertsExactly(this, bytes, { x: floats([1, 1, 3, 3], 4), k: new ort.Tensor('float32', Float32Array.of(2, 3.5), [2]) });
    });

    it('refuses cubic (not an Upsample mode before 11), and Resize-10 nearest with mixed or unknown scales', () => {
      const cubic = oldModel(9, [1, 1, 3, 3], (b) => {
        b.constant('s', F, [4], Float32Array.of(1, 1, 2, 2));
        b.node('Upsample', ['x', 's'], { mode: 'cubic' }, { name: 'up1', outputs: ['y'] });
        outputs(b, 'y');
      });
      refuses(cubic, [/node "up1" \(Upsample, mode "cubic"\): cannot convert from opset 9 to 13: mode "cubic" is not defined/]);
      const mixed = oldModel(10, [1, 1, 5, 4], (b) => {
        b.constant('s', F, [4], Float32Array.of(1, 1, 2.5, 0.6));
        b.node('Resize', ['x', 's'], {}, { name: 'mix', outputs: ['y'] });
        b.input('k', F, [4]);
        b.node('Resize', ['y', 'k'], {}, { name: 'dyn', outputs: ['z'] });
        outputs(b, 'z');
      });
      const message = refuses(mixed, [/2 nodes cannot be converted; the model is unchanged/, /node "mix" \(Resize, mode "nearest"\): cannot convert from opset 10 to 13: its scales \[1, 1, 2\.5, 0\.6\]/, /node "dyn" \(Resize, mode "nearest"\).*computed at run time/]);
      assert.ok(message.indexOf('"mix"') < message.indexOf('"dyn"'));
    });
  });

  describe('Dropout', () => {
    it('Dropout-7 ratio attribute → ratio input', async function () {
      const bytes = oldModel(7, [2, 3], (b) => {
        b.node('Dropout', ['x'], { ratio: 0.3 }, { name: 'drop', outputs: ['d'] });
        b.node('Relu', ['d'], {}, { name: 'relu', outputs: ['y'] });
        outputs(b, 'y');
      });
      const m = await convertsExactly(this, bytes, { x: floats([2, 3], 5) });
      const [d] = nodesOf(m, 'Dropout');
      assert.ok(!attrNames(d).includes('ratio'));
      assert.equal(d.input.length, 2);
      assert.deepEqual(Array.from(m.graph.constantValue(d.input[1])!.data as Float32Array), [Math.fround(0.3)]);
    });

    it('Dropout-7 whose mask (of the input type) is read: the same all-zero mask ORT gave', async function () {
      const bytes = oldModel(7, [2, 3], (b) => {
        b.node('Dropout', ['x'], { ratio: 0.5 }, { name: 'drop', outputs: ['y', 'mask'] });
        b.node('Add', ['mask', 'x'], {}, { name: 'add', outputs: ['z'] });
        outputs(b, 'y', 'mask', 'z');
      });
      const m = await convertsExactly(this, bytes, { x: floats([2, 3], 6) });
      assert.deepEqual(nodesOf(m, 'Dropout')[0].output, ['y']);
    });

    it('Dropout-10 whose bool mask is read', async function () {
      const bytes = oldModel(10, [4], (b) => {
        b.node('Dropout', ['x'], {}, { name: 'drop', outputs: ['y', 'mask'] });
        outputs(b, 'y', ['mask', DataType.BOOL]);
      });
      await convertsExactly(this, bytes, { x: floats([4], 7) });
    });
  });

  describe('BatchNormalization', () => {
    const params = (b: GraphBuilder, dims: number[]) => {
      const n = dims.reduce((a, c) => a * c, 1);
      b.constant('scale', F, dims, randomFloats(n, 11, 0.5, 2));
      b.constant('bias', F, dims, randomFloats(n, 12));
      b.constant('mean', F, dims, randomFloats(n, 13));
      b.constant('var', F, dims, randomFloats(n, 14, 0.1, 3));
    };

    it('spatial=1 is dropped (it is the only form from opset 9)', async function () {
      const bytes = oldModel(7, [2, 3, 4, 4], (b) => {
        params(b, [3]);
        b.node('BatchNormalization', ['x', 'scale', 'bias', 'mean', 'var'], { spatial: 1, epsilon: 1e-3 }, { name: 'bn', outputs: ['y'] });
        outputs(b, 'y');
      });
      const m = await convertsExactly(this, bytes, { x: floats([2, 3, 4, 4], 15) });
      assert.deepEqual(attrNames(nodesOf(m, 'BatchNormalization')[0]), ['epsilon']);
    });

    it('spatial=0 (per-activation statistics) becomes the same arithmetic', async function () {
      const bytes = oldModel(7, [2, 3, 2, 2], (b) => {
        params(b, [3, 2, 2]);
        b.node('BatchNormalization', ['x', 'scale', 'bias', 'mean', 'var'], { spatial: 0 }, { name: 'bn', outputs: ['y'] });
        outputs(b, 'y');
      });
      // ORT's kernel may fuse x·a + b into one rounding; the Mul and Add nodes round twice
      const m = await convertsExactly(this, bytes, { x: floats([2, 3, 2, 2], 16) }, { tolerance: 1e-6 });
      assert.equal(nodesOf(m, 'BatchNormalization').length, 0);
    });

    it('declared training outputs keep it in training mode at 13; refused for 14+, as is spatial=0 in training', async function () {
      const build = (spatial: number) => oldModel(7, [2, 3, 2, 2], (b) => {
        params(b, spatial ? [3] : [3, 2, 2]);
        b.node('BatchNormalization', ['x', 'scale', 'bias', 'mean', 'var'], { spatial }, { name: 'bn', outputs: ['y', 'running_mean', 'running_var', 'saved_mean', 'saved_var'] });
        outputs(b, 'y', 'running_mean');
      });
      await convertsExactly(this, build(1), { x: floats([2, 3, 2, 2], 17) });
      refuses(build(1), [/node "bn" \(BatchNormalization, training outputs\): cannot convert from opset 7 to 14: .*training mode/], 14);
      refuses(build(0), [/node "bn" \(BatchNormalization, spatial=0\): cannot convert from opset 7 to 13/]);
    });
  });

  describe('attributes that became inputs', () => {
    it('TopK-1 k', async function () {
      const bytes = oldModel(9, [3, 7], (b) => {
        b.node('TopK', ['x'], { k: 3, axis: 1 }, { name: 'top', outputs: ['v', 'i'] });
        outputs(b, 'v', ['i', DataType.INT64]);
      });
      const m = await convertsExactly(this, bytes, { x: floats([3, 7], 20) });
      const [t] = nodesOf(m, 'TopK');
      assert.ok(!attrNames(t).includes('k'));
      assert.deepEqual(Array.from(m.graph.constantValue(t.input[1])!.data as BigInt64Array), [3n]);
    });

    it('Slice-1 with axes, and without axes with INT64_MAX ends', async function () {
      const bytes = oldModel(9, [4, 5, 6], (b) => {
        b.node('Slice', ['x'], { starts: [1, -4], ends: [3, 1000], axes: [2, 1] }, { name: 'withAxes', outputs: ['y1'] });
        const big = proto.newAttribute({ name: 'ends', type: proto.AttributeType.INTS, ints: [proto.bigIntToInt64(9223372036854775807n), proto.bigIntToInt64(-1n)] });
        b.node('Slice', ['x'], { starts: [1, 0] }, { name: 'noAxes', outputs: ['y2'] });
        b.nodes[b.nodes.length - 1].attribute.push(big);
        outputs(b, 'y1', 'y2');
      });
      const m = await convertsExactly(this, bytes, { x: floats([4, 5, 6], 21) });
      for (const s of nodesOf(m, 'Slice')) assert.ok(!attrNames(s).some((a) => ['starts', 'ends', 'axes'].includes(a)));
      const noAxes = m.graph.node('noAxes')!;
      assert.equal(noAxes.input.length, 3);
      assert.deepEqual(Array.from(m.graph.constantValue(noAxes.input[2])!.data as BigInt64Array), [9223372036854775807n, -1n]);
    });

    for (const mode of ['constant', 'reflect', 'edge']) {
      it(`Pad-2 mode ${mode}`, async function () {
        const bytes = oldModel(9, [1, 2, 3, 4], (b) => {
          b.node('Pad', ['x'], { mode, pads: [0, 0, 1, 2, 0, 1, 2, 1], ...(mode === 'constant' ? { value: 1.5 } : {}) }, { name: 'pad', outputs: ['y'] });
          outputs(b, 'y');
        });
        const m = await convertsExactly(this, bytes, { x: floats([1, 2, 3, 4], 22) });
        const [p] = nodesOf(m, 'Pad');
        assert.deepEqual(attrNames(p), ['mode']);
        assert.equal(p.input.length, mode === 'constant' ? 3 : 2);
      });
    }

    it('Pad-2 on a float16 tensor whose type is only known through the Cast before it', async function () {
      const bytes = oldModel(9, [2, 3], (b) => {
        b.node('Cast', ['x'], { to: DataType.FLOAT16 }, { name: 'half', outputs: ['h'] });
        b.node('Relu', ['h'], {}, { name: 'relu', outputs: ['r'] });
        b.node('Pad', ['r'], { pads: [1, 0, 0, 1], value: -2.25 }, { name: 'pad', outputs: ['p'] });
        b.node('Cast', ['p'], { to: F }, { name: 'back', outputs: ['y'] });
        outputs(b, 'y');
      });
      const m = await convertsExactly(this, bytes, { x: floats([2, 3], 23) });
      assert.equal(m.graph.initializer(nodesOf(m, 'Pad')[0].input[2])!.data_type, DataType.FLOAT16);
    });

    it('Clip-6 with min and max, with min only, and with neither', async function () {
      const bytes = oldModel(9, [3, 4], (b) => {
        b.node('Clip', ['x'], { min: -0.5, max: 1.25 }, { name: 'both', outputs: ['y1'] });
        b.node('Clip', ['x'], { min: 0.5 }, { name: 'low', outputs: ['y2'] });
        b.node('Clip', ['x'], {}, { name: 'none', outputs: ['y3'] });
        outputs(b, 'y1', 'y2', 'y3');
      });
      const m = await convertsExactly(this, bytes, { x: floats([3, 4], 24) });
      assert.deepEqual(nodesOf(m, 'Clip').map((c) => [attrNames(c).length, c.input.length]), [[0, 3], [0, 2], [0, 1]]);
    });

    it('Squeeze, Unsqueeze, ReduceSum and Split axes/split at opset 11', async function () {
      const bytes = oldModel(11, [2, 1, 6], (b) => {
        b.node('Squeeze', ['x'], { axes: [1] }, { name: 'sq', outputs: ['s'] });
        b.node('Unsqueeze', ['s'], { axes: [0, -1] }, { name: 'unsq', outputs: ['u'] });
        b.node('ReduceSum', ['u'], { axes: [2], keepdims: 0 }, { name: 'sum', outputs: ['r'] });
        b.node('ReduceSum', ['x'], { keepdims: 1 }, { name: 'sumAll', outputs: ['ra'] });
        b.node('Split', ['s'], { axis: 1, split: [1, 2, 3] }, { name: 'split', outputs: ['p0', 'p1', 'p2'] });
        b.node('Split', ['s'], { axis: 1 }, { name: 'halves', outputs: ['h0', 'h1'] });
        outputs(b, 'u', 'r', 'ra', 'p0', 'p1', 'p2', 'h0', 'h1');
      });
      const m = await convertsExactly(this, bytes, { x: floats([2, 1, 6], 25) });
      for (const op of ['Squeeze', 'Unsqueeze', 'ReduceSum', 'Split']) for (const n of nodesOf(m, op)) assert.ok(!attrNames(n).some((a) => a === 'axes' || a === 'split'), `${n.name} keeps its list attribute`);
      assert.equal(m.graph.node('sumAll')!.input.length, 1);
      assert.equal(m.graph.node('halves')!.input.length, 1);
    });
  });

  it('Scatter-9 → ScatterElements', async function () {
    const bytes = oldModel(9, [3, 4], (b) => {
      b.constant('idx', DataType.INT64, [2, 2], BigInt64Array.of(1n, 3n, 0n, 2n));
      b.constant('upd', F, [2, 2], Float32Array.of(10, 20, 30, 40));
      b.node('Scatter', ['x', 'idx', 'upd'], { axis: 1 }, { name: 'sc', outputs: ['y'] });
      outputs(b, 'y');
    });
    const m = await convertsExactly(this, bytes, { x: floats([3, 4], 30) });
    assert.deepEqual(nodesOf(m, 'ScatterElements').map((n) => n.name), ['sc']);
  });

  for (const op of ['Softmax', 'LogSoftmax', 'Hardmax']) {
    it(`${op}-1 over axis 1 of a rank-3 tensor keeps its flatten-to-2-D meaning`, async function () {
      const bytes = oldModel(9, [2, 3, 4], (b) => {
        b.node(op, ['x'], {}, { name: 'sm', outputs: ['y'] });
        b.node(op, ['x'], { axis: 2 }, { name: 'last', outputs: ['z'] });
        outputs(b, 'y', 'z');
      });
      // Exp/Log in a 2-D tensor vs the original: the same kernel on the same rows, so exact
      const m = await convertsExactly(this, bytes, { x: floats([2, 3, 4], 31) });
      assert.equal(attributeValue(m.graph.node('last')!, 'axis'), -1);
      assert.equal(nodesOf(m, 'Flatten').length, 1);
    });
  }

  describe('inside subgraphs', () => {
    it('an If branch: Clip and Unsqueeze rewritten, with their constants in the branch', async function () {
      const branch = (name: string, min: number) => {
        const g = new GraphBuilder(name);
        g.node('Clip', ['x'], { min, max: 1.25 }, { name: `${name}_clip`, outputs: [`${name}_c`] });
        g.node('Unsqueeze', [`${name}_c`], { axes: [0] }, { name: `${name}_unsq`, outputs: [`${name}_out`] });
        g.outputs.push(valueInfo(`${name}_out`, F, [1, 2, 3]));
        return g.graph();
      };
      const bytes = oldModel(9, [2, 3], (b) => {
        b.input('c', DataType.BOOL, []);
        b.node('If', ['c'], { then_branch: branch('then', -0.5), else_branch: branch('else', 0.125) }, { name: 'if1', outputs: ['y'] });
        outputs(b, 'y');
      });
      for (const c of [true, false]) {
        const m = await convertsExactly(this, bytes, { x: floats([2, 3], 40), c: new ort.Tensor('bool', Uint8Array.of(c ? 1 : 0), []) });
        for (const op of ['Clip', 'Unsqueeze']) for (const n of nodesOf(m, op)) assert.deepEqual(attrNames(n), []);
        assert.equal(m.proto.graph!.initializer.length, 0, 'branch constants belong in the branch');
      }
    });

    it('a Loop body: Upsample-9 (scales from the outer graph) and Slice-1 rewritten', async function () {
      const body = new GraphBuilder('body');
      body.input('i', DataType.INT64, []);
      body.input('cond', DataType.BOOL, []);
      body.input('acc', F, [1, 1, 2, 2]);
      body.node('Upsample', ['acc', 'scales'], {}, { name: 'up', outputs: ['big'] });
      body.node('Slice', ['big'], { starts: [1, 1], ends: [3, 3], axes: [2, 3] }, { name: 'crop', outputs: ['next'] });
      body.node('Identity', ['cond'], {}, { name: 'keep', outputs: ['cond_out'] });
      body.outputs.push(valueInfo('cond_out', DataType.BOOL, []), valueInfo('next', F, [1, 1, 2, 2]), valueInfo('big', F, [1, 1, 4, 4]));
      const bytes = oldModel(9, [1, 1, 2, 2], (b) => {
        b.constant('scales', F, [4], Float32Array.of(1, 1, 2, 2));
        b.constant('trips', DataType.INT64, [], BigInt64Array.of(3n));
        b.constant('go', DataType.BOOL, [], Uint8Array.of(1));
        b.node('Loop', ['trips', 'go', 'x'], { body: body.graph() }, { name: 'loop', outputs: ['final', 'bigs'] });
        outputs(b, 'final', 'bigs');
      });
      const m = await convertsExactly(this, bytes, { x: floats([1, 1, 2, 2], 41) });
      assert.equal(nodesOf(m, 'Upsample').length, 0);
      assert.ok(!attrNames(nodesOf(m, 'Slice')[0]).includes('starts'));
    });

    it('a refusal inside a body names the body and its node', () => {
      const body = new GraphBuilder('body');
      body.input('i', DataType.INT64, []);
      body.input('cond', DataType.BOOL, []);
      body.node('Upsample', ['x', 's'], { mode: 'cubic' }, { name: 'inner', outputs: ['u'] });
      body.node('Identity', ['cond'], {}, { name: 'keep', outputs: ['cond_out'] });
      body.outputs.push(valueInfo('cond_out', DataType.BOOL, []), valueInfo('u', F));
      const bytes = oldModel(9, [1, 1, 2, 2], (b) => {
        b.constant('s', F, [4], Float32Array.of(1, 1, 2, 2));
        b.constant('trips', DataType.INT64, [], BigInt64Array.of(1n));
        b.node('Loop', ['trips', ''], { body: body.graph() }, { name: 'loop', outputs: ['us'] });
        outputs(b, 'us');
      });
      refuses(bytes, [/node "inner" \(Upsample, mode "cubic"\) in the body of Loop "loop": cannot convert from opset 9 to 13/]);
    });
  });

  describe('Scan-8 → a Loop over the batch running Scan-9', () => {
    const scan8 = (sequenceLens: boolean) => {
      const body = new GraphBuilder('step');
      body.input('state', F, [2]);
      body.input('xt', F, [2]);
      body.node('Add', ['state', 'xt'], {}, { name: 'acc', outputs: ['next'] });
      body.node('Mul', ['next', 'w'], {}, { name: 'weigh', outputs: ['yt'] }); // w: an outer-scope weight
      body.outputs.push(valueInfo('next', F, [2]), valueInfo('yt', F, [2]));
      return oldModel(8, [2, 3, 2], (b) => {
        b.input('s0', F, [2, 2]);
        b.constant('w', F, [2], Float32Array.of(0.5, -2));
        if (sequenceLens) b.constant('lens', DataType.INT32, [2], Int32Array.of(3, 2));
        b.node('Scan', [sequenceLens ? 'lens' : '', 's0', 'x'], { body: body.graph(), num_scan_inputs: 1, directions: [1] }, { name: 'scan8', outputs: ['sN', 'ys'] });
        outputs(b, 'sN', 'ys');
      });
    };

    it('batch of 2, reversed scan input, outer-scope weight in the body', async function () {
      const m = await convertsExactly(this, scan8(false), { x: floats([2, 3, 2], 80), s0: floats([2, 2], 81) });
      const [loop] = nodesOf(m, 'Loop');
      assert.equal(loop.name, 'scan8');
      const [inner] = nodesOf(m, 'Scan');
      assert.deepEqual(attrNames(inner).sort(), ['body', 'num_scan_inputs', 'scan_input_directions']);
      assert.deepEqual(attributeValue(inner, 'scan_input_directions'), [1]);
    });

    it('with sequence_lens it is refused by name', () => {
      refuses(scan8(true), [/node "scan8" \(Scan, sequence_lens\): cannot convert from opset 8 to 13: its sequence_lens input "lens"/]);
    });
  });

  describe('refusals and targets', () => {
    it('an operator not known to keep its meaning is refused by name, with every problem node listed', () => {
      const bytes = oldModel(7, [1, 2, 2, 2], (b) => {
        b.node('ImageScaler', ['x'], { scale: 2, bias: [0.5, 1.5] }, { name: 'scaler', outputs: ['s'] });
        b.node('Resize', ['s'], {}, { name: 'resize7', outputs: ['r'] });
        b.node('Relu', ['r'], {}, { name: 'ok', outputs: ['y'] });
        outputs(b, 'y');
      });
      refuses(bytes, [/^upgradeOpset: 2 nodes cannot be converted; the model is unchanged/, /node "scaler" \(ImageScaler\): cannot convert from opset 7 to 13: not a standard ONNX operator/, /node "resize7" \(Resize\): .*Resize does not exist at opset 7 \(it was added at opset 10\)/]);
    });

    it('lists six problem nodes and counts the rest', () => {
      const bytes = oldModel(9, [2], (b) => {
        let t = 'x';
        for (let i = 0; i < 8; i++) t = b.node('Frobnicate', [t], {}, { name: `f${i}`, outputs: [`t${i}`] })[0];
        outputs(b, t);
      });
      const message = refuses(bytes, [/8 nodes cannot be converted/, /node "f5"/, /… and 2 more/]);
      assert.ok(!message.includes('"f6"'));
    });

    it('models at or above the target come back unchanged; opsets before 7 and targets past 17 are refused', () => {
      const at13 = oldModel(13, [2], (b) => { b.node('Relu', ['x'], {}, { name: 'r', outputs: ['y'] }); outputs(b, 'y'); }, 7);
      const m = loadModel(at13);
      assert.equal(upgradeOpset(m, 11), m);
      assert.ok(Buffer.from(m.toBytes()).equals(Buffer.from(loadModel(at13).toBytes())));
      assert.equal(upgradeOpset(loadModel(at13), 13).opsetVersion(), 13);
      refuses(oldModel(6, [2], (b) => { b.node('Relu', ['x'], {}, { name: 'r', outputs: ['y'] }); outputs(b, 'y'); }), [/cannot convert from opset 6 to 13: opset 6 is older than 7/]);
      refuses(at13, [/target opset 18: quantbook converts models up to opset 17/], 18);
    });

    it('an IR-3 model gets the IR version of its new opset, its added constants unlisted as inputs', async function () {
      const bytes = oldModel(7, [2, 3], (b) => {
        b.constant('w', F, [3], Float32Array.of(1, 2, 3));
        b.node('Mul', ['x', 'w'], {}, { name: 'mul', outputs: ['m'] });
        b.node('Clip', ['m'], { min: 0.5, max: 4.5 }, { name: 'clip', outputs: ['y'] });
        outputs(b, 'y');
      });
      assert.equal(loadModel(bytes).irVersion, 3);
      assert.ok(loadModel(bytes).proto.graph!.input.some((v) => v.name === 'w'));
      const m = await convertsExactly(this, bytes, { x: floats([2, 3], 50) });
      assert.equal(m.irVersion, 7);
      assert.deepEqual(m.graph.inputNames, ['x']);
      assert.deepEqual(m.proto.graph!.input.map((v) => v.name), ['x']);
    });

    for (const target of [10, 11]) {
      it(`to opset ${target}: Upsample-7 becomes Resize-${target}${target === 11 ? ' with an empty roi input' : ''}, TopK and Slice take inputs`, async function () {
        const bytes = oldModel(7, [1, 1, 3, 4], (b) => {
          b.node('Upsample', ['x'], { scales: [1, 1, 2, 2.5] }, { name: 'up', outputs: ['u'] });
          b.node('Slice', ['u'], { starts: [1], ends: [5], axes: [3] }, { name: 'crop', outputs: ['c'] });
          b.node('TopK', ['c'], { k: 2 }, { name: 'top', outputs: ['y', 'i'] });
          outputs(b, 'y', ['i', DataType.INT64]);
        });
        const m = await convertsExactly(this, bytes, { x: floats([1, 1, 3, 4], 70) }, { target });
        const [r] = nodesOf(m, 'Resize');
        assert.equal(r.input.length, target === 10 ? 2 : 3);
        if (target === 11) assert.deepEqual(m.graph.initializer(r.input[1])!.dims.map(Number), [0]);
        assert.equal(m.irVersion, target === 10 ? 5 : 6);
      });
    }

    it('to opset 17: RoiAlign-10 keeps output_half_pixel, BatchNormalization and the rest carry over', async function () {
      const bytes = oldModel(10, [1, 2, 6, 6], (b) => {
        b.constant('rois', F, [2, 4], Float32Array.of(0.5, 0.5, 4.2, 3.7, 1, 0, 5, 5.5));
        b.constant('bi', DataType.INT64, [2], BigInt64Array.of(0n, 0n));
        b.node('RoiAlign', ['x', 'rois', 'bi'], { output_height: 2, output_width: 3, sampling_ratio: 2 }, { name: 'roi', outputs: ['r'] });
        b.constant('scale', F, [2], Float32Array.of(1, 2));
        b.constant('bias', F, [2], Float32Array.of(0, 1));
        b.constant('mean', F, [2], Float32Array.of(0.5, -1));
        b.constant('var', F, [2], Float32Array.of(2, 0.5));
        b.node('BatchNormalization', ['r', 'scale', 'bias', 'mean', 'var'], {}, { name: 'bn', outputs: ['n'] });
        b.node('Reshape', ['n', 'shape'], {}, { name: 'flat', outputs: ['y'] });
        b.constant('shape', DataType.INT64, [2], BigInt64Array.of(2n, -1n));
        outputs(b, 'y');
      }, 5);
      const m = await convertsExactly(this, bytes, { x: floats([1, 2, 6, 6], 60) }, { target: 17 });
      assert.equal(attributeValue(nodesOf(m, 'RoiAlign')[0], 'coordinate_transformation_mode'), 'output_half_pixel');
      assert.equal(m.irVersion, 8);
    });
  });
});
