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

  it("'cuda' is refused here with the named UNSUPPORTED error: ORT lists cuda but its provider library is not installed", () => {
    // Derived independently of the adapter: what this onnxruntime-node offers, and whether its
    // CUDA provider library exists anywhere under the package (no CUDA build can be had here).
    const ortDir = path.dirname(require.resolve('onnxruntime-node/package.json'));
    const libs: string[] = [];
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(d, e.name));
        else if (/^libonnxruntime_providers_cuda\.so/.test(e.name)) libs.push(path.join(d, e.name));
      }
    };
    walk(ortDir);
    const listed = (require('onnxruntime-node') as { listSupportedBackends(): Array<{ name: string }> }).listSupportedBackends().map((b) => b.name);
    assert.ok(listed.includes('cuda'), `onnxruntime-node 1.30 lists cuda as a backend (got ${listed.join(', ')})`);
    assert.deepEqual(libs, [], 'precondition: no CUDA provider library on this machine');
    let thrown: unknown;
    try {
      resolveDevice('cuda', { deviceId: 0, memoryLimit: 2 ** 30 });
    } catch (e) {
      thrown = e;
    }
    assert.ok(thrown instanceof QuantbookError, `resolveDevice('cuda') must refuse here; got ${String(thrown)}`);
    assert.equal(thrown.code, 'UNSUPPORTED');
    assert.match(thrown.message, /^device 'cuda': onnxruntime-node's CUDA provider library was not installed \(its install script downloads it; reinstall without ONNXRUNTIME_NODE_INSTALL=skip, with CUDA 12 and cuDNN 9 on the machine\); or use device 'cpu' \(or pass allowFallback: true to fall back to it\)$/);
    // with allowFallback it is cpu, and says it fell back from cuda and why
    const fb = resolveDevice('cuda', { allowFallback: true });
    assert.equal(fb.kind, 'cpu');
    assert.deepEqual(fb.executionProviders, ['cpu']);
    assert.equal(fb.fellBackFrom?.kind, 'cuda');
    assert.match(fb.fellBackFrom?.reason ?? '', /CUDA provider library was not installed/);
    assert.equal(fb.description, 'cpu (fallback: cuda unavailable)');
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
