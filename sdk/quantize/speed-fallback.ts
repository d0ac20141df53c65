/**
 * Keep float the layers whose int8 kernels are slower than their float kernels on this CPU.
 *
 * ONNX Runtime's int8 kernels lose to its fp32 NCHWc kernels on narrow layers: on an AVX-512
 * VNNI Xeon, a 16-channel depthwise Conv takes 2.55 ms as QLinearConv against ~0.3 ms in fp32,
 * so a uniformly int8 MobileNet can be slower than the float one (issue 22). Which layers lose
 * depends on the CPU, ORT's version and the shapes, so it is measured, not guessed:
 *
 * 1. the float and the int8 model each run a few batches under ORT's profiler;
 * 2. every kernel ORT ran is charged to the layer it came from (`kernelOwners`): a fused
 *    Conv+BatchNorm+Clip to its Conv, a QLinearConv to its Conv, a QuantizeLinear to the layer
 *    that needed it; layout changes ORT added belong to no layer;
 * 3. the float/int8 assignment with the least total time, each switch between a float and an
 *    int8 stretch costing a measured Q/DQ and layout change (`layersToKeepFloat`), is quantized
 *    again with its float layers float;
 * 4. the mixed model and the all-int8 model are timed against each other and fp32 in
 *    alternating rounds, and the faster of the two is kept: per-layer times miss what a float
 *    layer inside an int8 chain costs (its Q/DQ and layout changes), the whole model does not.
 */
import { QuantbookError } from '../errors';
import { Graph } from '../onnx/graph';
import { Model } from '../onnx/model';
import { CalibrationSource, collectBatches } from '../calibration/data';
import { NodeTime, profileNodeTimes } from '../runtime/kernel-profile';
import { median, pairedLatencies } from '../runtime/latency';
import { Feeds } from '../runtime/runner';

export interface LayerSpeed {
  layer: string;
  opType: string;
  /** ORT kernel time charged to the layer in the float model, µs per run */
  floatUs: number;
  /** the same in the int8 model (its Q/DQ included) */
  int8Us: number;
}

export interface SpeedFallbackReport {
  /** every main-graph layer the first (all-int8) model quantized, with its measured times */
  layers: LayerSpeed[];
  /** the measured cost of one switch between a float and an int8 stretch, µs */
  switchUs: number;
  /** the layers proposed to stay float (layersToKeepFloat: the cheapest float/int8 assignment) */
  proposed: string[];
  /** the layers the returned model keeps float for speed (empty when all-int8 was faster) */
  keptFloat: string[];
  /** whole-model median latencies on the timing batches, ms (mixed: with `proposed` float) */
  latencyMs: { float: number; allInt8: number; mixed?: number };
  /** which model was returned */
  chosen: 'all-int8' | 'mixed';
  /** the returned model is still slower than fp32 on this CPU */
  slowerThanFloat: boolean;
}

/** Ops ORT fuses into the kernel of the layer before them (Conv+BatchNorm, Conv+Clip, Conv+Add, QLinear chains). */
const FOLLOWERS = new Set(['BatchNormalization', 'Relu', 'Clip', 'LeakyRelu', 'HardSigmoid', 'HardSwish', 'Sigmoid', 'Tanh', 'Add', 'Sum', 'Mul', 'QuantizeLinear', 'DequantizeLinear']);

/**
 * Which layer each node of the main graph belongs to for timing: the layer itself; its weight
 * and bias DequantizeLinears; the Q/DQ and the fusable ops that follow its output while each
 * value has a single reader; a QuantizeLinear of a float value (a graph input, a float op's
 * output) belongs to the layer it feeds. Other nodes belong to no layer. The map is keyed by
 * node name and, where ORT names a kernel after it, by output tensor name.
 */
