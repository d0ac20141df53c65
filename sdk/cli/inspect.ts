/**
 * `quantbook inspect`: what a model holds — IR/opset, inputs and outputs, operators — and what
 * quantization will do with it: the opset conversion it needs, each layer that will be quantized
 * (bodies of If/Loop/Scan included), and each that stays float with the reason.
 */
import { Model } from '../onnx/model';
import { typeName } from '../onnx/dtype';
import { QUANTIZABLE_OP_TYPES, selectLayers } from '../quantize/layers';
import { prepareFloat } from '../quantize/w8a8';
import { quantizeLstms, settleRecurrentSkips } from '../quantize/lstm';

export interface LayerPlanEntry { name: string; opType: string; scope: string; reason?: string }

export interface ModelSummary {
  irVersion: number;
  opsets: Record<string, number>;
  inputs: Array<{ name: string; type: string; shape: string }>;
  outputs: Array<{ name: string; type: string; shape: string }>;
  nodeCount: number;
  subgraphNodeCount: number;
  opCounts: Record<string, number>;
  quantizable: Record<string, number>;
  /** what W8A8 (static or dynamic) will do: the opset it converts to, the layers it quantizes and those it keeps float */
  plan: {
    convertsOpset?: { from: number; to: number };
    quantized: LayerPlanEntry[];
    float: LayerPlanEntry[];
    /** why the model cannot be quantized at all (conversion refused, nothing quantizable) */
    error?: string;
  };
}

function planFor(model: Model): ModelSummary['plan'] {
  const from = model.opsetVersion('') ?? 1;
  const plan: ModelSummary['plan'] = { quantized: [], float: [], ...(from < 13 ? { convertsOpset: { from, to: 13 } } : {}) };
  let prepared: Model;
  try {
    prepared = prepareFloat(model);
  } catch (e) {
    plan.error = (e as Error).message;
    return plan;
  }
  const selection = selectLayers(prepared, [], { subgraphs: true });
  // LSTMs take their own int8 route (com.microsoft.DynamicQuantizeLSTM): what it would do, on a copy
  const lstm = quantizeLstms(prepared.clone());
  for (const l of selection.layers) plan.quantized.push({ name: l.name, opType: l.opType, scope: l.scope?.path ?? '' });
  for (const l of lstm.quantized) plan.quantized.push({ name: l.name, opType: 'LSTM', scope: l.scope ?? '', reason: 'as com.microsoft.DynamicQuantizeLSTM (int8 weights, activations quantized at run time)' });
  for (const s of settleRecurrentSkips(selection.skipped, lstm)) plan.float.push({ name: s.name, opType: s.opType, scope: s.scope ?? '', reason: s.reason });
  if (!plan.quantized.length) plan.error = `no layer can be quantized${plan.float.length ? '' : `: the model has none of ${QUANTIZABLE_OP_TYPES.join(', ')}`}`;
  return plan;
}

export function summarize(model: Model): ModelSummary {
  const g = model.graph;
  const describe = (name: string) => {
    const vt = g.valueType(name);
    return { name, type: vt ? typeName(vt.elemType).toLowerCase() : '?', shape: vt?.shape ? `[${vt.shape.map((d) => (d === null ? '?' : d)).join(', ')}]` : '?' };
  };
  const opCounts: Record<string, number> = {};
  let all = 0;
  let main = 0;
  g.walk((n, owner) => {
    all++;
    if (owner === g) main++;
    opCounts[n.op_type!] = (opCounts[n.op_type!] ?? 0) + 1;
  });
  const quantizable: Record<string, number> = {};
  for (const op of QUANTIZABLE_OP_TYPES) if (opCounts[op]) quantizable[op] = opCounts[op];
  return {
    irVersion: model.irVersion,
    opsets: Object.fromEntries(model.proto.opset_import.map((o) => [o.domain || 'ai.onnx', Number(o.version?.toString())])),
    inputs: g.inputNames.map(describe),
    outputs: g.outputNames.map(describe),
    nodeCount: main,
    subgraphNodeCount: all - main,
    opCounts,
    quantizable,
    plan: planFor(model),
  };
}

export function formatSummary(s: ModelSummary): string {
  const where = (e: LayerPlanEntry) => (e.scope ? ` (in ${e.scope})` : '');
  const byReason = new Map<string, LayerPlanEntry[]>();
  for (const f of s.plan.float) byReason.set(f.reason ?? '', [...(byReason.get(f.reason ?? '') ?? []), f]);
  const lines = [
    `IR ${s.irVersion}, opsets ${Object.entries(s.opsets).map(([d, v]) => `${d} ${v}`).join(', ')}`,
    ...s.inputs.map((i) => `input  ${i.name}: ${i.type} ${i.shape}`),
    ...s.outputs.map((o) => `output ${o.name}: ${o.type} ${o.shape}`),
    `${s.nodeCount} nodes${s.subgraphNodeCount ? ` (+${s.subgraphNodeCount} in subgraphs)` : ''}: ${Object.entries(s.opCounts).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `quantizable layers: ${Object.entries(s.quantizable).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`,
    ...(s.plan.convertsOpset ? [`opset conversion: ${s.plan.convertsOpset.from} → ${s.plan.convertsOpset.to} (per-channel QDQ needs 13)`] : []),
    `will quantize ${s.plan.quantized.length} layers${s.plan.quantized.some((q) => q.scope) ? ` (${s.plan.quantized.filter((q) => q.scope).length} inside If/Loop/Scan bodies)` : ''}: ${s.plan.quantized.slice(0, 8).map((q) => `${q.name} ${q.opType}${where(q)}`).join(', ')}${s.plan.quantized.length > 8 ? ', …' : ''}`,
    ...[...byReason].map(([reason, list]) => `stays float (${list.length}): ${list.slice(0, 5).map((f) => `${f.name} ${f.opType}${where(f)}`).join(', ')}${list.length > 5 ? ', …' : ''} — ${reason}`),
    ...(s.plan.error ? [`cannot quantize: ${s.plan.error}`] : []),
  ];
  return lines.join('\n');
}
