import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as ort from 'onnxruntime-node';
import { loadModel, quantizeW8A8, quantizeW8A8Dynamic } from '../../sdk';
import { scopes } from '../../sdk/onnx/scopes';
import { quantizeRowsTransposed } from '../../sdk/quantize/lstm';
import { CORPUS } from '../corpus';
import { CALIBRATION_SEEDS, HELD_SEEDS, outputSqnr } from '../corpus/quantize-corpus';
import { randomFloats, tempDir } from '../helpers';

const entry = (name: string) => CORPUS.find((e) => e.name === name)!;

describe('LSTM layers with int8 weights (com.microsoft.DynamicQuantizeLSTM)', () => {
  const dir = tempDir();
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('weights are stored transposed per (direction, gate row): unpacked independently, they are the float weights within half a step', () => {
    const [d, rows, cols] = [2, 8, 5];
    const w = randomFloats(d * rows * cols, 3, -2, 2);
    w[7] = 0; // a row with a zero does not matter; a zero row gets scale 1
    for (let c = 0; c < cols; c++) w[(1 * rows + 3) * cols + c] = 0;
    const q = quantizeRowsTransposed(w, d, rows, cols);
    for (let k = 0; k < d; k++) for (let r = 0; r < rows; r++) {
      const s = q.scale[k * rows + r];
      const max = Math.max(...Array.from({ length: cols }, (_, c) => Math.abs(w[(k * rows + r) * cols + c])));
      assert.equal(s, max > 0 ? Math.fround(max / 127) : 1, `scale of (${k}, ${r})`);
      for (let c = 0; c < cols; c++) {
        const stored = q.int8[(k * cols + c) * rows + r]; // [dir, cols, rows]
        assert.ok(Math.abs(stored * s - w[(k * rows + r) * cols + c]) <= s / 2 + 1e-7, `(${k}, ${r}, ${c})`);
      }
    }
  });

  for (const name of ['lstm-op7-ir3', 'lstm-bidir-op14']) {
    it(`${name}: every LSTM becomes DynamicQuantizeLSTM in W8A8_DYNAMIC and static W8A8; ORT runs it; output SQNR ≥ 25 dB; the fake-quant model keeps standard LSTMs`, async () => {
      const e = entry(name);
      const file = await e.write(dir);
      const held = HELD_SEEDS.map((s) => e.feeds(s));
      const lstms = scopes(loadModel(file)).flatMap((s) => s.graph.nodes.filter((n) => n.op_type === 'LSTM')).length;
      assert.ok(lstms > 0);
      for (const [mode, r] of [['dynamic', quantizeW8A8Dynamic(loadModel(file))], ['static', await quantizeW8A8(loadModel(file), CALIBRATION_SEEDS.map((s) => e.feeds(s)))]] as const) {
        const ops = scopes(r.qdq).flatMap((s) => s.graph.nodes.map((n) => n.op_type));
        assert.equal(ops.filter((o) => o === 'DynamicQuantizeLSTM').length, lstms, `${mode}: ${ops.join(',')}`);
        assert.equal(ops.filter((o) => o === 'LSTM').length, 0);
        assert.equal(r.lstm.length, lstms);
        assert.ok(!r.selection.skipped.some((s) => s.opType === 'LSTM'), 'quantized LSTMs are not listed as kept float');
        assert.ok(r.qdq.proto.opset_import.some((o) => o.domain === 'com.microsoft'));
        const { sqnrDb } = await outputSqnr(file, r.qdq.toBytes(), held);
        const fakeOps = scopes(r.fakeQuant).flatMap((s) => s.graph.nodes.map((n) => n.op_type));
        assert.ok(fakeOps.includes('LSTM') && !fakeOps.includes('DynamicQuantizeLSTM'));
        const fake = await outputSqnr(file, r.fakeQuant.toBytes(), held);
        console.log(`      ${name} ${mode}: int8 SQNR ${sqnrDb.toFixed(1)} dB, fake-quant (weights only in the LSTM) ${fake.sqnrDb.toFixed(1)} dB`);
        assert.ok(sqnrDb >= 25, `${mode}: ${sqnrDb.toFixed(2)} dB`);
        // the int8 kernel and its float simulation agree to within the activation quantization it adds
        assert.ok(fake.sqnrDb >= sqnrDb - 1, `fake-quant ${fake.sqnrDb} vs int8 ${sqnrDb}`);
      }
    });
  }

  it('GRU and RNN stay float with the reason; a disabled LSTM stays float', async () => {
    const gru = entry('gru-op13');
    const r = quantizeW8A8Dynamic(loadModel(await gru.write(dir)));
    const g = r.selection.skipped.find((s) => s.opType === 'GRU');
    assert.ok(g, 'the GRU is listed');
    assert.match(g!.reason, /no int8 kernel for it \(com.microsoft.DynamicQuantizeLSTM covers LSTM only\); kept float/);
    const lstm = entry('lstm-op7-ir3');
    const file = await lstm.write(dir);
    const names = scopes(loadModel(file)).flatMap((s) => s.graph.nodes.filter((n) => n.op_type === 'LSTM').map((n) => n.name || n.output[0]));
    const off = quantizeW8A8Dynamic(loadModel(file), { disableNames: names });
    assert.equal(off.lstm.length, 0);
    assert.equal(scopes(off.qdq).flatMap((s) => s.graph.nodes.filter((n) => n.op_type === 'LSTM')).length, names.length);
    const s = await ort.InferenceSession.create(off.qdq.toBytes());
    await s.run(lstm.feeds(1));
    await s.release();
  });
});