export function kernelOwners(graph: Graph, layers: ReadonlySet<string>): Map<string, string> {
  const owner = new Map<string, string>();
  const ownerOfTensor = (t: string): string | undefined => {
    const p = graph.producer(t);
    return p ? owner.get(p.name ?? '') : undefined;
  };
  for (const node of graph.nodes) {
    const name = node.name ?? '';
    if (layers.has(name)) {
      owner.set(name, name);
      continue;
    }
    if (!FOLLOWERS.has(node.op_type ?? '')) continue;
    const reads = node.input.filter((i) => i && !graph.isConstant(i));
    if (reads.length === 0) continue; // a weight DequantizeLinear: charged below, to its reader
    // follows a layer whose output it alone reads
    const from = reads.map((t) => (graph.consumers(t).length === 1 ? ownerOfTensor(t) : undefined)).find((o) => o !== undefined);
    if (from) owner.set(name, from);
  }
  for (const node of graph.nodes) {
    const name = node.name ?? '';
    if (owner.has(name) || (node.op_type !== 'DequantizeLinear' && node.op_type !== 'QuantizeLinear')) continue;
    // a weight DQ, or the Q → DQ of a float value: charged to the first layer downstream
    const reader = firstLayerDownstream(graph, node.output[0], layers);
    if (reader) owner.set(name, reader);
    if (reader && node.op_type === 'QuantizeLinear') for (const dq of graph.consumers(node.output[0])) if (!owner.has(dq.name ?? '')) owner.set(dq.name ?? '', reader);
  }
  // ORT names the NCHWc kernels it makes after their output tensor (a Conv fused with its Clip
  // runs as `<the Clip's output>_nchwc`): those names are charged like the node's
  const names = new Set(graph.nodes.map((n) => n.name ?? ''));
  for (const node of graph.nodes) {
    const o = owner.get(node.name ?? '');
    if (o !== undefined) for (const t of node.output) if (t && !names.has(t) && !owner.has(t)) owner.set(t, o);
  }
  return owner;
}

function firstLayerDownstream(graph: Graph, tensor: string, layers: ReadonlySet<string>): string | undefined {
  for (const c of graph.consumers(tensor)) {
    if (layers.has(c.name ?? '')) return c.name!;
    if (c.op_type === 'DequantizeLinear') {
      const next = firstLayerDownstream(graph, c.output[0], layers);
      if (next) return next;
    }
  }
  return undefined;
}

/** Sums each layer's kernel times. */
function chargeToLayers(times: NodeTime[], owners: Map<string, string>): Map<string, number> {
  const per = new Map<string, number>();
  for (const t of times) {
    const layer = owners.get(t.node);
    if (layer !== undefined) per.set(layer, (per.get(layer) ?? 0) + t.us);
  }
  return per;
}

export interface LayerSpeeds {
  /** per layer, in the order given */
  layers: LayerSpeed[];
  /** what one switch between float and int8 costs (switchCostUs) */
  switchUs: number;
}

/** Per-layer kernel times of the float and the int8 model (main-graph layers only, in graph order). */
export async function measureLayerSpeeds(float: Model, int8: Model, layers: ReadonlyArray<{ name: string; opType: string }>, batches: readonly Feeds[], runs = 4): Promise<LayerSpeeds> {
  const names = new Set(layers.map((l) => l.name));
  const floatTimes = chargeToLayers(await profileNodeTimes(modelSource(float), batches, { runs }), kernelOwners(float.graph, names));
  const int8Owners = kernelOwners(int8.graph, names);
  const int8Profile = await profileNodeTimes(modelSource(int8), batches, { runs });
  const int8Times = chargeToLayers(int8Profile, int8Owners);
  return {
    layers: layers.map((l) => ({ layer: l.name, opType: l.opType, floatUs: floatTimes.get(l.name) ?? 0, int8Us: int8Times.get(l.name) ?? 0 })),
    switchUs: switchCostUs(int8Profile, int8Owners),
  };
}

function modelSource(model: Model): Uint8Array {
  requireInMemory(model);
  return model.toBytes();
}

/** The fallback profiles models from bytes: a model held by reference is refused before any work. */
export function requireInMemory(model: Model): void {
  if (model.heldByReference()) throw new QuantbookError('UNSUPPORTED', 'speedFallback: a model held by reference (loadExternalData: false) cannot be profiled; load it into memory or leave speedFallback off');
}

/** The batches the fallback times on: the caller's, or the first two of the calibration data. */
export async function timingBatches(choice: true | Feeds[], calibData: CalibrationSource, inputNames: readonly string[]): Promise<Feeds[]> {
  const batches = choice === true ? await collectBatches(calibData, inputNames, 2) : choice;
  if (!Array.isArray(batches) || batches.length === 0) throw new QuantbookError('INVALID_ARGUMENT', 'speedFallback: no batches to time on (pass true to use the first calibration batches, or a non-empty array of feeds)');
  return batches;
}

/** Calibration data that can be read a second time (the fallback quantizes twice). */
export function requireRereadable(calibData: CalibrationSource): void {
  const it = calibData as { next?: unknown; [Symbol.iterator]?: () => unknown; [Symbol.asyncIterator]?: () => unknown };
  const oneShot = typeof it === 'object' && it !== null && typeof it.next === 'function'
    && ((it[Symbol.iterator] && it[Symbol.iterator]!() === it) || (it[Symbol.asyncIterator] && it[Symbol.asyncIterator]!() === it));
  if (oneShot) throw new QuantbookError('INVALID_ARGUMENT', 'speedFallback: the calibration data is a one-shot iterator, and the fallback reads it twice (once per quantization); pass a folder, an array of feeds or a re-iterable object');
}

