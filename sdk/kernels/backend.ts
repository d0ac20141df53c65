/**
 * tfjs backend choice: tfjs-node-gpu → tfjs-node → wasm (SIMD) → cpu, first that loads wins,
 * unless the user names one (option or QUANTBOOK_TF_BACKEND). The native packages are
 * optional dependencies: they are absent wherever libtensorflow could not be downloaded.
 */
import * as tf from '@tensorflow/tfjs';
import { QuantbookError } from '../errors';

export const BACKENDS = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];

export interface BackendInfo {
  name: BackendName;
  /** wasm only: SIMD / threads as detected by tfjs */
  simd?: boolean;
  threads?: boolean;
  /** backends tried before this one, with why each was skipped */
  skipped: Array<{ name: BackendName; reason: string }>;
}

let current: BackendInfo | undefined;

async function tryBackend(name: BackendName): Promise<string | undefined> {
  try {
    if (name === 'tensorflow-gpu') require('@tensorflow/tfjs-node-gpu');
    else if (name === 'tensorflow') require('@tensorflow/tfjs-node');
    else if (name === 'wasm') require('@tensorflow/tfjs-backend-wasm');
    const tfName = name === 'tensorflow-gpu' ? 'tensorflow' : name;
    if (!(await tf.setBackend(tfName))) return `tf.setBackend('${tfName}') failed`;
    await tf.ready();
    return undefined;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

/** Selects (once) and returns the tfjs backend. `prefer` forces one; it fails loudly if unavailable. */
export async function initBackend(prefer?: BackendName): Promise<BackendInfo> {
  const wanted = prefer ?? (process.env.QUANTBOOK_TF_BACKEND as BackendName | undefined);
  if (wanted !== undefined && !BACKENDS.includes(wanted)) {
    throw new QuantbookError('INVALID_ARGUMENT', `backend: got "${wanted}"; expected one of ${BACKENDS.join(', ')}`);
  }
  if (current && (!wanted || current.name === wanted)) return current;
  const skipped: BackendInfo['skipped'] = [];
  for (const name of wanted ? [wanted] : BACKENDS) {
    const reason = await tryBackend(name);
    if (reason === undefined) {
      current = { name, skipped };
      if (name === 'wasm') {
        current.simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
        current.threads = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT');
      }
      return current;
    }
    skipped.push({ name, reason });
  }
  throw new QuantbookError('UNSUPPORTED', `no tfjs backend could start: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

export function backendInfo(): BackendInfo | undefined {
  return current;
}

export function describeBackend(info: BackendInfo): string {
  const extra = info.name === 'wasm' ? ` (SIMD ${info.simd ? 'on' : 'off'}, threads ${info.threads ? 'on' : 'off'})` : '';
  return `${info.name}${extra}`;
}
