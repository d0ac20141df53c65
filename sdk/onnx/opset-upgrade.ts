/**
 * Raises a model's default-domain opset (e.g. 9 → 13 so per-channel QuantizeLinear /
 * DequantizeLinear with `axis` can be used), rewriting the operators whose signature or
 * meaning changed on the way. Operators not known to be safe are refused by name rather
 * than silently carried into a version whose semantics may differ.
 */
import { QuantbookError } from '../errors';
import { DataType } from './dtype';
import { Graph, attributeValue, makeAttribute } from './graph';
import { Model } from './model';
import { NodeProto, newNode } from './proto';

/** Operators whose form and meaning are the same from opset 7 up to 13 for what models use. */
const UNCHANGED = new Set([
  'Abs', 'Add', 'And', 'ArgMax', 'ArgMin', 'AveragePool', 'BatchNormalization', 'Cast', 'Ceil', 'Concat', 'Constant',
  'ConstantOfShape', 'Conv', 'ConvTranspose', 'Cos', 'DepthToSpace', 'Div', 'Dropout', 'Einsum', 'Elu', 'Equal', 'Erf', 'Exp', 'Expand',
  'Flatten', 'Floor', 'Gather', 'GatherElements', 'Gemm', 'GlobalAveragePool', 'GlobalMaxPool', 'Greater', 'GRU', 'HardSigmoid', 'Identity',
  'If', 'InstanceNormalization', 'LeakyRelu', 'Less', 'Log', 'Loop', 'LRN', 'LSTM', 'MatMul', 'Max', 'MaxPool', 'Mean', 'Min', 'Mod',
  'Mul', 'Neg', 'Not', 'Or', 'Pow', 'PRelu', 'QuantizeLinear', 'DequantizeLinear', 'Range', 'Reciprocal', 'ReduceL2', 'ReduceMax',
  'ReduceMean', 'ReduceMin', 'ReduceProd', 'ReduceSumSquare', 'Relu', 'Reshape', 'Resize', 'RNN', 'Round', 'Scan', 'ScatterND', 'Selu',
  'Shape', 'Sigmoid', 'Sign', 'Sin', 'Size', 'Softplus', 'Softsign', 'SpaceToDepth', 'Sqrt', 'Sub', 'Sum', 'Tanh', 'ThresholdedRelu',
  'Tile', 'TopK', 'Transpose', 'Where', 'Xor', 'Clip', 'Slice', 'Squeeze', 'Unsqueeze', 'Softmax', 'LogSoftmax', 'Hardmax', 'ReduceSum', 'Split', 'Pad',
]);

/** Returns the model itself (changed in place) with opset `target` for the default domain. */
export function upgradeOpset(model: Model, target: number): Model {
  const from = model.opsetVersion('') ?? 1;
  if (from >= target) return model;
  if (target > 13) throw new QuantbookError('UNSUPPORTED', `upgradeOpset: target ${target}: quantbook upgrades models up to opset 13`);
  const problems: string[] = [];
  model.graph.walk((n) => {
    if ((n.domain ?? '') !== '' && n.domain !== 'ai.onnx') return;
    if (!UNCHANGED.has(n.op_type!)) problems.push(n.op_type!);
  });
  if (problems.length) {
    throw new QuantbookError('UNSUPPORTED', `cannot upgrade opset ${from} → ${target}: operators ${[...new Set(problems)].join(', ')} are not known to keep their meaning; supported: ${[...UNCHANGED].sort().join(', ')}`);
  }
  const graphs: Graph[] = [];
  const collect = (g: Graph) => {
    graphs.push(g);
    for (const s of g.subgraphs()) collect(s.graph);
  };
  collect(model.graph);
  for (const g of graphs) {
    for (const n of [...g.proto.node]) rewrite(g, n, from);
    g.invalidate();
  }
  model.requireOpset(target);
  return model;
}

function int64Constant(g: Graph, base: string, values: number[], scalar = false): string {
  const name = g.uniqueName(base);
  g.addInitializer({ name, type: DataType.INT64, dims: scalar ? [] : [values.length], data: BigInt64Array.from(values.map(BigInt)) });
  return name;
}

function floatConstant(g: Graph, base: string, value: number): string {
  const name = g.uniqueName(base);
  g.addInitializer({ name, type: DataType.FLOAT, dims: [], data: Float32Array.of(value) });
  return name;
}

