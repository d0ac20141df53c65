/**
 * Graph: queries and safe edits over an ONNX GraphProto.
 *
 * Queries: nodes in topological order, producer and consumers of a tensor (a node whose
 * If/Loop/Scan body reads a tensor of the outer graph counts as its consumer), initializers
 * and Constant-node outputs as typed arrays, declared or recorded value types, subgraphs.
 * Edits keep the graph valid: every rename/insert rewires all readers, subgraph bodies
 * included, and refuses names that already exist.
 */
import { QuantbookError, closeNames } from '../errors';
import { DataType } from './dtype';
import {
  AttributeProto, AttributeType, GraphProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
  has, int64ToNumber, newAttribute, newNode, newValueInfo,
} from './proto';
import { TensorData, makeTensor, readTensor, tensorDims } from './tensor';

export type Dim = number | string | null;
export interface ValueType { elemType: DataType; shape?: Dim[] }

export interface SubgraphRef { node: NodeProto; attribute: string; graph: Graph }

export interface NodeSpec {
  opType: string;
  /** inputs after the tensor the node is inserted after */
  extraInputs?: string[];
  /** output name (default: a fresh name derived from the tensor) */
  output?: string;
  name?: string;
  domain?: string;
  attributes?: Record<string, number | number[] | string | string[] | TensorProto>;
}

interface Index {
  /** topological order, computed on first use */
  order?: NodeProto[];
  implicit: Map<NodeProto, string[]>;
  names: Set<string>;
  producers: Map<string, NodeProto>;
  consumers: Map<string, NodeProto[]>;
  initializers: Map<string, TensorProto>;
  valueInfo: Map<string, ValueInfoProto>;
  subgraphs: SubgraphRef[];
}

export class Graph {
  private cache?: Index;

  constructor(
    readonly proto: GraphProto,
    readonly options: { baseDir?: string; parent?: Graph } = {},
  ) {}

  get name(): string { return this.proto.name ?? ''; }
  get parent(): Graph | undefined { return this.options.parent; }

  /** Forget cached indexes; call after editing `proto` directly. The edit methods call it. */
  invalidate(): void {
    this.cache = undefined;
    // Subgraph Graph objects are rebuilt with the index, so they see the change too.
  }

  private get index(): Index {
    return (this.cache ??= this.buildIndex());
  }

  private buildIndex(): Index {
    const g = this.proto;
    const producers = new Map<string, NodeProto>();
    for (const n of g.node) for (const o of n.output) {
      if (!o) continue;
      if (producers.has(o)) throw new QuantbookError('GRAPH_INVALID', `tensor "${o}" is produced by two nodes: "${producers.get(o)!.name}" and "${n.name}"`);
      producers.set(o, n);
    }
    const initializers = new Map(g.initializer.map((t) => [t.name ?? '', t]));
    const subgraphs: SubgraphRef[] = [];
    const implicit = new Map<NodeProto, string[]>();
    for (const n of g.node) {
      const bodies: SubgraphRef[] = [];
      for (const a of n.attribute) {
        if (a.g) bodies.push({ node: n, attribute: a.name ?? '', graph: new Graph(a.g, { baseDir: this.options.baseDir, parent: this }) });
        a.graphs.forEach((sg, i) => bodies.push({ node: n, attribute: `${a.name}[${i}]`, graph: new Graph(sg, { baseDir: this.options.baseDir, parent: this }) }));
      }
      subgraphs.push(...bodies);
      if (bodies.length) implicit.set(n, [...new Set(bodies.flatMap((b) => b.graph.outerScopeReads()))]);
    }
    const consumers = new Map<string, NodeProto[]>();
    const addConsumer = (name: string, n: NodeProto) => {
      const list = consumers.get(name) ?? [];
      if (!list.includes(n)) list.push(n);
      consumers.set(name, list);
    };
    for (const n of g.node) {
      for (const i of n.input) if (i) addConsumer(i, n);
      for (const i of implicit.get(n) ?? []) addConsumer(i, n);
    }
    const valueInfo = new Map<string, ValueInfoProto>();
    for (const v of [...g.value_info, ...g.output, ...g.input]) if (v.name) valueInfo.set(v.name, v);
    const names = new Set<string>([...g.input.map((v) => v.name ?? ''), ...initializers.keys(), ...producers.keys()]);
    names.delete('');
    return { implicit, names, producers, consumers, initializers, valueInfo, subgraphs };
  }

