import * as assert from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { QuantbookError, calibrate, detectAscendToolkit, loadModel, resolveDevice, supportedBackends } from '../../sdk';
import { FEEDS, MODELS, tempDir } from '../helpers';

describe('device adapters', () => {
  it('cpu is always there and drives calibration', async () => {
    const cpu = resolveDevice('cpu');
    assert.deepEqual(cpu.executionProviders, ['cpu']);
    const r = await calibrate(loadModel(MODELS.cls), [FEEDS.cls()], { executionProviders: cpu.executionProviders });
    assert.ok(r.rows().length > 0);
  });

  it("'npu' without CANN names everything missing; no silent fallback unless asked", () => {
    assert.ok(!supportedBackends().includes('cann'));
    assert.throws(() => resolveDevice('npu'), (e: QuantbookError) => e.code === 'UNSUPPORTED'
      && /CANN \(Ascend\) execution provider/.test(e.message) && /Ascend CANN toolkit/.test(e.message) && /allowFallback/.test(e.message));
    const fb = resolveDevice('npu', { allowFallback: true, deviceId: 1 });
    assert.equal(fb.kind, 'cpu');
    assert.equal(fb.fellBackFrom?.kind, 'npu');
    assert.match(fb.description, /fallback/);
  });

  it("'cuda' works where ORT's CUDA provider is installed, and otherwise says how to get it", function () {
    let device;
    try {
      device = resolveDevice('cuda', { deviceId: 0, memoryLimit: 2 ** 30 });
    } catch (e) {
      assert.ok(e instanceof QuantbookError && e.code === 'UNSUPPORTED' && /device 'cuda': .*(CUDA provider library|no CUDA execution provider)/.test(e.message), String(e));
      return;
    }
    assert.equal(device.kind, 'cuda');
    assert.deepEqual((device.executionProviders as unknown as Array<Record<string, unknown>>)[0], { name: 'cuda', deviceId: 0, gpuMemLimit: 2 ** 30, arenaExtendStrategy: 'kNextPowerOfTwo' });
  });

  it('finds an Ascend toolkit through ASCEND_TOOLKIT_HOME and reads its version', () => {
    const home = tempDir();
    fs.writeFileSync(path.join(home, 'version.cfg'), '# CANN\nversion=8.0.RC3\n');
    const t = detectAscendToolkit({ ASCEND_TOOLKIT_HOME: home });
    assert.equal(t.home, home);
    assert.equal(t.version, '8.0.RC3');
    // no /dev/davinci* here: the toolkit alone is not enough
    assert.equal(t.found, t.devices.length > 0);
  });

  it('rejects unknown devices and bad options', () => {
    assert.throws(() => resolveDevice('tpu'), /device: got "tpu"; expected 'cpu', 'cuda', 'npu'/);
    assert.throws(() => resolveDevice('cpu', { deviceId: -1 }), /deviceId: got -1; expected a non-negative integer/);
  });
});
