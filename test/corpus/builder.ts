/**
 * A small builder for corpus models: inputs, seeded weights, nodes and outputs in the order
 * they are written, then a ModelProto at a chosen opset and IR version (IR 3 lists every
 * initializer as a graph input, as old model zoos do). Subgraphs (If/Loop/Scan bodies) are
 * built with a child GraphBuilder and passed as a graph attribute.
 */
import { DataType } from '../../sdk/onnx/dtype';
import { makeAttribute } from '../../sdk/onnx/graph';
import { AttributeProto, AttributeType, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto, newAttribute, newGraph, newModel, newNode, newValueInfo } from '../../sdk/onnx/proto';
import { makeTensor } from '../../sdk/onnx/tensor';
import { seededNormal, seededRandom } from '../../sdk/util/seeded-random';

export type Shape = Array<number | string>;
export type AttrValue = number | number[] | string | string[] | TensorProto | GraphProto;

export function valueInfo(name: string, type: DataType, shape?: Shape): ValueInfoProto {
  return newValueInfo({
    name,
    type: { tensor_type: { elem_type: type, ...(shape ? { shape: { dim: shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } : {}) } },
  });
}

function attribute(name: string, v: AttrValue): AttributeProto {
  if (v && typeof v === 'object' && !Array.isArray(v) && 'node' in v) return newAttribute({ name, type: AttributeType.GRAPH, g: v as GraphProto });
  return makeAttribute(name, v as Exclude<AttrValue, GraphProto>);
}

export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly inputs: ValueInfoProto[] = [];
  readonly outputs: ValueInfoProto[] = [];
  private count = 0;
  private readonly normal: () => number;
  readonly random: () => number;

  constructor(readonly name: string, seed = 1) {
    this.random = seededRandom(seed);
    this.normal = seededNormal(this.random);
  }

  input(name: string, type: DataType, shape?: Shape): string {
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  output(name: string, type: DataType, shape?: Shape): string {
    this.outputs.push(valueInfo(name, type, shape));
    return name;
  }

  /** An initializer with the given values. */
  constant(name: string, type: DataType, dims: number[], data: ArrayLike<number> | BigInt64Array): string {
    this.initializers.push(makeTensor(name, type, dims, data as ArrayLike<number>));
    return name;
  }

  /** A float32 initializer drawn from N(mean, std²). */
  gaussian(name: string, dims: number[], std: number, mean = 0): string {
    const n = dims.reduce((a, b) => a * b, 1);
    return this.constant(name, DataType.FLOAT, dims, Float32Array.from({ length: n }, () => mean + std * this.normal()));
  }

  /** A fresh tensor name with the builder's counter (`<base>_<k>`). */
  fresh(base: string): string {
    return `${base}_${this.count++}`;
  }

  /** Appends a node; returns its outputs (fresh names unless given). */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { outputs?: number | string[]; name?: string; domain?: string } = {}): string[] {
    const name = opts.name ?? this.fresh(op);
    const outputs = Array.isArray(opts.outputs) ? opts.outputs : Array.from({ length: opts.outputs ?? 1 }, (_, i) => (i === 0 ? name : `${name}_out${i}`));
    this.nodes.push(newNode({ op_type: op, name, domain: opts.domain ?? '', input: inputs, output: outputs, attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)) }));
    return outputs;
  }

  /** Shorthand for a single-output node. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, name?: string): string {
    return this.node(op, inputs, attrs, { name })[0];
  }

  /** The graph (for a model, or as an If/Loop/Scan body). */
  graph(opts: { initializersAsInputs?: boolean } = {}): GraphProto {
    const listed = opts.initializersAsInputs
      ? this.initializers.filter((t) => !this.inputs.some((v) => v.name === t.name)).map((t) => valueInfo(t.name!, t.data_type as DataType, t.dims.map(Number)))
      : [];
    return newGraph({ name: this.name, node: this.nodes, initializer: this.initializers, input: [...this.inputs, ...listed], output: this.outputs });
  }

  /** The model; IR 3 implies initializers listed as inputs. */
  model(opts: { opset: number; irVersion: number; extraOpsets?: Record<string, number>; initializersAsInputs?: boolean }): ModelProto {
    const graph = this.graph({ initializersAsInputs: opts.initializersAsInputs ?? opts.irVersion < 4 });
    return newModel({
      ir_version: opts.irVersion,
      producer_name: 'quantbook-corpus',
      opset_import: [{ domain: '', version: opts.opset }, ...Object.entries(opts.extraOpsets ?? {}).map(([domain, version]) => ({ domain, version }))],
      graph,
    });
  }
}
