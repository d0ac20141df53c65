/**
 * Layer-by-layer comparison of a float model and its quantized version on the same batches:
 * SQNR (dB), cosine similarity and max abs error of each quantized layer's output, and of the
 * model outputs; beside each, the error that layer adds on its own (attribution.ts). Returned as
 * rows and as an Arrow table, the basis of sensitivity plots.
 */
import * as arrow from 'apache-arrow';
import { Model } from '../onnx/model';
import { Runner } from '../runtime/runner';
import { CalibrationSource, batchesFrom } from '../calibration/data';
import { OutputErrorAccumulator } from '../eval/metrics';
import { localErrorModel } from './attribution';

export interface LayerComparison {
  layer: string;
  opType: string;
  tensor: string;
  /** accumulated error at the layer's output: this layer's own plus everything upstream */
  sqnrDb: number;
  cosine: number;
  maxAbsError: number;
  /** the error this layer adds on its own: its quantized form fed the float input (NaN where not measured) */
  localSqnrDb: number;
  localCosine: number;
}

export interface CompareOptions {
  /** measure each layer's own error too (one more copy of each layer in the float run; default true) */
  attribution?: boolean;
  /** where both models run (a Device's executionProviders; default cpu) */
  executionProviders?: import('onnxruntime-node').InferenceSession.SessionOptions['executionProviders'];
}

export async function compareModels(
  float: Model, quantized: Model, layers: Array<{ layer: string; opType: string; tensor: string }>, batches: CalibrationSource,
  options: CompareOptions = {},
): Promise<LayerComparison[]> {
  const tensors = [...new Set(layers.map((l) => l.tensor))];
  // the float run carries each layer's quantized copy (attribution.ts): one run gives both references
  const local = options.attribution === false ? undefined : localErrorModel(float, quantized, layers);
  const localTensors = local ? [...local.localOutputs.values()] : [];
  const a = await Runner.create(local?.model ?? float, { expose: [...tensors, ...localTensors], executionProviders: options.executionProviders });
  const b = await Runner.create(quantized, { expose: tensors, executionProviders: options.executionProviders });
  const acc = new Map<string, OutputErrorAccumulator>();
  const outputs = a.outputNames;
  for (const t of [...tensors, ...outputs]) acc.set(t, new OutputErrorAccumulator());
  const localAcc = new Map<string, OutputErrorAccumulator>();
  for (const l of layers) if (local?.localOutputs.has(l.layer)) localAcc.set(l.layer, new OutputErrorAccumulator());
  try {
    for await (const feeds of batchesFrom(batches, float.graph.inputNames)) {
      const [ra, rb] = [await a.run(feeds), await b.run(feeds)];
      for (const t of tensors) acc.get(t)!.add(ra.exposed[t].data as Float32Array, rb.exposed[t].data as Float32Array);
      for (const o of outputs) acc.get(o)!.add(ra.outputs[o].data as Float32Array, rb.outputs[o].data as Float32Array);
      for (const l of layers) {
        const into = localAcc.get(l.layer);
        if (!into) continue;
        const domain = local!.outputDomains.get(l.layer);
        const reference = ra.exposed[l.tensor].data as Float32Array;
        into.add(domain ? clamped(reference, domain) : reference, ra.exposed[local!.localOutputs.get(l.layer)!].data as Float32Array);
      }
    }
  } finally {
    await a.dispose();
    await b.dispose();
  }
  const localOf = (layer: string) => {
    const r = localAcc.get(layer)?.result();
    return { localSqnrDb: r?.sqnrDb ?? NaN, localCosine: r?.cosine ?? NaN };
  };
  return [
    ...layers.map((l) => ({ ...l, ...acc.get(l.tensor)!.result(), ...localOf(l.layer) })),
    ...outputs.map((o) => ({ layer: '(model output)', opType: 'output', tensor: o, ...acc.get(o)!.result(), localSqnrDb: NaN, localCosine: NaN })),
  ];
}

function clamped(x: Float32Array, [lo, hi]: [number, number]): Float32Array {
  return x.map((v) => (v < lo ? lo : v > hi ? hi : v));
}

export function comparisonTable(rows: LayerComparison[]): arrow.Table {
  return arrow.tableFromArrays({
    layer: rows.map((r) => r.layer),
    opType: rows.map((r) => r.opType),
    tensor: rows.map((r) => r.tensor),
    sqnrDb: Float64Array.from(rows, (r) => r.sqnrDb),
    cosine: Float64Array.from(rows, (r) => r.cosine),
    maxAbsError: Float64Array.from(rows, (r) => r.maxAbsError),
    localSqnrDb: Float64Array.from(rows, (r) => r.localSqnrDb),
    localCosine: Float64Array.from(rows, (r) => r.localCosine),
  });
}