  /** Kahn's algorithm, keeping the file's order among nodes that are ready together. */
  private topologicalOrder(producers: Map<string, NodeProto>, initializers: Map<string, TensorProto>, implicit: Map<NodeProto, string[]>): NodeProto[] {
    const nodes = this.proto.node;
    const position = new Map(nodes.map((n, i) => [n, i]));
    const pending = new Map<NodeProto, number>();
    const dependents = new Map<NodeProto, NodeProto[]>();
    for (const n of nodes) {
      const deps = new Set<NodeProto>();
      for (const i of [...n.input, ...(implicit.get(n) ?? [])]) {
        if (!i) continue;
        const p = producers.get(i);
        if (p) { deps.add(p); continue; }
        if (!this.parent && !initializers.has(i) && !this.proto.input.some((v) => v.name === i)) {
          throw new QuantbookError('GRAPH_INVALID', `node "${n.name}" (${n.op_type}) reads "${i}", which no node, input or initializer of graph "${this.name}" provides`);
        }
      }
      pending.set(n, deps.size);
      for (const d of deps) dependents.set(d, [...(dependents.get(d) ?? []), n]);
    }
    const ready = nodes.filter((n) => pending.get(n) === 0);
    const order: NodeProto[] = [];
    while (ready.length) {
      ready.sort((a, b) => position.get(a)! - position.get(b)!);
      const n = ready.shift()!;
      order.push(n);
      for (const d of dependents.get(n) ?? []) {
        const left = pending.get(d)! - 1;
        pending.set(d, left);
        if (left === 0) ready.push(d);
      }
    }
    if (order.length !== nodes.length) {
      const stuck = nodes.filter((n) => !order.includes(n)).slice(0, 3).map((n) => `"${n.name}"`);
      throw new QuantbookError('GRAPH_INVALID', `graph "${this.name}" has a cycle through nodes ${stuck.join(', ')}`);
    }
    return order;
  }

  /** Names this graph (a subgraph body) reads from enclosing graphs. */
  outerScopeReads(): string[] {
    const defined = new Set<string>([...this.proto.input.map((v) => v.name ?? ''), ...this.proto.initializer.map((t) => t.name ?? '')]);
    for (const n of this.proto.node) for (const o of n.output) defined.add(o);
    const reads = new Set<string>();
    for (const n of this.proto.node) {
      for (const i of n.input) if (i && !defined.has(i)) reads.add(i);
    }
    for (const s of this.subgraphs()) for (const r of s.graph.outerScopeReads()) if (!defined.has(r)) reads.add(r);
    return [...reads];
  }

  // ---- queries -------------------------------------------------------------------------

  /** Nodes in topological order. */
  get nodes(): readonly NodeProto[] {
    const index = this.index;
    return (index.order ??= this.topologicalOrder(index.producers, index.initializers, index.implicit));
  }

  node(name: string): NodeProto | undefined { return this.proto.node.find((n) => n.name === name); }

  /** Graph inputs that are fed at run time (initializers listed as inputs excluded). */
  get inputNames(): string[] {
    return this.proto.input.map((v) => v.name ?? '').filter((n) => !this.index.initializers.has(n));
  }

  get outputNames(): string[] { return this.proto.output.map((v) => v.name ?? ''); }

  producer(tensor: string): NodeProto | undefined { return this.index.producers.get(tensor); }

  /** Nodes that read `tensor`, directly or from inside their subgraph bodies. */
  consumers(tensor: string): NodeProto[] { return [...(this.index.consumers.get(tensor) ?? [])]; }

  /** Every tensor name defined in this graph (inputs, initializers, node outputs). */
  tensorNames(): Set<string> { return new Set(this.index.names); }

  hasTensor(name: string): boolean { return this.index.names.has(name); }

