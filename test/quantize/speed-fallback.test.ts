/**
 * speedFallback (issue 22): layers whose int8 kernels ORT runs slower than their float ones are
 * kept float. Timing decides which layers those are, so no assertion here depends on a time:
 * they check that every layer is charged its kernels in both profiles, that the returned model
 * is the one the report says and keeps float exactly the layers it lists (with the reason), and
 * the refusals.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { loadModel } from '../../sdk/onnx/model';
import { QuantbookError } from '../../sdk/errors';
import { W8A8Result, quantizeW8A8, quantizeW8A8KeepingFloat } from '../../sdk/quantize/w8a8';
import { LayerSpeed, cheapestAssignment, kernelOwners, layersToKeepFloat, measureLayerSpeeds, slowerInInt8 } from '../../sdk/quantize/speed-fallback';
import { baseNodeName, nodeTimesFromProfile } from '../../sdk/runtime/kernel-profile';
import { Feeds } from '../../sdk/runtime/runner';
import { tempDir } from '../helpers';
import { CNN_CORPUS } from '../corpus/cnn';
import { CALIBRATION_SEEDS } from '../corpus/quantize-corpus';

/** `keptFloat` are float in the written model, with the profile as the reason; every other of `layers` is quantized. */
function assertKeptFloat(r: W8A8Result, keptFloat: readonly string[], layers: readonly string[]): void {
  const quantized = new Set(r.layers.map((l) => l.name));
  for (const name of keptFloat) {
    assert.ok(!quantized.has(name), `${name} is listed kept float but was quantized`);
    const skipped = r.selection.skipped.find((s) => s.name === name);
    assert.match(skipped?.reason ?? '', /int8 slower than float on this CPU \(ONNX Runtime profile: [\d.]+ ms int8 against [\d.]+ ms float/);
    // its weight is a float initializer in the written model, not a DequantizeLinear's output
    const node = r.qdq.graph.node(name)!;
    assert.equal(r.qdq.graph.producer(node.input[1])?.op_type, undefined, `${name}'s weight is produced by a node`);
  }
  for (const name of layers) if (!keptFloat.includes(name)) assert.ok(quantized.has(name), `${name} neither quantized nor kept float`);
}

describe('speedFallback: keep float the layers whose int8 kernels are slower', function () {
  // MobileNetV2 at 256 px: narrow depthwise layers (where ORT's int8 kernels lose) and wide ones
  const entry = CNN_CORPUS.find((e) => e.name.startsWith('mobilenetv2'))!.scaled(4);
  let dir: string;
  let file: string;
  let calib: Feeds[];
  before(async () => {
    dir = tempDir('quantbook-speed-');
    file = await entry.write(dir);
    calib = CALIBRATION_SEEDS.slice(0, 2).map((s) => entry.feeds(s));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('profile names: ORT suffixes are stripped, the warm-up run is not counted', () => {
    assert.equal(baseNodeName('conv_0_token_1'), 'conv_0');
    assert.equal(baseNodeName('Clip_10_nchwc'), 'Clip_10');
    assert.equal(baseNodeName('ReorderOutput_token_47'), 'ReorderOutput');
    assert.equal(baseNodeName('fused fc_1'), 'fc_1');
    const events = [
      { cat: 'Session', name: 'model_run', ts: 0, dur: 100 },
      { cat: 'Node', name: 'conv_0_token_1_kernel_time', ts: 10, dur: 999, args: { op_name: 'QLinearConv' } },
      { cat: 'Session', name: 'model_run', ts: 200, dur: 100 },
      { cat: 'Node', name: 'conv_0_token_1_kernel_time', ts: 210, dur: 30, args: { op_name: 'QLinearConv' } },
      { cat: 'Node', name: 'conv_0_token_1_fence_before', ts: 209, dur: 5 },
      { cat: 'Session', name: 'model_run', ts: 400, dur: 100 },
      { cat: 'Node', name: 'conv_0_token_1_kernel_time', ts: 410, dur: 50, args: { op_name: 'QLinearConv' } },
    ];
    assert.deepEqual(nodeTimesFromProfile(events, 2), [{ node: 'conv_0', kernel: 'QLinearConv', us: 40 }]);
  });

  it('the float/int8 assignment weighs each layer against the cost of switching', () => {
    const layer = (name: string, floatUs: number, int8Us: number) => ({ layer: name, opType: 'Conv', floatUs, int8Us });
    const names = (xs: LayerSpeed[]) => xs.map((x) => x.layer);
    const chain = [layer('a', 100, 300), layer('b', 500, 100), layer('c', 100, 150), layer('d', 500, 100)];
    // switching free: each layer takes its faster kernel
    assert.deepEqual(names(cheapestAssignment(chain, 0)), ['a', 'c']);
    assert.deepEqual(names(slowerInInt8(chain)), ['a', 'c']);
    // a lone slower layer (c: 50 µs lost) inside int8 stays int8 when two switches cost more
    assert.deepEqual(names(cheapestAssignment(chain, 100)), ['a']);
    // the model starts in float: a slow first layer is kept float at no switch cost
    assert.deepEqual(names(cheapestAssignment([layer('a', 100, 300), layer('b', 500, 100)], 150)), ['a']);
    // everything slower: everything float; switches too dear for a small gain: everything float
    assert.deepEqual(names(cheapestAssignment([layer('a', 1, 2), layer('b', 1, 2)], 0)), ['a', 'b']);
    assert.deepEqual(names(cheapestAssignment([layer('a', 100, 300), layer('b', 110, 100), layer('c', 100, 300)], 20)), ['a', 'b', 'c']);
    // a layer charged nothing on one side (a profile name not matched) has no say either way
    const uncharged = [layer('x', 500, 100), layer('a', 0, 300), layer('y', 500, 100)];
    assert.deepEqual(names(cheapestAssignment(uncharged, 50)), []);
    assert.deepEqual(names(cheapestAssignment([uncharged[0], layer('a', 1, 300), uncharged[2]], 50)), ['a']);
    // every layer faster float: the proposal leaves the one that loses least in int8
    assert.deepEqual(names(layersToKeepFloat([layer('a', 100, 300), layer('b', 100, 120), layer('c', 100, 300)], 0, 3)), ['a', 'c']);
    assert.deepEqual(names(layersToKeepFloat([layer('a', 100, 300), layer('b', 100, 120), layer('c', 100, 300)], 0, 4)), ['a', 'b', 'c']);
  });

  it('every layer is charged its own kernels in both the float and the int8 profile', async () => {
    const r = await quantizeW8A8(loadModel(file), calib, { opSet: 'extended' });
    const owners = kernelOwners(r.float.graph, new Set(r.layers.map((l) => l.name)));
    // ORT names an NCHWc Conv after its output tensor: here a Conv whose BatchNorm was folded
    // writes the BatchNorm's old output name, which names no node any more
    const nodeNames = new Set(r.float.graph.nodes.map((n) => n.name));
    const folded = r.float.graph.nodes.find((n) => n.op_type === 'Conv' && !nodeNames.has(n.output[0]))!;
    assert.ok(folded, 'no Conv with a renamed output');
    assert.equal(owners.get(folded.output[0]), folded.name);
    const { layers: speeds, switchUs } = await measureLayerSpeeds(r.float, r.qdq, r.layers.map((l) => ({ name: l.name, opType: l.opType })), calib, 2);
    assert.equal(speeds.length, r.layers.length);
    // the int8 model runs NHWC, so ORT adds layout Transposes at the float/int8 switches
    assert.ok(switchUs > 0, 'no switch cost measured');
    const uncharged = speeds.filter((s) => !(s.floatUs > 0 && s.int8Us > 0)).map((s) => s.layer);
    assert.deepEqual(uncharged, [], `layers with no kernel time charged: ${uncharged.join(', ')}`);
  });

  it('the returned model is the one the report names, with exactly the listed layers float and the reason', async () => {
    const r = await quantizeW8A8(loadModel(file), calib, { opSet: 'extended', speedFallback: true });
    const report = r.speedFallback!;
    assert.ok(report, 'no speedFallback report');
    assert.deepEqual(report.proposed, layersToKeepFloat(report.layers, report.switchUs, r.selection.layers.length + report.keptFloat.length).map((s) => s.layer));
    const { float, allInt8, mixed } = report.latencyMs;
    assert.ok(float > 0 && allInt8 > 0);
    assert.equal(report.slowerThanFloat, (report.chosen === 'mixed' ? mixed! : allInt8) > float);
    if (report.chosen === 'mixed') {
      assert.ok(mixed! <= allInt8, 'mixed kept though slower than all-int8');
      assert.deepEqual(report.keptFloat, report.proposed);
    } else {
      assert.deepEqual(report.keptFloat, []);
      if (mixed !== undefined) assert.ok(mixed > allInt8, 'all-int8 kept though the mixed model was faster');
    }
    assertKeptFloat(r, report.keptFloat, report.layers.map((l) => l.layer));
  });

  it('the mixed model keeps float exactly the slower layers, named with their times, the rest int8', async () => {
    const all = await quantizeW8A8(loadModel(file), calib, { opSet: 'extended' });
    const names = all.layers.map((l) => l.name);
    const slower = [names[0], names[1], names[5]].map((layer) => ({ layer, opType: 'Conv', floatUs: 100, int8Us: 250 }));
    const mixed = await quantizeW8A8KeepingFloat(loadModel(file), calib, { opSet: 'extended' }, slower);
    assertKeptFloat(mixed, slower.map((s) => s.layer), names);
    assert.match(mixed.selection.skipped.find((s) => s.name === names[0])!.reason, /0\.250 ms int8 against 0\.100 ms float per run/);
  });

  it('refuses a one-shot iterator (the data is read twice), an empty timing set and a model held by reference, by name', async () => {
    function* once() { for (const b of calib) yield b; }
    await assert.rejects(quantizeW8A8(loadModel(file), once(), { speedFallback: true }), /speedFallback: the calibration data is a one-shot iterator/);
    await assert.rejects(quantizeW8A8(loadModel(file), calib, { speedFallback: [] }), /speedFallback: no batches to time on/);
    // a model held by reference (its weights left in external data) cannot be handed to the profiler as bytes
    const ext = CNN_CORPUS.find((e) => e.name.startsWith('resnet50-extdata'))!;
    const extFile = await ext.write(dir);
    const held = loadModel(extFile, { loadExternalData: false });
    assert.ok(held.heldByReference());
    await assert.rejects(quantizeW8A8(held, [ext.feeds(CALIBRATION_SEEDS[0])], { speedFallback: true }), (e: QuantbookError) => e.code === 'UNSUPPORTED' && /speedFallback: a model held by reference \(loadExternalData: false\) cannot be profiled/.test(e.message));
    assert.ok(fs.existsSync(path.join(dir, path.basename(file))));
  });
});