/** The layers whose int8 kernels took longer than their float ones. */
export function slowerInInt8(speeds: readonly LayerSpeed[]): LayerSpeed[] {
  return speeds.filter((s) => s.int8Us > s.floatUs);
}

/**
 * Which layers to keep float when every switch between a float and an int8 stretch costs
 * `switchUs` (ORT adds a Q or DQ there, and changes layout: NCHWc for float, NHWC for int8):
 * the cheapest float/int8 assignment of the layers in graph order, found by dynamic programming
 * over the two states (the model starts and ends in float). A lone layer that is slower in int8
 * stays int8 when leaving and re-entering int8 around it would cost more than it saves.
 */
export function cheapestAssignment(speeds: readonly LayerSpeed[], switchUs: number): LayerSpeed[] {
  // cost[s]: the cheapest total so far ending in state s (0 float, 1 int8); from[i][s]: the state before
  let cost = [0, switchUs];
  const from: Array<[number, number]> = [];
  for (const s of speeds) {
    // a layer the profiles could not charge on one side has no say
    const own = s.floatUs > 0 && s.int8Us > 0 ? [s.floatUs, s.int8Us] : [0, 0];
    const next = [0, 1].map((state) => {
      const stay = cost[state];
      const change = cost[1 - state] + switchUs;
      return stay <= change ? [stay + own[state], state] : [change + own[state], 1 - state];
    });
    from.push([next[0][1], next[1][1]]);
    cost = [next[0][0], next[1][0]];
  }
  // end in float: an int8 last layer pays one more switch
  let state = cost[0] <= cost[1] + switchUs ? 0 : 1;
  const keptFloat: LayerSpeed[] = [];
  for (let i = speeds.length - 1; i >= 0; i--) {
    if (state === 0) keptFloat.push(speeds[i]);
    state = from[i][state];
  }
  return keptFloat.reverse();
}

/**
 * The proposal: the cheapest assignment; where that is every layer of the model (`totalLayers`
 * counts those in bodies too), the layer that loses least in int8 stays int8, so that the result
 * is still a W8A8 model.
 */
export function layersToKeepFloat(speeds: readonly LayerSpeed[], switchUs: number, totalLayers: number): LayerSpeed[] {
  const cheapest = cheapestAssignment(speeds, switchUs);
  if (cheapest.length < totalLayers || cheapest.length < 2) return cheapest;
  const leastLoss = cheapest.reduce((a, b) => (b.int8Us - b.floatUs < a.int8Us - a.floatUs ? b : a));
  return cheapest.filter((s) => s !== leastLoss);
}

/**
 * What one float/int8 switch costs: a QuantizeLinear or DequantizeLinear (the median of those ORT
 * ran in the int8 model) plus, where ORT changes layout between its float and int8 kernels, the
 * median layout change (a Transpose it added, charged to no layer).
 */
export function switchCostUs(int8Times: readonly NodeTime[], owners: Map<string, string>): number {
  const medianOrZero = (xs: number[]) => (xs.length ? median(xs) : 0);
  const transposes = int8Times.filter((t) => t.kernel === 'Transpose' && !owners.has(t.node)).map((t) => t.us);
  const quantizers = int8Times.filter((t) => t.kernel === 'QuantizeLinear' || t.kernel === 'DequantizeLinear').map((t) => t.us);
  return medianOrZero(transposes) + medianOrZero(quantizers);
}

export function slowerReason(s: LayerSpeed): string {
  return `int8 slower than float on this CPU (ONNX Runtime profile: ${(s.int8Us / 1000).toFixed(3)} ms int8 against ${(s.floatUs / 1000).toFixed(3)} ms float per run); kept float by speedFallback`;
}

/** Whole-model latencies of fp32, all-int8 and (when given) the mixed model, in alternating rounds. */
export async function wholeModelLatencies(float: Model, allInt8: Model, mixed: Model | undefined, batches: readonly Feeds[]): Promise<SpeedFallbackReport['latencyMs']> {
  const models = [float, allInt8, ...(mixed ? [mixed] : [])].map(modelSource);
  const [f, a, m] = await pairedLatencies(models, batches);
  return { float: f, allInt8: a, ...(mixed ? { mixed: m } : {}) };
}
