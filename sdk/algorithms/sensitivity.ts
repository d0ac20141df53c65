/**
 * Per-layer sensitivity: for every quantized layer, the model with ONLY that layer quantized and
 * with ALL BUT that layer quantized, compared with the float model on the same batches (output
 * SQNR and cosine; a task metric when the caller gives an evaluation function). The "all but"
 * error ranks layers for fallback: the layer whose float version recovers most goes first
 * (msModelSlim's amp_num). ONNX Runtime CPU is deterministic, so the ranking is reproducible.
 */
import * as arrow from 'apache-arrow';
import * as ort from 'onnxruntime-node';
import { QuantbookError } from '../errors';
import { OutputErrorAccumulator } from '../eval/metrics';
import { Model } from '../onnx/model';
import { Feeds } from '../runtime/runner';
import { CalibrationSource, collectBatches } from '../calibration/data';
import { QuantLayer } from '../quantize/layers';

export interface SensitivityRow {
  layer: string;
  opType: string;
  onlySqnrDb: number;
  onlyCosine: number;
  allButSqnrDb: number;
  allButCosine: number;
  /** task metric (higher is better) with only / all but this layer quantized; NaN without `evaluate` */
  onlyMetric: number;
  allButMetric: number;
}

export interface SensitivityOptions {
  /** batches whose outputs are compared with the float model's: any CalibrationSource (read once, kept in memory) */
  data: CalibrationSource;
  /** task metric of a model (higher is better), e.g. accuracy on held-out data */
  evaluate?: (model: Uint8Array) => Promise<number>;
  onProgress?: (p: { done: number; total: number; layer: string }) => void;
}

export interface Sensitivity {
  rows: SensitivityRow[];
  /** all layers quantized, and the float model's metric */
  all: { sqnrDb: number; cosine: number; metric: number };
  floatMetric: number;
  /** layers from most to least sensitive: by the metric "all but" recovers (if given), then by SQNR */
  ranking(): string[];
  table(): arrow.Table;
}

async function outputsOf(model: Uint8Array, data: Feeds[]): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(model);
  try {
    const out: Float32Array[] = [];
    for (const feeds of data) for (const t of Object.values(await s.run(feeds))) out.push(t.data as Float32Array);
    return out;
  } finally {
    await s.release();
  }
}

function compare(reference: Float32Array[], test: Float32Array[]): { sqnrDb: number; cosine: number } {
  const acc = new OutputErrorAccumulator();
  reference.forEach((r, i) => acc.add(r, test[i]));
  const { sqnrDb, cosine } = acc.result();
  return { sqnrDb, cosine };
}

/**
 * `build(keep)` returns the model with exactly the layers `keep` quantized (the engine's own
 * recipe: same activation ranges, same weights), so every variant differs in one layer only.
 */
export async function layerSensitivity(float: Model, layers: QuantLayer[], build: (keep: QuantLayer[]) => Model, options: SensitivityOptions): Promise<Sensitivity> {
  const data = options.data === undefined ? [] : await collectBatches(options.data, float.graph.inputNames);
  if (!data.length) throw new QuantbookError('INVALID_ARGUMENT', 'sensitivity: data must hold at least one batch');
  const reference = await outputsOf(float.toBytes(), data);
  const measure = async (keep: QuantLayer[]) => {
    const bytes = build(keep).toBytes();
    const err = compare(reference, await outputsOf(bytes, data));
    return { ...err, metric: options.evaluate ? await options.evaluate(bytes) : NaN };
  };
  const floatMetric = options.evaluate ? await options.evaluate(float.toBytes()) : NaN;
  const all = await measure(layers);
  const rows: SensitivityRow[] = [];
  for (const [i, layer] of layers.entries()) {
    const only = await measure([layer]);
    const allBut = await measure(layers.filter((l) => l !== layer));
    rows.push({
      layer: layer.name, opType: layer.opType,
      onlySqnrDb: only.sqnrDb, onlyCosine: only.cosine, allButSqnrDb: allBut.sqnrDb, allButCosine: allBut.cosine,
      onlyMetric: only.metric, allButMetric: allBut.metric,
    });
    options.onProgress?.({ done: i + 1, total: layers.length, layer: layer.name });
  }
  return {
    rows, all, floatMetric,
    ranking: () => rankLayers(rows),
    table: () => sensitivityTable(rows),
  };
}

/** Most sensitive first: higher "all but" metric, then higher "all but" SQNR, then name (stable). */
export function rankLayers(rows: SensitivityRow[]): string[] {
  const metric = (v: number) => (Number.isNaN(v) ? -Infinity : v);
  return [...rows].sort((a, b) => metric(b.allButMetric) - metric(a.allButMetric) || b.allButSqnrDb - a.allButSqnrDb || a.layer.localeCompare(b.layer)).map((r) => r.layer);
}

export function sensitivityTable(rows: SensitivityRow[]): arrow.Table {
  return arrow.tableFromArrays({
    layer: rows.map((r) => r.layer),
    op_type: rows.map((r) => r.opType),
    only_sqnr_db: Float64Array.from(rows, (r) => r.onlySqnrDb),
    only_cosine: Float64Array.from(rows, (r) => r.onlyCosine),
    all_but_sqnr_db: Float64Array.from(rows, (r) => r.allButSqnrDb),
    all_but_cosine: Float64Array.from(rows, (r) => r.allButCosine),
    only_metric: Float64Array.from(rows, (r) => r.onlyMetric),
    all_but_metric: Float64Array.from(rows, (r) => r.allButMetric),
  });
}
