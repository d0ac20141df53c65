/**
 * Block-by-block calibration, as layer-wise PTQ tools calibrate large decoders: the graph is cut
 * at boundary tensors (a decoder's residual stream after each block), and stage k (the nodes
 * between boundary k−1 and boundary k) runs on the cached outputs of stage k−1. Only one stage's
 * session is alive at a time, and each batch's cached activations live only until the last stage
 * that reads them, so a session's memory is O(one block + activations) rather than O(model).
 *
 * The statistics equal whole-model calibration's (each tensor sees the same values: ONNX Runtime
 * computes every stage's nodes on the same inputs); `test/calibration/by-blocks.test.ts` checks
 * it on the generated Llama-style decoder.
 */
import * as ort from 'onnxruntime-node';
import { QuantbookError, invalidArgument } from '../errors';
import { DataType } from '../onnx/dtype';
import { Model } from '../onnx/model';
import { ModelProto, NodeProto, TensorProto, newValueInfo } from '../onnx/proto';
import { tensorByteSize } from '../onnx/tensor';
import { Feeds, Runner } from '../runtime/runner';
import { CalibrationResult, CalibrateOptions, calibrate, defaultTargets } from './calibrator';
import { CalibrationSource, collectBatches } from './data';

export interface BlockCalibrationOptions extends CalibrateOptions {
  /** the tensors to cut at, in graph order (e.g. each decoder block's output) */
  boundaries: string[];
  /** called as each stage finishes: its index, node count, the tensors it observed and the bytes of the weights its session held */
  onStage?: (s: { stage: number; stages: number; nodes: number; tensors: number; weightBytes: number }) => void;
}

const ORT_TO_ONNX: Record<string, DataType> = {
  float32: DataType.FLOAT, float16: DataType.FLOAT16, float64: DataType.DOUBLE, int64: DataType.INT64, int32: DataType.INT32,
  int8: DataType.INT8, uint8: DataType.UINT8, bool: DataType.BOOL,
};

interface Stage { nodes: NodeProto[]; reads: string[]; keeps: string[] }

/** Stage of each node: how many boundaries lie upstream of it. */
function stagesOf(model: Model, boundaries: string[]): Stage[] {
  const g = model.graph;
  const boundaryIndex = new Map(boundaries.map((b, i) => [b, i + 1]));
  const level = new Map<string, number>();
  const stageOf = new Map<NodeProto, number>();
  for (const node of g.nodes) {
    const s = Math.max(0, ...node.input.filter(Boolean).map((t) => level.get(t) ?? 0));
    stageOf.set(node, s);
    for (const out of node.output) {
      const b = boundaryIndex.get(out);
      if (b !== undefined && b !== s + 1) throw new QuantbookError('INVALID_ARGUMENT', `boundaries: "${out}" is boundary ${b} but follows ${s} boundaries; give them in graph order, each downstream of the one before`);
      level.set(out, b ?? s);
    }
  }
  for (const b of boundaries) if (!level.has(b)) throw new QuantbookError('UNKNOWN_TENSOR', `boundaries: no node computes "${b}"`);
  const stages: Stage[] = Array.from({ length: boundaries.length + 1 }, () => ({ nodes: [], reads: [], keeps: [] }));
  for (const [node, s] of stageOf) stages[s].nodes.push(node);
  const produced = stages.map((st) => new Set(st.nodes.flatMap((n) => n.output)));
  const initializers = new Set(g.initializerNames);
  const graphOutputs = new Set(g.outputNames);
  stages.forEach((st, s) => {
    const reads = new Set<string>();
    for (const n of st.nodes) for (const t of n.input) if (t && !produced[s].has(t) && !initializers.has(t)) reads.add(t);
    st.reads = [...reads];
  });
  // what each stage hands on: tensors read by a later stage, and graph outputs
  stages.forEach((st, s) => {
    st.keeps = [...produced[s]].filter((t) => graphOutputs.has(t) || stages.some((later, l) => l > s && later.reads.includes(t)));
  });
  return stages;
}

/** A model of one stage: its nodes, the initializers they read, its reads as typed inputs. */
function stageModel(model: Model, stage: Stage, feeds: Feeds): Model {
  const p = model.proto;
  const used = new Set(stage.nodes.flatMap((n) => n.input));
  const initializer: TensorProto[] = p.graph!.initializer.filter((t) => used.has(t.name!));
  const input = stage.reads.map((name) => {
    const t = feeds[name];
    const elem = ORT_TO_ONNX[t.type];
    if (elem === undefined) throw new QuantbookError('UNSUPPORTED', `block calibration: tensor "${name}" holds ${t.type} values, which a stage cannot take as an input`);
    return newValueInfo({ name, type: { tensor_type: { elem_type: elem, shape: { dim: t.dims.map((_, i) => ({ dim_param: `${name}_d${i}` })) } } } });
  });
  const proto: ModelProto = { ...p, graph: { ...p.graph!, node: stage.nodes, initializer, input, output: [], value_info: p.graph!.value_info.filter((v) => used.has(v.name!)) } } as ModelProto;
  return new Model(proto, model.baseDir);
}

