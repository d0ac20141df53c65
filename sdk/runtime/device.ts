/**
 * Device adapters: where quantbook's ONNX Runtime sessions (calibration, evaluation) run.
 *   cpu  — always there.
 *   cuda — ORT's CUDA execution provider; onnxruntime-node downloads its provider library at
 *          install time (skipped where that host is unreachable). tfjs-node-gpu, when installed,
 *          is picked up separately by the kernels' backend choice.
 *   npu  — Ascend: ORT's CANN execution provider (an ORT build with --use_cann; the npm package
 *          has none) plus the Ascend toolkit (driver device nodes, CANN runtime).
 * Asking for a device that is not there fails with what is missing and how to get it; a
 * fallback to cpu happens only when the caller passes `allowFallback: true`.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { QuantbookError, invalidArgument } from '../errors';

export const DEVICE_KINDS = ['cpu', 'cuda', 'npu'] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];

export interface DeviceOptions {
  /** accelerator index (cuda, npu) */
  deviceId?: number;
  /** cap on the accelerator memory ORT's arena may take, in bytes (cuda gpu_mem_limit, CANN npu_mem_limit) */
  memoryLimit?: number;
  /** 'kNextPowerOfTwo' (default) or 'kSameAsRequested' */
  arenaExtendStrategy?: 'kNextPowerOfTwo' | 'kSameAsRequested';
  /** run on cpu when the device is missing instead of failing (the adapter says so in `fellBackFrom`) */
  allowFallback?: boolean;
}

export interface Device {
  kind: DeviceKind;
  /** execution providers to hand to ORT sessions */
  executionProviders: ort.InferenceSession.SessionOptions['executionProviders'];
  /** one line for logs and reports */
  description: string;
  /** set when `allowFallback` replaced the requested device with cpu */
  fellBackFrom?: { kind: DeviceKind; reason: string };
}

export function supportedBackends(): string[] {
  const list = (ort as unknown as { listSupportedBackends?: () => Array<{ name: string }> }).listSupportedBackends;
  return list ? list().map((b) => b.name) : ['cpu'];
}

export interface AscendToolkit { found: boolean; home?: string; version?: string; devices: string[]; missing: string[] }

/** Looks for the Ascend toolkit (ASCEND_TOOLKIT_HOME / ASCEND_HOME_PATH / the default install) and NPU device nodes. */
export function detectAscendToolkit(env: NodeJS.ProcessEnv = process.env): AscendToolkit {
  const candidates = [env.ASCEND_TOOLKIT_HOME, env.ASCEND_HOME_PATH, '/usr/local/Ascend/ascend-toolkit/latest', '/usr/local/Ascend/cann'].filter(Boolean) as string[];
  const home = candidates.find((c) => fs.existsSync(c));
  let version: string | undefined;
  if (home) {
    for (const f of ['version.cfg', 'version.info', path.join('compiler', 'version.info'), path.join('runtime', 'version.info')]) {
      const file = path.join(home, f);
      if (!fs.existsSync(file)) continue;
      const m = /version\s*[=:]\s*([\w.\-]+)/i.exec(fs.readFileSync(file, 'utf8'));
      if (m) {
        version = m[1];
        break;
      }
    }
  }
  const devices = fs.existsSync('/dev') ? fs.readdirSync('/dev').filter((d) => /^davinci\d+$/.test(d)) : [];
  const missing: string[] = [];
  if (!home) missing.push(`the Ascend CANN toolkit (looked in ${candidates.join(', ')}; set ASCEND_TOOLKIT_HOME after installing it and sourcing set_env.sh)`);
  if (!devices.length) missing.push('an Ascend NPU (no /dev/davinci* device; install the NPU driver)');
  return { found: !!home && devices.length > 0, home, version, devices, missing };
}

/** Providers this onnxruntime-node can load (the npm package lists cuda even when its library was not downloaded). */
function providerLibraryPresent(name: 'cuda' | 'cann'): boolean {
  const dir = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const lib = `libonnxruntime_providers_${name}.so`;
  const search = (d: string, depth: number): boolean => {
    if (depth < 0 || !fs.existsSync(d)) return false;
    return fs.readdirSync(d, { withFileTypes: true }).some((e) => (e.isFile() && e.name === lib) || (e.isDirectory() && search(path.join(d, e.name), depth - 1)));
  };
  return search(path.join(dir, 'bin'), 4);
}