  /** Throws a clear error unless `name` is a tensor of this graph. */
  requireTensor(name: string, what = 'tensor'): void {
    if (this.hasTensor(name)) return;
    const inside = this.findInSubgraphs(name);
    if (inside) {
      throw new QuantbookError('UNKNOWN_TENSOR', `${what} "${name}" exists only inside the ${inside.node.op_type} body "${inside.attribute}" of node "${inside.node.name}", not in graph "${this.name}"`);
    }
    const close = closeNames(name, this.tensorNames());
    throw new QuantbookError('UNKNOWN_TENSOR', `${what} "${name}" is not in graph "${this.name}"${close.length ? `; did you mean ${close.map((c) => `"${c}"`).join(', ')}?` : ''}`);
  }

  private findInSubgraphs(name: string): SubgraphRef | undefined {
    for (const s of this.subgraphs()) {
      if (s.graph.hasTensor(name)) return s;
      const deeper = s.graph.findInSubgraphs(name);
      if (deeper) return deeper;
    }
    return undefined;
  }

  initializer(name: string): TensorProto | undefined { return this.index.initializers.get(name); }
  get initializerNames(): string[] { return [...this.index.initializers.keys()]; }

  /** True when `name` holds a fixed value: an initializer or the output of a Constant node. */
  isConstant(name: string): boolean {
    return this.index.initializers.has(name) || this.producer(name)?.op_type === 'Constant';
  }

  /** The value of an initializer or of a Constant node's output, as typed data. */
  constantValue(name: string): TensorData | undefined {
    const init = this.initializer(name);
    if (init) return readTensor(init, this.options.baseDir);
    const p = this.producer(name);
    if (p?.op_type !== 'Constant') return undefined;
    return { ...constantNodeValue(p), name };
  }

  /** Element type and shape where the model declares them, or where they were recorded. */
  valueType(name: string): ValueType | undefined {
    const vi = this.index.valueInfo.get(name);
    const fromType = vi?.type && typeFromProto(vi.type);
    if (fromType) return fromType;
    const init = this.initializer(name);
    if (init) return { elemType: init.data_type ?? 0, shape: tensorDims(init) };
    const p = this.producer(name);
    if (p?.op_type === 'Constant') {
      const v = constantNodeValue(p);
      return { elemType: v.type, shape: v.dims };
    }
    return undefined;
  }

  /** Records a tensor's type and shape as value_info (e.g. what a run observed). */
  setValueType(name: string, vt: ValueType): void {
    this.requireTensor(name);
    const type = typeToProto(vt);
    const existing = this.proto.value_info.find((v) => v.name === name) ?? [...this.proto.input, ...this.proto.output].find((v) => v.name === name);
    if (existing) existing.type = type;
    else this.proto.value_info.push(newValueInfo({ name, type }));
    this.invalidate();
  }

  subgraphs(): SubgraphRef[] { return this.index.subgraphs; }

  /** Visits every node of this graph and of all nested bodies, depth first. */
  walk(visit: (node: NodeProto, graph: Graph) => void): void {
    for (const n of this.nodes) {
      visit(n, this);
      for (const s of this.subgraphs()) if (s.node === n) s.graph.walk(visit);
    }
  }

  /** A name not used by any tensor or node of this graph or its bodies, built from `base`. */
  uniqueName(base: string): string {
    return this.nameSource().fresh(base);
  }

  /**
   * Snapshot of every name in use (tensors and nodes, across the whole model) that hands out
   * fresh ones: for batches of edits that should not rescan the graph for each new name.
   */
  nameSource(): NameSource {
    const used = new Set<string>();
    const collect = (g: Graph) => {
      for (const t of g.index.names) used.add(t);
      for (const n of g.proto.node) if (n.name) used.add(n.name);
      for (const s of g.subgraphs()) collect(s.graph);
    };
    let root: Graph = this;
    while (root.parent) root = root.parent;
    collect(root);
    return new NameSource(used);
  }

  // ---- edits -----------------------------------------------------------------------------

