/**
 * The ONNX protobuf schema (onnx.proto beside this file) loaded with protobufjs, and
 * TypeScript shapes for the decoded messages. Field names keep the spec's snake_case so
 * they read like the ONNX documentation; int64 fields decode as Long (no precision loss).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as protobuf from 'protobufjs';
// `import =`, not a default import: the published .d.ts then compiles without esModuleInterop
import Long = require('long');

protobuf.util.Long = Long;
protobuf.configure();

const root = protobuf.parse(fs.readFileSync(path.join(__dirname, 'onnx.proto'), 'utf8'), { keepCase: true }).root;

export const ModelProtoType = root.lookupType('onnx.ModelProto');
export const GraphProtoType = root.lookupType('onnx.GraphProto');
export const NodeProtoType = root.lookupType('onnx.NodeProto');
export const TensorProtoType = root.lookupType('onnx.TensorProto');
export const AttributeProtoType = root.lookupType('onnx.AttributeProto');
export const ValueInfoProtoType = root.lookupType('onnx.ValueInfoProto');

/** int64 as decoded (Long) or as written by the SDK (number or Long). */
export type Int64 = Long | number;

export interface StringStringEntryProto { key?: string; value?: string }
export interface OperatorSetIdProto { domain?: string; version?: Int64 }

export interface TensorProto {
  dims: Int64[];
  data_type?: number;
  segment?: { begin?: Int64; end?: Int64 };
  float_data: number[];
  int32_data: number[];
  string_data: Uint8Array[];
  int64_data: Int64[];
  name?: string;
  doc_string?: string;
  raw_data?: Uint8Array;
  external_data: StringStringEntryProto[];
  data_location?: number;
  double_data: number[];
  uint64_data: Int64[];
  metadata_props: StringStringEntryProto[];
}

export interface SparseTensorProto { values?: TensorProto; indices?: TensorProto; dims: Int64[] }

export interface DimensionProto { dim_value?: Int64; dim_param?: string; denotation?: string }
export interface TensorShapeProto { dim: DimensionProto[] }

export interface TypeProto {
  tensor_type?: { elem_type?: number; shape?: TensorShapeProto };
  sequence_type?: { elem_type?: TypeProto };
  map_type?: { key_type?: number; value_type?: TypeProto };
  optional_type?: { elem_type?: TypeProto };
  sparse_tensor_type?: { elem_type?: number; shape?: TensorShapeProto };
  denotation?: string;
}

export interface ValueInfoProto { name?: string; type?: TypeProto; doc_string?: string; metadata_props?: StringStringEntryProto[] }

export enum AttributeType {
  UNDEFINED = 0, FLOAT = 1, INT = 2, STRING = 3, TENSOR = 4, GRAPH = 5, FLOATS = 6, INTS = 7,
  STRINGS = 8, TENSORS = 9, GRAPHS = 10, SPARSE_TENSOR = 11, SPARSE_TENSORS = 12, TYPE_PROTO = 13, TYPE_PROTOS = 14,
}

export interface AttributeProto {
  name?: string;
  ref_attr_name?: string;
  doc_string?: string;
  type?: AttributeType;
  f?: number;
  i?: Int64;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparse_tensor?: SparseTensorProto;
  tp?: TypeProto;
  floats: number[];
  ints: Int64[];
  strings: Uint8Array[];
  tensors: TensorProto[];
  graphs: GraphProto[];
  sparse_tensors: SparseTensorProto[];
  type_protos: TypeProto[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  op_type?: string;
  domain?: string;
  overload?: string;
  attribute: AttributeProto[];
  doc_string?: string;
  metadata_props: StringStringEntryProto[];
}

export interface GraphProto {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  sparse_initializer: SparseTensorProto[];
  doc_string?: string;
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  value_info: ValueInfoProto[];
  quantization_annotation: Array<{ tensor_name?: string; quant_parameter_tensor_names: StringStringEntryProto[] }>;
  metadata_props: StringStringEntryProto[];
}

export interface FunctionProto {
  name?: string;
  domain?: string;
  input: string[];
  output: string[];
  node: NodeProto[];
  opset_import: OperatorSetIdProto[];
}

export interface ModelProto {
  ir_version?: Int64;
  opset_import: OperatorSetIdProto[];
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: Int64;
  doc_string?: string;
  graph?: GraphProto;
  metadata_props: StringStringEntryProto[];
  training_info: unknown[];
  functions: FunctionProto[];
}

/** Builds a message of `type` from a partial plain object (repeated fields default to []). */
function make<T>(type: protobuf.Type, fields: object): T {
  return type.create(fields as { [k: string]: unknown }) as unknown as T;
}

export const newNode = (f: Partial<NodeProto>): NodeProto => make(NodeProtoType, f);
export const newTensor = (f: Partial<TensorProto>): TensorProto => make(TensorProtoType, f);
export const newAttribute = (f: Partial<AttributeProto>): AttributeProto => make(AttributeProtoType, f);
export const newValueInfo = (f: Partial<ValueInfoProto>): ValueInfoProto => make(ValueInfoProtoType, f);
export const newGraph = (f: Partial<GraphProto>): GraphProto => make(GraphProtoType, f);
export const newModel = (f: Partial<ModelProto>): ModelProto => make(ModelProtoType, f);

export function encodeModel(model: ModelProto): Uint8Array {
  return ModelProtoType.encode(model as unknown as protobuf.Message).finish();
}

export function decodeModel(bytes: Uint8Array): ModelProto {
  return ModelProtoType.decode(bytes) as unknown as ModelProto;
}

/** A deep copy through the wire format: exact, and independent of the original. */
export function cloneModel(model: ModelProto): ModelProto {
  return decodeModel(encodeModel(model));
}

/** True when an optional proto2 field was present on the wire or set by the SDK. */
export function has(message: object, field: string): boolean {
  return Object.prototype.hasOwnProperty.call(message, field) && (message as Record<string, unknown>)[field] != null;
}

/** int64 → number, refusing values a double cannot hold exactly. */
export function int64ToNumber(v: Int64 | undefined, what = 'int64 value'): number {
  if (v === undefined) return 0;
  if (typeof v === 'number') return v;
  if (v.greaterThan(Number.MAX_SAFE_INTEGER) || v.lessThan(Number.MIN_SAFE_INTEGER)) {
    throw new RangeError(`${what} ${v.toString()} does not fit a JavaScript number; read it as bigint instead`);
  }
  return v.toNumber();
}

export function int64ToBigInt(v: Int64, unsigned = false): bigint {
  if (typeof v === 'number') return BigInt(v);
  const b = BigInt(v.toString());
  return unsigned && b < 0n ? b + (1n << 64n) : b;
}

export function bigIntToInt64(v: bigint, unsigned = false): Long {
  return Long.fromString(v.toString(), unsigned);
}
