/**
 * Scopes: the main graph and the bodies of If/Loop/Scan nodes, nested to any depth.
 *
 * A tensor inside a body is named by its scope path and its name, `<node>/<attribute>/<tensor>`
 * (nested bodies chain the pairs): sibling branches may reuse a tensor name, so the bare name
 * is not enough to say which tensor a statistic or a quantization parameter belongs to.
 * Main-graph tensors keep their plain names.
 *
 * `hoistTensors` makes body tensors visible in the main graph of a copy (what calibration
 * observes): each is added as an extra output of its body and of the control-flow node, level by
 * level up to the main graph. An `If` branch that does not compute the tensor outputs an empty
 * tensor in its place; a `Loop`/`Scan` stacks the tensor of every iteration (a new scan output).
 */
import { QuantbookError } from '../errors';
import { DataType } from './dtype';
import { Graph, SubgraphRef, makeAttribute } from './graph';
import { Model } from './model';
import { AttributeProto, GraphProto, NodeProto, newNode, newValueInfo } from './proto';
import { makeTensor } from './tensor';

export interface Scope {
  graph: Graph;
  /** '' for the main graph, else `<node>/<attribute>` pairs joined by '/' */
  path: string;
  /** the control-flow nodes and attributes from the main graph down to this body */
  chain: SubgraphRef[];
}

/** The main graph and every body below it, parents before children. */
export function scopes(model: Model): Scope[] {
  const out: Scope[] = [];
  const visit = (graph: Graph, path: string, chain: SubgraphRef[]) => {
    out.push({ graph, path, chain });
    for (const ref of graph.subgraphs()) {
      visit(ref.graph, path ? `${path}/${step(ref)}` : step(ref), [...chain, ref]);
    }
  };
  visit(model.graph, '', []);
  return out;
}

function step(ref: SubgraphRef): string {
  return `${ref.node.name || ref.node.output[0]}/${ref.attribute}`;
}

/**
 * The scoped name of a tensor read in `scope`: named after the scope that defines it (a body
 * may read a tensor of an enclosing graph; it is that graph's tensor).
 */
export function scopedKey(scope: Scope, tensor: string): string {
  for (let level = scope.chain.length; level > 0; level--) {
    if (scope.chain[level - 1].graph.hasTensor(tensor)) return `${scope.chain.slice(0, level).map(step).join('/')}/${tensor}`;
  }
  return tensor;
}

/** Splits a scoped name into its scope and bare tensor name; undefined when no scope matches. */
export function resolveScopedName(all: Scope[], name: string): { scope: Scope; tensor: string } | undefined {
  // the longest scope path that prefixes the name and holds the rest as a tensor
  const candidates = all.filter((s) => s.path && name.startsWith(`${s.path}/`)).sort((a, b) => b.path.length - a.path.length);
  for (const s of candidates) {
    const tensor = name.slice(s.path.length + 1);
    if (s.graph.hasTensor(tensor)) return { scope: s, tensor };
  }
  const main = all.find((s) => !s.path);
  return main && main.graph.hasTensor(name) ? { scope: main, tensor: name } : undefined;
}

/** The graph a body tensor is read from: the nearest scope (itself or an enclosing one) that defines it. */
export function definingGraph(g: Graph, tensor: string): Graph | undefined {
  for (let s: Graph | undefined = g; s; s = s.parent) if (s.hasTensor(tensor)) return s;
  return undefined;
}

function emptyConstant(g: GraphProto, name: string, type: DataType): void {
  g.node.push(newNode({ op_type: 'Constant', name: `${name}_node`, output: [name], attribute: [makeAttribute('value', makeTensor(name, type, [0], []))] }));
}

function bodyOutput(name: string, type: DataType) {
  return newValueInfo({ name, type: { tensor_type: { elem_type: type } } });
}

/** Appends 0 to an int-list attribute when the node has it (Scan's scan_output_axes / _directions). */
function extendListAttribute(node: NodeProto, attr: string): void {
  const a = node.attribute.find((x: AttributeProto) => x.name === attr);
  if (a) a.ints = [...a.ints, 0];
}

/**
 * A copy of `model` in which each scoped body tensor is also a main-graph output. Returns the
 * copy and, for each scoped name, the main-graph output that carries it (If: the tensor, or an
 * empty tensor when the other branch ran; Loop/Scan: the iterations stacked on a new axis 0, or
 * on Scan's axis 0). Main-graph names map to themselves.
 */
export function hoistTensors(model: Model, names: string[]): { model: Model; outputs: Map<string, string> } {
  const copy = model.clone();
  const all = scopes(copy);
  const outputs = new Map<string, string>();
  const fresh = copy.graph.nameSource();
  for (const name of names) {
    const found = resolveScopedName(all, name);
    if (!found) throw new QuantbookError('UNKNOWN_TENSOR', `tensor "${name}" is in no graph of the model (body tensors are named <node>/<attribute>/<tensor>)`);
    let { tensor } = found;
    const { scope } = found;
    const type = scope.graph.valueType(tensor)?.elemType ?? DataType.FLOAT;
    // climb from the body to the main graph, one control-flow node at a time
    for (let level = scope.chain.length - 1; level >= 0; level--) {
      const ref = scope.chain[level];
      const body = ref.graph.proto;
      const node = ref.node;
      if (!ref.graph.hasTensor(tensor)) break; // defined further out: readable there as it is
      if (body.input.some((i) => i.name === tensor)) {
        // a body input returned as a body output is passed through without the per-iteration
        // allocation a Scan output needs (ORT: "is_concrete_shape_ was false"): copy it first
        const copyName = fresh.fresh(`${tensor}_copy`);
        body.node.push(newNode({ op_type: 'Identity', name: copyName, input: [tensor], output: [copyName] }));
        tensor = copyName;
      }
      body.output.push(bodyOutput(tensor, type));
      if (node.op_type === 'If') {
        for (const other of node.attribute) {
          if (other.g && other.g !== body) {
            const placeholder = fresh.fresh(`${tensor}_not_taken`);
            emptyConstant(other.g, placeholder, type);
            other.g.output.push(bodyOutput(placeholder, type));
          }
        }
      } else if (node.op_type === 'Loop' || node.op_type === 'Scan') {
        if (node.op_type === 'Scan') {
          extendListAttribute(node, 'scan_output_axes');
          extendListAttribute(node, 'scan_output_directions');
        }
      } else {
        throw new QuantbookError('UNSUPPORTED', `tensor "${name}" is inside a ${node.op_type} body (node "${node.name}"); only If, Loop and Scan bodies can be observed`);
      }
      const outer = fresh.fresh(`${tensor}_hoisted`);
      node.output.push(outer);
      tensor = outer;
    }
    outputs.set(name, tensor);
  }
  // indexes were built before the edits; the main graph's rebuilds its bodies' too
  copy.graph.invalidate();
  for (const name of new Set(outputs.values())) copy.graph.addOutput(name);
  return { model: copy, outputs };
}
