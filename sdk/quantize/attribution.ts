/**
 * Where quantization error is born, not only where it is carried.
 *
 * Comparing a quantized model's layer outputs with the float model's shows the *accumulated*
 * error: each layer's own error plus everything upstream. To see what a layer adds on its own,
 * its quantized form (input Q → DQ, integer weights and bias, and the Q → DQ on its output where
 * the quantized model requantizes it, exactly as the quantized model computes it) is run on the
 * *float* model's input to that layer. A Q → DQ pair between two layers thus counts for both: as
 * the first one's output and the second one's input. All layers at once, in one
 * model: the float model plus, beside each layer, a copy of its quantized form that reads float
 * tensors. One run gives every layer's float output and its "local" output; the difference is
 * the error that layer alone adds.
 */
import { Model } from '../onnx/model';
import { NodeProto, newNode } from '../onnx/proto';
import { makeTensor } from '../onnx/tensor';
import { upgradeOpset } from '../onnx/opset-upgrade';
import { consumerDomain } from './consumer-domain';

export interface LocalErrorModel {
  /** the float model with every layer's quantized copy beside it */
  model: Model;
  /** layer name → the tensor its quantized copy writes (compare with the layer's float output) */
  localOutputs: Map<string, string>;
  /** layers that could not be copied, with the reason */
  skipped: Array<{ layer: string; reason: string }>;
  /**
   * where a layer's copy ends in its output Q → DQ: the range that Q keeps, cut to what the
   * layer's readers can tell apart (consumer-domain.ts); compare the float output clamped to it
   */
  outputDomains: Map<string, [number, number]>;
}

/**
 * Builds the model that measures each layer's own error. `layers` name nodes of `quantized`'s
 * main graph (layers inside bodies are listed in `skipped`). Tensors the float model also has
 * are read from the float computation; the quantized model's own nodes between those tensors
 * and the layer (Q → DQ pairs, dequantized constants) are copied with it.
 */
