/**
 * Device checks for sessions: 'cpu' always works; 'npu' (Ascend) needs an ONNX Runtime build
 * with the CANN execution provider, which the npm package does not include. No silent fallback.
 */
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';

export function supportedBackends(): string[] {
  const list = (ort as unknown as { listSupportedBackends?: () => Array<{ name: string }> }).listSupportedBackends;
  return list ? list().map((b) => b.name) : ['cpu'];
}

export function requireDevice(device: string): void {
  if (device === 'cpu') return;
  if (device === 'npu') {
    if (supportedBackends().includes('cann')) return;
    throw new QuantbookError('UNSUPPORTED', `device 'npu': this onnxruntime-node build has no CANN (Ascend) execution provider (it offers ${supportedBackends().join(', ')}); install an ONNX Runtime built with --use_cann on a machine with the Ascend toolkit, or use device 'cpu'`);
  }
  throw new QuantbookError('INVALID_ARGUMENT', `device: got "${device}"; expected 'cpu' or 'npu'`);
}