function checkOptions(o: DeviceOptions): void {
  if (o.deviceId !== undefined && !(Number.isInteger(o.deviceId) && o.deviceId >= 0)) throw invalidArgument('deviceId', o.deviceId, 'a non-negative integer');
  if (o.memoryLimit !== undefined && !(Number.isInteger(o.memoryLimit) && o.memoryLimit > 0)) throw invalidArgument('memoryLimit', o.memoryLimit, 'a positive number of bytes');
  if (o.arenaExtendStrategy !== undefined && !['kNextPowerOfTwo', 'kSameAsRequested'].includes(o.arenaExtendStrategy)) throw invalidArgument('arenaExtendStrategy', o.arenaExtendStrategy, "'kNextPowerOfTwo' or 'kSameAsRequested'");
}

const CPU: Device = { kind: 'cpu', executionProviders: ['cpu'], description: 'cpu (ONNX Runtime CPU execution provider)' };

function unavailable(kind: DeviceKind, reason: string, options: DeviceOptions): Device {
  if (options.allowFallback) return { ...CPU, description: `cpu (fallback: ${kind} unavailable)`, fellBackFrom: { kind, reason } };
  throw new QuantbookError('UNSUPPORTED', `device '${kind}': ${reason}; or use device 'cpu' (or pass allowFallback: true to fall back to it)`);
}

/** The adapter for `kind`, or a clear error saying what is missing. */
export function resolveDevice(kind: string, options: DeviceOptions = {}): Device {
  if (!(DEVICE_KINDS as readonly string[]).includes(kind)) throw invalidArgument('device', kind, DEVICE_KINDS.map((d) => `'${d}'`).join(', '));
  checkOptions(options);
  const id = options.deviceId ?? 0;
  const arena = options.arenaExtendStrategy ?? 'kNextPowerOfTwo';
  if (kind === 'cpu') return CPU;
  if (kind === 'cuda') {
    if (!supportedBackends().includes('cuda')) return unavailable('cuda', `this onnxruntime-node build has no CUDA execution provider (it offers ${supportedBackends().join(', ')})`, options);
    if (!providerLibraryPresent('cuda')) return unavailable('cuda', "onnxruntime-node's CUDA provider library was not installed (its install script downloads it; reinstall without ONNXRUNTIME_NODE_INSTALL=skip, with CUDA 12 and cuDNN 9 on the machine)", options);
    return {
      kind: 'cuda',
      executionProviders: [{ name: 'cuda', deviceId: id, ...(options.memoryLimit ? { gpuMemLimit: options.memoryLimit } : {}), arenaExtendStrategy: arena } as ort.InferenceSession.ExecutionProviderConfig],
      description: `cuda:${id} (ONNX Runtime CUDA execution provider)`,
    };
  }
  const missing: string[] = [];
  if (!supportedBackends().includes('cann')) missing.push(`an ONNX Runtime build with the CANN (Ascend) execution provider (this onnxruntime-node offers ${supportedBackends().join(', ')}; build ORT with --use_cann against the Ascend toolkit)`);
  const toolkit = detectAscendToolkit();
  missing.push(...toolkit.missing);
  if (missing.length) return unavailable('npu', `missing ${missing.join('; ')}`, options);
  return {
    kind: 'npu',
    executionProviders: [{ name: 'cann', deviceId: id, ...(options.memoryLimit ? { npuMemLimit: options.memoryLimit } : {}), arenaExtendStrategy: arena } as unknown as ort.InferenceSession.ExecutionProviderConfig],
    description: `npu:${id} (ONNX Runtime CANN execution provider, Ascend toolkit ${toolkit.version ?? 'unknown version'} at ${toolkit.home})`,
  };
}

/** Session-level check (msModelSlim's device 'cpu' | 'npu', plus quantbook's 'cuda'). */
export function requireDevice(device: string, options: DeviceOptions = {}): Device {
  return resolveDevice(device, options);
}
