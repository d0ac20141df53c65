/**
 * Raises a model's default-domain opset (e.g. 9 → 13 so per-channel QuantizeLinear /
 * DequantizeLinear with `axis` can be used), rewriting the operators whose signature or
 * meaning changed on the way, in subgraph bodies too. What changed when, and each rewrite, is
 * in opset-rules.ts. Every node is judged before anything is edited: a model with a node that
 * cannot be converted (an operator not known to be safe, or a variant with no new form) is
 * refused whole, naming those nodes, and left as it was.
 */
import { QuantbookError } from '../errors';
import { Graph } from './graph';
import { Model } from './model';
import { HISTORY, NEWEST_KNOWN_OPSET, RULES, Site } from './opset-rules';
import { NodeProto } from './proto';

/** The oldest opset ONNX Runtime runs; changes before it (consumed_inputs, broadcast, is_test) are not converted. */
const OLDEST_SOURCE_OPSET = 7;
/** Problem nodes listed in full in a refusal; the rest are counted. */
const LISTED = 6;

/** Returns the model itself (changed in place) with opset `target` for the default domain; never lowers it. */
export function upgradeOpset(model: Model, target: number): Model {
  const declared = model.opsetVersion('');
  const from = declared ?? 1;
  if (from >= target) return model;
  if (!Number.isInteger(target) || target > NEWEST_KNOWN_OPSET) {
    throw new QuantbookError('UNSUPPORTED', `upgradeOpset: target opset ${target}: quantbook converts models up to opset ${NEWEST_KNOWN_OPSET}, whose operator changes it knows`);
  }
  if (model.proto.functions.length) {
    // their nodes answer to the functions' own opset imports, which this does not rewrite
    throw new QuantbookError('UNSUPPORTED', `upgradeOpset: cannot convert from opset ${from} to ${target}: the model defines local functions (${model.proto.functions.map((f) => f.name).join(', ')}), whose bodies are not converted`);
  }
  const sites: Array<Site & { where: string }> = [];
  model.graph.walk((node, graph) => {
    if ((node.domain ?? '') === '' || node.domain === 'ai.onnx') sites.push({ graph, node, from, target, where: location(graph) });
  });
  if (sites.length && from < OLDEST_SOURCE_OPSET) {
    const why = declared === undefined ? 'the model imports no default-domain opset' : `opset ${from} is older than ${OLDEST_SOURCE_OPSET}, the oldest ONNX Runtime runs`;
    throw new QuantbookError('UNSUPPORTED', `upgradeOpset: cannot convert from opset ${from} to ${target}: ${why}`);
  }

  const problems: string[] = [];
  const edits: Array<{ graph: Graph; apply: () => void }> = [];
  for (const s of sites) {
    const refuse = (why: string, detail?: string) => problems.push(`node ${nodeLabel(s.node)} (${s.node.op_type}${detail ? `, ${detail}` : ''})${s.where}: cannot convert from opset ${from} to ${target}: ${why}`);
    const op = s.node.op_type ?? '';
    const history = HISTORY.get(op);
    if (!history) { refuse('not a standard ONNX operator known to keep its meaning (experimental and custom operators are not converted)'); continue; }
    if (history.versions[0] > from) { refuse(`${op} does not exist at opset ${from} (it was added at opset ${history.versions[0]}); the node may be an experimental operator of that name`); continue; }
    const verdict = RULES.get(op)?.(s);
    if (verdict && 'refuse' in verdict) refuse(verdict.refuse, verdict.detail);
    else if (verdict) edits.push({ graph: s.graph, apply: verdict.apply });
  }
  if (problems.length) {
    const more = problems.length > LISTED ? `\n  … and ${problems.length - LISTED} more` : '';
    throw new QuantbookError('UNSUPPORTED', `upgradeOpset: ${problems.length} node${problems.length > 1 ? 's' : ''} cannot be converted; the model is unchanged:\n  ${problems.slice(0, LISTED).join('\n  ')}${more}`);
  }
  for (const e of edits) {
    e.apply();
    e.graph.invalidate();
  }
  model.graph.invalidate();
  model.requireOpset(target); // and the IR version that opset needs
  return model;
}

function nodeLabel(n: NodeProto): string {
  return n.name ? `"${n.name}"` : `(unnamed, output "${n.output[0]}")`;
}

function location(g: Graph): string {
  if (!g.parent) return '';
  const owner = g.parent.subgraphs().find((s) => s.graph === g);
  return owner ? ` in the ${owner.attribute} of ${owner.node.op_type} ${nodeLabel(owner.node)}` : ` in graph "${g.name}"`;
}