  addInitializer(data: TensorData | TensorProto): TensorProto {
    const t = 'data' in data ? makeTensor(data.name, data.type, data.dims, data.data) : data;
    const name = t.name ?? '';
    if (!name) throw new QuantbookError('INVALID_ARGUMENT', 'initializer: a name is required');
    if (this.hasTensor(name)) throw new QuantbookError('INVALID_ARGUMENT', `initializer "${name}": a tensor of that name already exists in graph "${this.name}"`);
    this.proto.initializer.push(t);
    this.invalidate();
    return t;
  }

  /**
   * Gives a constant tensor a new value (type and shape may change). Works for
   * initializers and for Constant-node outputs (the node's value is replaced).
   */
  replaceInitializer(name: string, data: Omit<TensorData, 'name'>): void {
    const t = makeTensor(name, data.type, data.dims, data.data);
    const i = this.proto.initializer.findIndex((x) => x.name === name);
    if (i >= 0) {
      this.proto.initializer[i] = t;
    } else {
      const p = this.producer(name);
      if (p?.op_type !== 'Constant') {
        if (this.hasTensor(name)) throw new QuantbookError('INVALID_ARGUMENT', `"${name}" is computed by node "${p?.name ?? '(graph input)'}", not a constant: only initializers and Constant outputs can be replaced`);
        this.requireTensor(name, 'initializer');
      }
      p!.attribute = [newAttribute({ name: 'value', type: AttributeType.TENSOR, t: { ...t, name: '' } as TensorProto })];
    }
    // a declared type for the old value would now be wrong
    this.proto.value_info = this.proto.value_info.filter((v) => v.name !== name);
    this.invalidate();
  }

  /**
   * Inserts a node that reads `tensor` (plus `spec.extraInputs`) and rewires every reader
   * of `tensor` to the node's output. Graph outputs keep reading the original tensor unless
   * `rewireGraphOutputs` is set, in which case the output keeps its name and the inserted node
   * produces it.
   */
  insertNodeAfter(tensor: string, spec: NodeSpec, opts: { rewireGraphOutputs?: boolean } = {}): NodeProto {
    this.requireTensor(tensor);
    if (!spec.opType) throw new QuantbookError('INVALID_ARGUMENT', 'insertNodeAfter: spec.opType is required');
    for (const x of spec.extraInputs ?? []) if (x) this.requireTensor(x, 'extra input');
    const keepOutputName = !!opts.rewireGraphOutputs && this.outputNames.includes(tensor);
    if (keepOutputName && !this.producer(tensor)) {
      throw new QuantbookError('INVALID_ARGUMENT', `insertNodeAfter: "${tensor}" is a graph output that no node produces; it cannot be rewired`);
    }
    const out = keepOutputName ? tensor : spec.output ?? this.uniqueName(`${tensor}_${spec.opType.toLowerCase()}`);
    if (!keepOutputName && this.hasTensor(out)) throw new QuantbookError('INVALID_ARGUMENT', `insertNodeAfter: output name "${out}" already exists`);
    // every name is chosen before the first mutation: the index is stale until invalidate()
    const readers = this.consumers(tensor);
    const producer = this.producer(tensor);
    const nodeName = spec.name ?? this.uniqueName(`${out}_${spec.opType}`);
    const source = keepOutputName ? this.uniqueName(`${tensor}_pre`) : tensor;
    if (keepOutputName) {
      // the public output keeps its name: the old producer writes a new name, the new node the output
      this.renameProducerOutput(tensor, source);
    } else {
      for (const r of readers) renameReads(r, tensor, out);
    }
    const node = newNode({
      op_type: spec.opType,
      name: nodeName,
      domain: spec.domain ?? '',
      input: [source, ...(spec.extraInputs ?? [])],
      output: [out],
      attribute: Object.entries(spec.attributes ?? {}).map(([k, v]) => makeAttribute(k, v)),
    });
    // place the node right after its producer, so the file stays in a readable order
    const at = producer ? this.proto.node.indexOf(producer) + 1 : 0;
    this.proto.node.splice(at, 0, node);
    this.invalidate();
    return node;
  }

  private renameProducerOutput(name: string, to: string): void {
    const p = this.proto.node.find((n) => n.output.includes(name))!;
    p.output = p.output.map((o) => (o === name ? to : o));
    for (const v of this.proto.value_info) if (v.name === name) v.name = to;
    this.invalidate();
  }

