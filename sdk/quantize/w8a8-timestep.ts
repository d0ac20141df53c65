/**
 * W8A8 timestep quantization (msModelSlim's w8a8_timestep, for diffusion models): activation
 * statistics are kept per diffusion timestep, and the model quantizes its activations
 *   statically (W8A8, scales calibrated on those timesteps) when t ≥ timestep_sep, and
 *   dynamically (W8A8 dynamic, per-token scales at run time) when t < timestep_sep.
 * Which side is which is quantbook's choice where msModelSlim's page leaves it open: sampling
 * runs from t = T−1 down to 0; the early, noise-dominated steps have steady activation ranges
 * that static scales fit, the late steps carry the image detail that per-token scales follow.
 *
 * Both ways live in one ONNX model: If(min(t) ≥ timestep_sep) runs the static graph in its then
 * branch and the dynamic graph in its else branch (weights are int8 in both). Each calibration
 * batch must hold a single timestep value.
 */
import * as arrow from 'apache-arrow';
import { QuantbookError, invalidArgument } from '../errors';
import { CalibrateOptions, CalibrationResult, calibrate } from '../calibration/calibrator';
import { CalibrationSource, batchesFrom } from '../calibration/data';
import { DataType } from '../onnx/dtype';
import { makeAttribute } from '../onnx/graph';
import { Model } from '../onnx/model';
import { AttributeType, GraphProto, NodeProto, newAttribute, newGraph, newNode, newValueInfo } from '../onnx/proto';
import { makeTensor } from '../onnx/tensor';
import type { Feeds } from '../runtime/runner';
import { ActMethod, W8A8Result, prepareFloat, quantizeW8A8 } from './w8a8';
import { W8A8DynamicResult, quantizeW8A8Dynamic } from './w8a8-dynamic';

export interface TimestepOptions {
  timestepSep: number;
  actMethod?: ActMethod;
  /** the model input holding the timestep (default: the input named t, timestep or timesteps) */
  timestepInput?: string;
  disableNames?: string[];
  /** where calibration runs, both sides and per timestep (a Device's executionProviders; default cpu) */
  executionProviders?: CalibrateOptions['executionProviders'];
}

export interface TimestepResult {
  float: Model;
  /** one model: static QDQ for t ≥ timestepSep, dynamic for t < timestepSep */
  qdq: Model;
  fakeQuant: Model;
  static: W8A8Result;
  dynamic: W8A8DynamicResult;
  /** min/max statistics per timestep of every activation the static side quantizes */
  perTimestep: Map<number, CalibrationResult>;
  timestepInput: string;
}

function timestepOf(feeds: Feeds, input: string, index: number): number {
  const t = feeds[input];
  if (!t) throw new QuantbookError('INVALID_ARGUMENT', `w8a8_timestep: calibration batch ${index} has no "${input}" input (the timestep)`);
  const values = Array.from(t.data as ArrayLike<number | bigint>, Number);
  if (!values.length || values.some((v) => v !== values[0])) {
    throw new QuantbookError('INVALID_ARGUMENT', `w8a8_timestep: calibration batch ${index} mixes timesteps (${[...new Set(values)].slice(0, 5).join(', ')}); give each batch a single timestep`);
  }
  return values[0];
}

export async function quantizeW8A8Timestep(model: Model, data: CalibrationSource, options: TimestepOptions): Promise<TimestepResult> {
  if (!Number.isInteger(options.timestepSep)) throw invalidArgument('timestep_sep', options.timestepSep, 'an integer timestep (typically half the number of sampling steps)');
  const float = prepareFloat(model);
  const inputs = float.graph.inputNames;
  const timestepInput = options.timestepInput ?? inputs.find((n) => ['t', 'timestep', 'timesteps'].includes(n.toLowerCase()));
  if (!timestepInput || !inputs.includes(timestepInput)) throw invalidArgument('timestep input', options.timestepInput, `one of the model inputs (${inputs.join(', ')})`);

  // batches grouped by their timestep (the data is read once and kept: a diffusion calibration set is small)
  const byStep = new Map<number, Feeds[]>();
  let index = 0;
  for await (const feeds of batchesFrom(data, inputs)) {
    const t = timestepOf(feeds, timestepInput, index++);
    if (!byStep.has(t)) byStep.set(t, []);
    byStep.get(t)!.push(feeds);
  }
  const staticBatches = [...byStep].filter(([t]) => t >= options.timestepSep).flatMap(([, b]) => b);
  if (!staticBatches.length) throw new QuantbookError('INVALID_ARGUMENT', `w8a8_timestep: no calibration batch has t ≥ timestep_sep (${options.timestepSep}); timesteps seen: ${[...byStep.keys()].sort((a, b) => a - b).join(', ')}`);

  const stat = await quantizeW8A8(float, staticBatches, { actMethod: options.actMethod, disableNames: options.disableNames, executionProviders: options.executionProviders });
  const dynamic = quantizeW8A8Dynamic(float, { disableNames: options.disableNames });
  const tensors = stat.calibration.targets.map((t) => t.tensor);
  const perTimestep = new Map<number, CalibrationResult>();
  for (const t of [...byStep.keys()].sort((a, b) => a - b)) perTimestep.set(t, await calibrate(float, byStep.get(t)!, { tensors, observer: 'minmax', executionProviders: options.executionProviders }));

  const qdq = combineByTimestep(float, stat.qdq, dynamic.qdq, timestepInput, options.timestepSep);
  return { float, qdq, fakeQuant: combineByTimestep(float, stat.fakeQuant, dynamic.fakeQuant, timestepInput, options.timestepSep), static: stat, dynamic, perTimestep, timestepInput };
}