/**
 * Calibrates `model` stage by stage between `boundaries`; returns what `calibrate` returns for
 * the whole model (same targets, same observers' statistics). Subgraph (If/Loop/Scan) tensors
 * are not supported here: use `calibrate`.
 */
export async function calibrateByBlocks(model: Model, data: CalibrationSource, options: BlockCalibrationOptions): Promise<CalibrationResult> {
  if (!options || !Array.isArray(options.boundaries) || !options.boundaries.length || !options.boundaries.every((b) => typeof b === 'string')) {
    throw invalidArgument('boundaries', options?.boundaries, 'a non-empty list of tensor names, in graph order');
  }
  const g = model.graph;
  const targets = options.tensors ?? defaultTargets(model).map((t) => t.tensor);
  for (const t of targets) if (!g.hasTensor(t)) throw new QuantbookError('UNKNOWN_TENSOR', `calibration tensor "${t}" is not in the main graph (block calibration does not reach If/Loop/Scan bodies)`);
  const stages = stagesOf(model, options.boundaries);
  const firstReader = new Map<string, number>();
  stages.forEach((st, s) => { for (const t of st.reads) if (!firstReader.has(t)) firstReader.set(t, s); });
  // per batch, the tensors later stages read: the graph inputs first
  const batches = await collectBatches(data, g.inputNames, options.maxBatches);
  if (!batches.length) throw new QuantbookError('INVALID_ARGUMENT', 'block calibration: no calibration batches');
  const cached: Array<Map<string, ort.Tensor>> = batches.map((b) => new Map(Object.entries(b)));
  const merged = new Map<string, CalibrationResult>();
  for (let s = 0; s < stages.length; s++) {
    const stage = stages[s];
    if (!stage.nodes.length) continue;
    const feedsOf = (b: number): Feeds => Object.fromEntries(stage.reads.map((t) => [t, cached[b].get(t)!]));
    const sub = stageModel(model, stage, feedsOf(0));
    // a tensor is observed in the stage that computes it; a graph input in the first stage that reads it
    const own = targets.filter((t) => stage.nodes.some((n) => n.output.includes(t)) || (g.inputNames.includes(t) && firstReader.get(t) === s));
    if (own.length) {
      const r = await calibrate(sub, batches.map((_, b) => feedsOf(b)), { ...options, tensors: own, maxBatches: undefined, onProgress: undefined });
      merged.set(String(s), r);
    }
    if (s < stages.length - 1) {
      const runner = await Runner.create(sub, { expose: stage.keeps, executionProviders: options.executionProviders });
      try {
        for (let b = 0; b < batches.length; b++) {
          const out = await runner.run(feedsOf(b));
          for (const t of stage.keeps) cached[b].set(t, out.exposed[t]);
        }
      } finally {
        await runner.dispose();
      }
    }
    // drop what no later stage reads
    const later = new Set(stages.slice(s + 1).flatMap((st) => st.reads));
    for (const c of cached) for (const t of [...c.keys()]) if (!later.has(t)) c.delete(t);
    const weightBytes = sub.proto.graph!.initializer.reduce((a, t) => a + tensorByteSize(t), 0);
    options.onStage?.({ stage: s, stages: stages.length, nodes: stage.nodes.length, tensors: own.length, weightBytes });
  }
  const results = [...merged.values()];
  if (!results.length) throw new QuantbookError('INVALID_ARGUMENT', 'block calibration: no stage holds a calibration tensor');
  const observers = new Map(results.flatMap((r) => [...r.observers]));
  const byTensor = new Map(results.flatMap((r) => r.targets.map((t) => [t.tensor, t] as const)));
  const all = defaultTargets(model);
  const orderedTargets = targets.map((t) => all.find((x) => x.tensor === t) ?? byTensor.get(t)!).filter((t) => observers.has(t.tensor));
  return new CalibrationResult(orderedTargets, observers, results[0].spec, { ...results[0].metadata, collection: `block by block (${stages.length} stages)` }, undefined);
}

/**
 * The output of each block of a model exported with block-scoped node names (Optimum and
 * PyTorch exports name a decoder's nodes `/model/layers.<i>/...`): per block, the one tensor its
 * nodes compute that a node outside the block reads (the residual stream). Refuses a block with
 * none or several, naming them: give `boundaries` by hand then.
 */