  /** Renames a tensor everywhere it appears: producer, readers (bodies included), I/O, value_info. */
  renameTensor(from: string, to: string): void {
    this.requireTensor(from);
    if (!to) throw new QuantbookError('INVALID_ARGUMENT', 'renameTensor: the new name must not be empty');
    if (this.hasTensor(to)) throw new QuantbookError('INVALID_ARGUMENT', `renameTensor: "${to}" already names a tensor in graph "${this.name}"`);
    const readers = this.consumers(from);
    const g = this.proto;
    for (const n of g.node) n.output = n.output.map((o) => (o === from ? to : o));
    for (const t of g.initializer) if (t.name === from) t.name = to;
    for (const v of [...g.input, ...g.output, ...g.value_info]) if (v.name === from) v.name = to;
    for (const a of g.quantization_annotation) if (a.tensor_name === from) a.tensor_name = to;
    for (const r of readers) renameReads(r, from, to);
    this.invalidate();
  }

  /** Removes a node whose outputs nothing reads (graph outputs count as readers). */
  removeNode(node: NodeProto): void {
    const i = this.proto.node.indexOf(node);
    if (i < 0) throw new QuantbookError('INVALID_ARGUMENT', `removeNode: node "${node.name}" is not in graph "${this.name}"`);
    const used = node.output.filter((o) => o && (this.consumers(o).length || this.outputNames.includes(o)));
    if (used.length) throw new QuantbookError('INVALID_ARGUMENT', `removeNode: outputs ${used.map((o) => `"${o}"`).join(', ')} of node "${node.name}" are still read`);
    this.proto.node.splice(i, 1);
    this.invalidate();
  }

  /** Replaces a single-output node by an initializer of the same name holding `data` (readers unchanged). */
  replaceNodeWithConstant(node: NodeProto, data: Omit<TensorData, 'name'>): void {
    const i = this.proto.node.indexOf(node);
    if (i < 0) throw new QuantbookError('INVALID_ARGUMENT', `replaceNodeWithConstant: node "${node.name}" is not in graph "${this.name}"`);
    if (node.output.filter(Boolean).length !== 1) throw new QuantbookError('INVALID_ARGUMENT', `replaceNodeWithConstant: node "${node.name}" has ${node.output.length} outputs; exactly one is needed`);
    const name = node.output[0];
    this.proto.node.splice(i, 1);
    this.proto.initializer.push(makeTensor(name, data.type, data.dims, data.data));
    this.proto.value_info = this.proto.value_info.filter((v) => v.name !== name);
    this.invalidate();
  }

  /** Declares `name` a graph output (type from value_info when known). */
  addOutput(name: string, type?: ValueType): void {
    this.requireTensor(name, 'output');
    if (this.outputNames.includes(name)) return;
    const vt = type ?? this.valueType(name);
    this.proto.output.push(newValueInfo(vt ? { name, type: typeToProto(vt) } : { name }));
    this.invalidate();
  }
}

export class NameSource {
  constructor(private readonly used: Set<string>) {}

