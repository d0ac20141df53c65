/** The IR version a written model declares follows its opset; IR-3 initializer inputs both ways. */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { DataType, loadModel } from '../../sdk';
import { minIrForOpset } from '../../sdk/onnx/ir-version';
import { decodeModel, encodeModel, int64ToNumber } from '../../sdk/onnx/proto';
import { GraphBuilder } from '../corpus/builder';
import { onnxCheck, requireChecker, runModel, tempDir } from '../helpers';
import * as ort from 'onnxruntime-node';

/** y = x · W + b at `opset`, written as IR 3 does (every initializer also a graph input). */
function ir3Model(opset: number): Uint8Array {
  const g = new GraphBuilder('ir3', 5);
  g.input('x', DataType.FLOAT, [1, 4]);
  g.gaussian('W', [4, 3], 0.5);
  g.gaussian('b', [3], 0.1);
  g.output(g.op('Add', [g.op('MatMul', ['x', 'W'], {}, 'mm'), 'b'], {}, 'y'), DataType.FLOAT, [1, 3]);
  return encodeModel(g.model({ opset, irVersion: 3 }));
}

const fileProto = (file: string) => decodeModel(fs.readFileSync(file));

describe('IR version and opset', function () {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('pairs each opset with the IR version that introduced it', () => {
    assert.deepEqual([7, 8, 9, 10, 11, 13, 15, 17, 19, 21].map(minIrForOpset), [3, 3, 4, 5, 6, 7, 8, 8, 9, 10]);
  });

  it('a model saved with a newer opset than its IR allows gets the IR it needs and loses the IR-3 initializer inputs; the model in memory is left as it was', async function () {
    const m = loadModel(ir3Model(8));
    m.proto.opset_import[0].version = 13; // as an edit that raises the opset without requireOpset would leave it
    const file = path.join(dir, 'raised.onnx');
    m.save(file);
    const written = fileProto(file);
    assert.equal(int64ToNumber(written.ir_version), 7);
    assert.deepEqual(written.graph!.input.map((v) => v.name), ['x']);
    assert.equal(m.irVersion, 3, 'the caller\'s model keeps its IR version');
    assert.equal(m.graph.proto.input.length, 3, 'and its inputs');
    const x = new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4), [1, 4]);
    assert.deepEqual((await runModel(file, { x })).y.data, (await runModel(ir3Model(8), { x })).y.data);
    requireChecker(this);
    onnxCheck(file);
  });

  it('a model that stays at IR 3 lists every initializer as an input, new ones included', function () {
    const m = loadModel(ir3Model(8));
    m.graph.addInitializer({ name: 'extra', type: DataType.FLOAT, dims: [1], data: Float32Array.of(2) });
    const file = path.join(dir, 'still-ir3.onnx');
    m.save(file);
    const written = fileProto(file);
    assert.equal(int64ToNumber(written.ir_version), 3);
    assert.deepEqual(written.graph!.input.map((v) => v.name).sort(), ['W', 'b', 'extra', 'x']);
    requireChecker(this);
    onnxCheck(file);
  });

  it('requireOpset raises the IR version with the opset, never lowers either', () => {
    const m = loadModel(ir3Model(9));
    m.requireOpset(13);
    assert.equal(m.irVersion, 7);
    assert.deepEqual(m.graph.inputNames, ['x']);
    assert.deepEqual(m.graph.proto.input.map((v) => v.name), ['x']);
    m.proto.ir_version = 9;
    m.requireOpset(11);
    assert.equal(m.opsetVersion(''), 13);
    assert.equal(m.irVersion, 9);
  });
});