function dropAttributes(n: NodeProto, names: string[]): void {
  n.attribute = n.attribute.filter((a) => !names.includes(a.name ?? ''));
}

function rewrite(g: Graph, n: NodeProto, from: number): void {
  const base = n.name || n.output[0];
  switch (n.op_type) {
    case 'Clip':
      if (from < 11) {
        // attributes min/max (defaults: the float range) became optional inputs
        const min = attributeValue(n, 'min') as number | undefined;
        const max = attributeValue(n, 'max') as number | undefined;
        dropAttributes(n, ['min', 'max']);
        n.input = [n.input[0], min === undefined ? '' : floatConstant(g, `${base}_min`, min), max === undefined ? '' : floatConstant(g, `${base}_max`, max)];
        while (n.input[n.input.length - 1] === '') n.input.pop();
      }
      break;
    case 'Slice':
      if (from < 10) {
        const starts = attributeValue(n, 'starts') as number[];
        const ends = attributeValue(n, 'ends') as number[];
        const axes = attributeValue(n, 'axes') as number[] | undefined;
        dropAttributes(n, ['starts', 'ends', 'axes']);
        n.input = [n.input[0], int64Constant(g, `${base}_starts`, starts), int64Constant(g, `${base}_ends`, ends), ...(axes ? [int64Constant(g, `${base}_axes`, axes)] : [])];
      }
      break;
    case 'Squeeze': case 'Unsqueeze': case 'ReduceSum': case 'Split': {
      // an int64 list attribute became the node's second input (opset 13)
      const attr = n.op_type === 'Split' ? 'split' : 'axes';
      const values = attributeValue(n, attr) as number[] | undefined;
      if (values) {
        dropAttributes(n, [attr]);
        n.input = [n.input[0], int64Constant(g, `${base}_${attr}`, values)];
      }
      break;
    }
    case 'Pad':
      if (from < 11) {
        const pads = attributeValue(n, 'pads') as number[];
        const value = (attributeValue(n, 'value') as number | undefined) ?? 0;
        dropAttributes(n, ['pads', 'value']);
        n.input = [n.input[0], int64Constant(g, `${base}_pads`, pads), floatConstant(g, `${base}_value`, value)];
      }
      break;
    case 'Softmax': case 'LogSoftmax': case 'Hardmax':
      rewriteSoftmax(g, n);
      break;
    default:
      break;
  }
}

/**
 * Before opset 13 these ops flatten the input to 2-D at `axis` (default 1) and normalise over
 * the second dimension; from 13 they work along `axis` alone. Where the axis is the last one
 * the two agree; otherwise the old meaning is kept explicitly: Flatten → op(axis 1) → Reshape.
 */
function rewriteSoftmax(g: Graph, n: NodeProto): void {
  const axis = (attributeValue(n, 'axis') as number | undefined) ?? 1;
  const rank = g.valueType(n.input[0])?.shape?.length;
  if (axis === -1 || (rank !== undefined && axis === rank - 1)) {
    dropAttributes(n, ['axis']);
    n.attribute.push(makeAttribute('axis', -1));
    return;
  }
  const input = n.input[0];
  const output = n.output[0];
  const flat = g.uniqueName(`${input}_flat2d`);
  const shape = g.uniqueName(`${input}_shape`);
  const inner = g.uniqueName(`${output}_2d`);
  const at = g.proto.node.indexOf(n);
  g.proto.node.splice(at, 0,
    newNode({ op_type: 'Shape', name: g.uniqueName(`${base(n)}_shape`), input: [input], output: [shape] }),
    newNode({ op_type: 'Flatten', name: g.uniqueName(`${base(n)}_flatten`), input: [input], output: [flat], attribute: [makeAttribute('axis', axis)] }),
  );
  n.input = [flat];
  n.output = [inner];
  dropAttributes(n, ['axis']);
  n.attribute.push(makeAttribute('axis', 1));
  g.proto.node.splice(g.proto.node.indexOf(n) + 1, 0, newNode({ op_type: 'Reshape', name: g.uniqueName(`${base(n)}_reshape`), input: [inner, shape], output: [output] }));
}

function base(n: NodeProto): string {
  return n.name || n.output[0];
}