/** A model's graph as an If branch: no inputs (it reads the outer inputs), every other name prefixed. */
function asBranch(m: Model, prefix: string, keep: Set<string>): GraphProto {
  const g = m.graph.proto;
  const rename = (n: string) => (!n || keep.has(n) ? n : `${prefix}${n}`);
  const renameNode = (n: NodeProto): NodeProto => ({ ...n, name: rename(n.name ?? ''), input: n.input.map(rename), output: n.output.map(rename) }) as NodeProto;
  return newGraph({
    name: `${prefix}branch`,
    node: g.node.map(renameNode),
    initializer: g.initializer.map((t) => ({ ...t, name: rename(t.name ?? '') }) as typeof t),
    output: g.output.map((o) => newValueInfo({ ...o, name: rename(o.name ?? '') })),
  });
}

/** If(min(t) ≥ sep) then `whenStatic` else `whenDynamic`, on the float model's inputs and outputs. */
export function combineByTimestep(float: Model, whenStatic: Model, whenDynamic: Model, timestepInput: string, sep: number): Model {
  const out = float.clone();
  const g = out.graph.proto;
  const keep = new Set(g.input.map((i) => i.name ?? ''));
  const tType = out.graph.valueType(timestepInput)?.elemType ?? DataType.FLOAT;
  const sepName = 'timestep_sep';
  const sepTensor = tType === DataType.INT64 ? makeTensor(sepName, DataType.INT64, [], BigInt64Array.of(BigInt(sep)))
    : tType === DataType.INT32 ? makeTensor(sepName, DataType.INT32, [], Int32Array.of(sep))
      : makeTensor(sepName, DataType.FLOAT, [], Float32Array.of(sep));
  g.initializer = [sepTensor];
  g.value_info = [];
  g.node = [
    newNode({ op_type: 'ReduceMin', name: 'timestep_min', input: [timestepInput], output: ['timestep_min'], attribute: [makeAttribute('keepdims', 0)] }),
    newNode({ op_type: 'GreaterOrEqual', name: 'timestep_is_static', input: ['timestep_min', sepName], output: ['timestep_is_static'] }),
    newNode({
      op_type: 'If', name: 'timestep_switch', input: ['timestep_is_static'], output: g.output.map((o) => o.name ?? ''),
      attribute: [
        newAttribute({ name: 'then_branch', type: AttributeType.GRAPH, g: asBranch(whenStatic, 'static/', keep) }),
        newAttribute({ name: 'else_branch', type: AttributeType.GRAPH, g: asBranch(whenDynamic, 'dynamic/', keep) }),
      ],
    }),
  ];
  out.graph.invalidate();
  return out;
}

/** Per-timestep statistics as one Arrow table: the calibration columns plus timestep and side. */
export function timestepStatsTable(perTimestep: Map<number, CalibrationResult>, sep: number): arrow.Table {
  const rows = [...perTimestep].flatMap(([t, c]) => c.rows().map((r) => ({ t, r })));
  return arrow.tableFromArrays({
    timestep: Int32Array.from(rows, (x) => x.t),
    side: rows.map((x) => (x.t >= sep ? 'static' : 'dynamic')),
    layer: rows.map((x) => x.r.layer),
    tensor: rows.map((x) => x.r.tensor),
    min: Float64Array.from(rows, (x) => x.r.min),
    max: Float64Array.from(rows, (x) => x.r.max),
    mean: Float64Array.from(rows, (x) => x.r.mean),
    std: Float64Array.from(rows, (x) => x.r.std),
    scale: Float64Array.from(rows, (x) => x.r.scale),
    zeroPoint: Int32Array.from(rows, (x) => x.r.zeroPoint),
  });
}
