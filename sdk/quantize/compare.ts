/**
 * Layer-by-layer comparison of a float model and its quantized version on the same batches:
 * SQNR (dB), cosine similarity and max abs error of each quantized layer's output, and of the
 * model outputs. Returned as rows and as an Arrow table, the basis of sensitivity plots.
 */
import * as arrow from 'apache-arrow';
import { Model } from '../onnx/model';
import { Feeds, Runner } from '../runtime/runner';
import { OutputErrorAccumulator } from '../eval/metrics';

export interface LayerComparison { layer: string; opType: string; tensor: string; sqnrDb: number; cosine: number; maxAbsError: number }

export async function compareModels(
  float: Model, quantized: Model, layers: Array<{ layer: string; opType: string; tensor: string }>, batches: Iterable<Feeds> | AsyncIterable<Feeds>,
): Promise<LayerComparison[]> {
  const tensors = [...new Set(layers.map((l) => l.tensor))];
  const a = await Runner.create(float, { expose: tensors });
  const b = await Runner.create(quantized, { expose: tensors });
  const acc = new Map<string, OutputErrorAccumulator>();
  const outputs = a.outputNames;
  for (const t of [...tensors, ...outputs]) acc.set(t, new OutputErrorAccumulator());
  try {
    for await (const feeds of batches) {
      const [ra, rb] = [await a.run(feeds), await b.run(feeds)];
      for (const t of tensors) acc.get(t)!.add(ra.exposed[t].data as Float32Array, rb.exposed[t].data as Float32Array);
      for (const o of outputs) acc.get(o)!.add(ra.outputs[o].data as Float32Array, rb.outputs[o].data as Float32Array);
    }
  } finally {
    await a.dispose();
    await b.dispose();
  }
  return [
    ...layers.map((l) => ({ ...l, ...acc.get(l.tensor)!.result() })),
    ...outputs.map((o) => ({ layer: '(model output)', opType: 'output', tensor: o, ...acc.get(o)!.result() })),
  ];
}

export function comparisonTable(rows: LayerComparison[]): arrow.Table {
  return arrow.tableFromArrays({
    layer: rows.map((r) => r.layer),
    opType: rows.map((r) => r.opType),
    tensor: rows.map((r) => r.tensor),
    sqnrDb: Float64Array.from(rows, (r) => r.sqnrDb),
    cosine: Float64Array.from(rows, (r) => r.cosine),
    maxAbsError: Float64Array.from(rows, (r) => r.maxAbsError),
  });
}