export function blockOutputs(model: Model, blockOf: (nodeName: string) => number | undefined = (n) => {
  const m = /^\/model\/layers\.(\d+)\//.exec(n);
  return m ? Number(m[1]) : undefined;
}): string[] {
  const g = model.graph;
  const block = new Map<NodeProto, number | undefined>(g.nodes.map((n) => [n, blockOf(n.name ?? '')]));
  const ids = [...new Set([...block.values()].filter((b): b is number => b !== undefined))].sort((a, b) => a - b);
  if (!ids.length) throw new QuantbookError('INVALID_ARGUMENT', 'blockOutputs: no node name matches the block pattern (e.g. /model/layers.<i>/...)');
  return ids.map((id) => {
    const outs = [...block].filter(([, b]) => b === id).flatMap(([n]) => n.output)
      .filter((t) => g.consumers(t).some((c) => block.get(c) !== id));
    if (outs.length !== 1) throw new QuantbookError('INVALID_ARGUMENT', `blockOutputs: block ${id} hands ${outs.length} tensors to the rest of the graph (${outs.slice(0, 4).join(', ')}); give the boundaries by hand`);
    return outs[0];
  });
}

/**
 * Calibration of a model held by reference (loaded without its external data because it is
 * larger than memory): block by block where its node names give decoder blocks (blockOutputs),
 * so one block's weights are read at a time; otherwise the whole model in one session.
 */
export async function calibrateHeldModel(model: Model, data: CalibrationSource, options: CalibrateOptions = {}): Promise<CalibrationResult> {
  const boundaries = blockBoundaries(model); // none: one session over the whole model
  const inMainGraph = (options.tensors ?? []).every((t) => model.graph.hasTensor(t));
  return boundaries.length > 1 && inMainGraph ? calibrateByBlocks(model, data, { ...options, boundaries }) : calibrate(model, data, options);
}

/** A decoder's block outputs, or none when its node names give no blocks (or ambiguous ones). */
function blockBoundaries(model: Model): string[] {
  try {
    return blockOutputs(model);
  } catch {
    return [];
  }
}

/**
 * Runs `model` on every batch of `data` and hands `visit` the values of `tensors` (main-graph
 * tensors, each batch in order). With `byBlocks` and a model whose node names give decoder
 * blocks, it runs stage by stage as calibrateByBlocks does (one block's weights per session;
 * `visit` then sees each stage's tensors, batch after batch); otherwise one session.
 */
export async function forEachExposed(
  model: Model, data: CalibrationSource, tensors: string[],
  options: { executionProviders?: CalibrateOptions['executionProviders']; byBlocks?: boolean },
  visit: (exposed: Record<string, ort.Tensor>) => void,
  /** called once every batch has passed a set of tensors (each stage's, or all at the end); the model may be edited there: later stages run on activations cached before it */
  stageDone: (visited: string[]) => Promise<void> = async () => undefined,
): Promise<void> {
  const g = model.graph;
  const boundaries = options.byBlocks ? blockBoundaries(model) : [];
  if (boundaries.length <= 1 || !tensors.every((t) => g.hasTensor(t))) {
    const runner = await Runner.create(model, { expose: tensors, executionProviders: options.executionProviders });
    try {
      for (const feeds of await collectBatches(data, g.inputNames)) visit((await runner.run(feeds)).exposed);
    } finally {
      await runner.dispose();
    }
    await stageDone(tensors);
    return;
  }
  const stages = stagesOf(model, boundaries);
  const batches = await collectBatches(data, g.inputNames);
  const cached: Array<Map<string, ort.Tensor>> = batches.map((b) => new Map(Object.entries(b)));
  const seen = new Set<string>();
  for (let s = 0; s < stages.length; s++) {
    const stage = stages[s];
    if (!stage.nodes.length) continue;
    // a tensor is visited in the stage that computes it, or (a graph input) in the first that reads it
    const own = tensors.filter((t) => !seen.has(t) && (stage.nodes.some((n) => n.output.includes(t)) || stage.reads.includes(t)));
    own.forEach((t) => seen.add(t));
    const keeps = s < stages.length - 1 ? stage.keeps : [];
    const computed = own.filter((t) => !stage.reads.includes(t));
    const feedsOf = (b: number): Feeds => Object.fromEntries(stage.reads.map((t) => [t, cached[b].get(t)!]));
    if (computed.length || keeps.length) {
      const runner = await Runner.create(stageModel(model, stage, feedsOf(0)), { expose: [...new Set([...computed, ...keeps])], executionProviders: options.executionProviders });
      try {
        for (let b = 0; b < batches.length; b++) {
          const feeds = feedsOf(b);
          const out = await runner.run(feeds);
          for (const t of keeps) cached[b].set(t, out.exposed[t]);
          if (own.length) visit(Object.fromEntries(own.map((t) => [t, stage.reads.includes(t) ? feeds[t] : out.exposed[t]])));
        }
      } finally {
        await runner.dispose();
      }
    } else if (own.length) {
      for (let b = 0; b < batches.length; b++) visit(Object.fromEntries(own.map((t) => [t, cached[b].get(t)!])));
    }
    const later = new Set(stages.slice(s + 1).flatMap((st) => st.reads));
    for (const c of cached) for (const t of [...c.keys()]) if (!later.has(t)) c.delete(t);
    if (own.length) await stageDone(own);
  }
}
