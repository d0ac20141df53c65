/**
 * `quantbook inspect`: what a model holds — IR/opset, inputs and outputs, operators, and
 * the layers quantbook can quantize (the AMCT set: Conv, ConvTranspose, Gemm, MatMul,
 * AveragePool, GlobalAveragePool).
 */
import { Model } from '../onnx/model';
import { typeName } from '../onnx/dtype';
import { QUANTIZABLE_OP_TYPES } from '../quantize/layers';


export interface ModelSummary {
  irVersion: number;
  opsets: Record<string, number>;
  inputs: Array<{ name: string; type: string; shape: string }>;
  outputs: Array<{ name: string; type: string; shape: string }>;
  nodeCount: number;
  subgraphNodeCount: number;
  opCounts: Record<string, number>;
  quantizable: Record<string, number>;
}

export function summarize(model: Model): ModelSummary {
  const g = model.graph;
  const describe = (name: string) => {
    const vt = g.valueType(name);
    return { name, type: vt ? typeName(vt.elemType).toLowerCase() : '?', shape: vt?.shape ? `[${vt.shape.map((d) => (d === null ? '?' : d)).join(', ')}]` : '?' };
  };
  const opCounts: Record<string, number> = {};
  for (const n of g.nodes) opCounts[n.op_type!] = (opCounts[n.op_type!] ?? 0) + 1;
  let all = 0;
  g.walk(() => all++);
  const quantizable: Record<string, number> = {};
  for (const op of QUANTIZABLE_OP_TYPES) if (opCounts[op]) quantizable[op] = opCounts[op];
  return {
    irVersion: model.irVersion,
    opsets: Object.fromEntries(model.proto.opset_import.map((o) => [o.domain || 'ai.onnx', Number(o.version?.toString())])),
    inputs: g.inputNames.map(describe),
    outputs: g.outputNames.map(describe),
    nodeCount: g.nodes.length,
    subgraphNodeCount: all - g.nodes.length,
    opCounts,
    quantizable,
  };
}

export function formatSummary(s: ModelSummary): string {
  const lines = [
    `IR ${s.irVersion}, opsets ${Object.entries(s.opsets).map(([d, v]) => `${d} ${v}`).join(', ')}`,
    ...s.inputs.map((i) => `input  ${i.name}: ${i.type} ${i.shape}`),
    ...s.outputs.map((o) => `output ${o.name}: ${o.type} ${o.shape}`),
    `${s.nodeCount} nodes${s.subgraphNodeCount ? ` (+${s.subgraphNodeCount} in subgraphs)` : ''}: ${Object.entries(s.opCounts).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `quantizable layers: ${Object.entries(s.quantizable).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`,
  ];
  return lines.join('\n');
}