  /** `base` if unused, else `base_1`, `base_2`, ...; the name is then taken. */
  fresh(base: string): string {
    let name = base;
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`;
    this.used.add(name);
    return name;
  }
}

/** Replaces reads of `from` by `to` in a node and in its bodies (unless a body redefines the name). */
export function renameReads(node: NodeProto, from: string, to: string): void {
  node.input = node.input.map((i) => (i === from ? to : i));
  for (const a of node.attribute) {
    if (a.g) renameReadsInBody(a.g, from, to);
    for (const sg of a.graphs) renameReadsInBody(sg, from, to);
  }
}

function renameReadsInBody(g: GraphProto, from: string, to: string): void {
  const shadowed = g.input.some((v) => v.name === from) || g.initializer.some((t) => t.name === from) || g.node.some((n) => n.output.includes(from));
  if (shadowed) return;
  for (const n of g.node) renameReads(n, from, to);
  for (const v of g.output) if (v.name === from) {
    // a body output that passes the outer tensor through must keep its name: insert Identity
    const id = newNode({ op_type: 'Identity', name: `${from}_passthrough`, input: [to], output: [from] });
    g.node.push(id);
  }
}

export function typeFromProto(t: TypeProto): ValueType | undefined {
  const tt = t.tensor_type;
  if (!tt || !tt.elem_type) return undefined;
  const shape = tt.shape ? tt.shape.dim.map((d): Dim => (has(d, 'dim_value') ? int64ToNumber(d.dim_value) : d.dim_param ? d.dim_param : null)) : undefined;
  return { elemType: tt.elem_type, shape };
}

export function typeToProto(vt: ValueType): TypeProto {
  return {
    tensor_type: {
      elem_type: vt.elemType,
      shape: vt.shape ? { dim: vt.shape.map((d) => (typeof d === 'number' ? { dim_value: d } : typeof d === 'string' ? { dim_param: d } : {})) } : undefined,
    },
  };
}

/** Reads the value of a Constant node, whichever value_* attribute it uses. */
export function constantNodeValue(node: NodeProto): Omit<TensorData, 'name'> & { name: string } {
  const a = node.attribute[0];
  const name = node.output[0];
  if (!a) throw new QuantbookError('INVALID_MODEL', `Constant node "${node.name}" has no value attribute`);
  switch (a.name) {
    case 'value': return { ...readTensor(a.t!), name };
    case 'value_float': return { name, type: DataType.FLOAT, dims: [], data: Float32Array.of(a.f ?? 0) };
    case 'value_floats': return { name, type: DataType.FLOAT, dims: [a.floats.length], data: Float32Array.from(a.floats) };
    case 'value_int': return { name, type: DataType.INT64, dims: [], data: BigInt64Array.of(BigInt(a.i?.toString() ?? '0')) };
    case 'value_ints': return { name, type: DataType.INT64, dims: [a.ints.length], data: BigInt64Array.from(a.ints, (v) => BigInt(v.toString())) };
    case 'value_string': return { name, type: DataType.STRING, dims: [], data: [new TextDecoder().decode(a.s)] };
    case 'value_strings': return { name, type: DataType.STRING, dims: [a.strings.length], data: a.strings.map((s) => new TextDecoder().decode(s)) };
    default: throw new QuantbookError('UNSUPPORTED', `Constant node "${node.name}": attribute "${a.name}" is not readable as a dense tensor`);
  }
}

export function makeAttribute(name: string, v: number | number[] | string | string[] | TensorProto): AttributeProto {
  if (typeof v === 'number') return Number.isInteger(v) ? newAttribute({ name, type: AttributeType.INT, i: v }) : newAttribute({ name, type: AttributeType.FLOAT, f: v });
  if (typeof v === 'string') return newAttribute({ name, type: AttributeType.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) {
    if ((v as unknown[]).every((x) => typeof x === "string")) return newAttribute({ name, type: AttributeType.STRINGS, strings: (v as string[]).map((s) => new TextEncoder().encode(s)) });
    const nums = v as number[];
    return nums.every(Number.isInteger) ? newAttribute({ name, type: AttributeType.INTS, ints: nums }) : newAttribute({ name, type: AttributeType.FLOATS, floats: nums });
  }
  return newAttribute({ name, type: AttributeType.TENSOR, t: v });
}

/** Reads an attribute value by name: numbers, number arrays, strings, tensors, graphs. */
export function attributeValue(node: NodeProto, name: string): unknown {
  const a = node.attribute.find((x) => x.name === name);
  if (!a) return undefined;
  switch (a.type) {
    case AttributeType.FLOAT: return a.f;
    case AttributeType.INT: return int64ToNumber(a.i);
    case AttributeType.STRING: return new TextDecoder().decode(a.s);
    case AttributeType.FLOATS: return [...a.floats];
    case AttributeType.INTS: return a.ints.map((x) => int64ToNumber(x));
    case AttributeType.STRINGS: return a.strings.map((s) => new TextDecoder().decode(s));
    case AttributeType.TENSOR: return a.t;
    case AttributeType.GRAPH: return a.g;
    default: return undefined;
  }
}
