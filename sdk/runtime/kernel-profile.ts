/**
 * Time spent per graph node, as ONNX Runtime's own profiler reports it.
 *
 * ORT renames the nodes it rewrites: a Conv fused with its Clip becomes `Clip_10_nchwc`, a
 * DequantizeLinear → Conv → QuantizeLinear group becomes the QLinearConv `conv_0_token_1`, a Gemm
 * fused with its Relu is `fused fc_1`, a
 * layout change it inserts is `ReorderOutput_token_47`. `profileNodeTimes` strips those suffixes,
 * so each time carries the name of a node of the model that was handed to ORT (or the name ORT
 * gave a node it added, which matches no node of the model).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { Feeds } from './runner';

export interface NodeTime {
  /** the node's name with ORT's suffixes removed */
  node: string;
  /** the kernel ORT ran (QLinearConv, Conv, ReorderInput, ...) */
  kernel: string;
  /** mean time per model run, microseconds */
  us: number;
}

export interface ProfileOptions {
  /** profiled runs after one unprofiled warm-up run (default 4); batches are used in turn */
  runs?: number;
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

/** ORT's suffixes for nodes it fused, re-laid-out or re-created. */
const ORT_SUFFIX = /(_token_\d+|_nchwc|_fusion|_fused)$/;

export function baseNodeName(profiledName: string): string {
  // a Gemm fused with its activation is profiled as "fused <name>"
  let name = profiledName.replace(/^fused /, '');
  for (let prev = ''; prev !== name;) {
    prev = name;
    name = name.replace(ORT_SUFFIX, '');
  }
  return name;
}

/** Runs `model` on `batches` with ORT's profiler on; the warm-up run is not counted. */
export async function profileNodeTimes(model: Uint8Array | string, batches: readonly Feeds[], options: ProfileOptions = {}): Promise<NodeTime[]> {
  const runs = options.runs ?? 4;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quantbook-profile-'));
  try {
    const sessionOptions = { logSeverityLevel: 3 as const, ...options.sessionOptions, enableProfiling: true, profileFilePrefix: path.join(dir, 'p') };
    const session = typeof model === 'string' ? await ort.InferenceSession.create(model, sessionOptions) : await ort.InferenceSession.create(model, sessionOptions);
    try {
      for (let i = 0; i <= runs; i++) await session.run(batches[i % batches.length]);
      session.endProfiling();
    } finally {
      await session.release();
    }
    const file = fs.readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) throw new Error('ONNX Runtime wrote no profile');
    return nodeTimesFromProfile(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')), runs);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

interface ProfileEvent { cat?: string; name?: string; ts?: number; dur?: number; args?: { op_name?: string } }

/** Sums each node's kernel time over the runs after the first `model_run` (the warm-up). */
export function nodeTimesFromProfile(events: ProfileEvent[], runs: number): NodeTime[] {
  const modelRuns = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => (a.ts ?? 0) - (b.ts ?? 0));
  const warmUpEnd = modelRuns.length ? (modelRuns[0].ts ?? 0) + (modelRuns[0].dur ?? 0) : -Infinity;
  const counted = Math.max(1, modelRuns.length ? modelRuns.length - 1 : runs);
  const byNode = new Map<string, NodeTime>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || (e.ts ?? 0) < warmUpEnd) continue;
    const profiled = e.name.slice(0, -'_kernel_time'.length);
    const t = byNode.get(profiled) ?? { node: baseNodeName(profiled), kernel: e.args?.op_name ?? '?', us: 0 };
    t.us += (e.dur ?? 0) / counted;
    byNode.set(profiled, t);
  }
  return [...byNode.values()];
}