export function localErrorModel(float: Model, quantized: Model, layers: Array<{ layer: string; tensor: string }>): LocalErrorModel {
  const model = float.clone();
  const fg = model.graph;
  const qg = quantized.graph;
  const skipped: LocalErrorModel['skipped'] = [];
  const localOutputs = new Map<string, string>();
  const outputDomains = new Map<string, [number, number]>();
  const opset = quantized.opsetVersion('') ?? 0;
  if ((model.opsetVersion('') ?? 0) < opset) {
    // the quantized copies use the quantized model's operator versions (e.g. per-axis DequantizeLinear)
    try {
      upgradeOpset(model, opset);
    } catch (e) {
      return { model: float, localOutputs, outputDomains, skipped: layers.map((l) => ({ layer: l.layer, reason: `the float model cannot be brought to the quantized model's opset ${opset}: ${(e as Error).message}` })) };
    }
  }
  const names = fg.nameSource();
  // the float model's own tensors (edits below leave the graph's index as it was until the end)
  const isFloatTensor = (t: string) => fg.hasTensor(t);
  const copiedConstants = new Map<string, string>();
  const added: NodeProto[] = [];
  for (const { layer, tensor } of layers) {
    const node = qg.node(layer) ?? qg.producer(tensor);
    if (!node || !qg.proto.node.includes(node)) {
      skipped.push({ layer, reason: 'not a node of the main graph (layers inside If/Loop/Scan bodies are not attributed)' });
      continue;
    }
    // per layer: a copy of the quantized nodes between float tensors and this layer
    const renamed = new Map<string, string>();
    const pending: NodeProto[] = [];
    const resolve = (t: string): string => {
      if (!t || isFloatTensor(t)) return t;
      const known = renamed.get(t) ?? copiedConstants.get(t);
      if (known) return known;
      if (qg.isConstant(t) && !qg.producer(t)) {
        const v = qg.constantValue(t)!;
        const name = names.fresh(t);
        fg.proto.initializer.push(makeTensor(name, v.type, v.dims, v.data));
        copiedConstants.set(t, name);
        return name;
      }
      const p = qg.producer(t);
      if (!p) throw new Error(`local error model: "${t}" is neither a float tensor nor computed in the quantized model`);
      const inputs = p.input.map(resolve);
      const outputs = p.output.map((o) => {
        const name = o ? names.fresh(`${layer}/local/${o}`) : '';
        if (o) renamed.set(o, name);
        return name;
      });
      pending.push(newNode({ op_type: p.op_type, domain: p.domain, name: names.fresh(`${layer}/local/${p.name || p.op_type}`), input: inputs, output: outputs, attribute: p.attribute }));
      return renamed.get(t)!;
    };
    try {
      const inputs = node.input.map(resolve);
      let out = names.fresh(`${layer}/local`);
      pending.push(newNode({ op_type: node.op_type, domain: node.domain, name: names.fresh(`${layer}/local_node`), input: inputs, output: [out, ...node.output.slice(1).map((o) => (o ? names.fresh(`${layer}/local/${o}`) : ''))], attribute: node.attribute }));
      // the layer's output quantization (its requantization point) is part of what it does
      const q = qg.consumers(node.output[0]).find((c) => c.op_type === 'QuantizeLinear');
      const dq = q && qg.consumers(q.output[0]).find((c) => c.op_type === 'DequantizeLinear');
      if (q && dq) {
        const [quantized, dequantized] = [names.fresh(`${layer}/local_quantized`), names.fresh(`${layer}/local_dequantized`)];
        pending.push(
          newNode({ op_type: 'QuantizeLinear', name: names.fresh(`${layer}/local_q`), input: [out, ...q.input.slice(1).map(resolve)], output: [quantized], attribute: q.attribute }),
          newNode({ op_type: 'DequantizeLinear', name: names.fresh(`${layer}/local_dq`), input: [quantized, ...dq.input.slice(1).map(resolve)], output: [dequantized], attribute: dq.attribute }),
        );
        out = dequantized;
        // values the readers cannot tell apart are no error: the float reference is clamped to their domain
        const domain = consumerDomain(fg, node.output[0]);
        if (Number.isFinite(domain[0]) || Number.isFinite(domain[1])) outputDomains.set(layer, domain);
      }
      added.push(...pending);
      localOutputs.set(layer, out);
    } catch (e) {
      skipped.push({ layer, reason: (e as Error).message });
    }
  }
  // every copy reads float tensors or earlier copies: appended after the float nodes, the order stays topological
  fg.proto.node.push(...added);
  fg.invalidate();
  return { model, localOutputs, outputDomains, skipped };
}

/** The rows with an own (local) SQNR, worst (lowest) first; rows without one (model outputs, layers not measured) are left out. */
export function worstFirst<T extends { localSqnrDb?: number }>(rows: readonly T[]): T[] {
  return rows.filter((r) => Number.isFinite(r.localSqnrDb)).sort((a, b) => a.localSqnrDb! - b.localSqnrDb!);
}

/**
 * How a network carries the noise its layers add: the lowest output SQNR minus the SQNR that the
 * layers' own noise would give if each added at unit gain (−10·log10 Σ 10^(−own/10)). Near 0 dB
 * the noise adds up; positive, the network attenuates it (trained PP-OCRv4: +1.8 to +9.6 dB);
 * negative, it amplifies it (a randomly initialised VGG: −15 dB). NaN without layer and output rows.
 */
export function excessAmplificationDb(rows: ReadonlyArray<{ opType: string; sqnrDb: number; localSqnrDb?: number }>): number {
  const own = rows.filter((r) => r.opType !== 'output' && Number.isFinite(r.localSqnrDb)).map((r) => r.localSqnrDb!);
  const outputs = rows.filter((r) => r.opType === 'output').map((r) => r.sqnrDb);
  if (!own.length || !outputs.length) return NaN;
  const unitGain = -10 * Math.log10(own.reduce((a, s) => a + 10 ** (-s / 10), 0));
  return Math.min(...outputs) - unitGain;
}
