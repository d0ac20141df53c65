/**
 * Static rank inference: how many dimensions each tensor of a graph has, where the operators'
 * rules decide it from the ranks of their inputs (and from constant shape/axes inputs). A
 * conservative subset of ONNX shape inference: an operator not listed here, or an input whose
 * rank is not known, leaves its outputs unknown rather than guessed.
 *
 * Why ranks only: the calibration summaries choose reduction axes by rank (batch-summary.ts),
 * and ranks survive dynamic dimensions (batch, height, width) that exact shapes do not.
 */
import { attributeValue, Graph } from './graph';
import { NodeProto } from './proto';

/** Operators whose first output has the rank of their first input. */
const SAME_AS_FIRST = new Set([
  'Abs', 'Acos', 'Acosh', 'Asin', 'Asinh', 'Atan', 'Atanh', 'AveragePool', 'BatchNormalization', 'Cast', 'CastLike', 'Ceil', 'Celu',
  'Clip', 'Concat', 'Conv', 'ConvInteger', 'ConvTranspose', 'Cos', 'Cosh', 'CumSum', 'DepthToSpace', 'DequantizeLinear', 'Dropout', 'Elu', 'Erf',
  'Exp', 'Floor', 'Gelu', 'GlobalAveragePool', 'GlobalLpPool', 'GlobalMaxPool', 'GroupNormalization', 'HardSigmoid', 'HardSwish', 'Hardmax',
  'Identity', 'InstanceNormalization', 'IsInf', 'IsNaN', 'LayerNormalization', 'LeakyRelu', 'Log', 'LogSoftmax', 'LpNormalization', 'LpPool', 'LRN',
  'MaxPool', 'MeanVarianceNormalization', 'Mish', 'Neg', 'Not', 'Pad', 'QLinearConv', 'QuantizeLinear', 'Reciprocal', 'Relu', 'Resize', 'Round',
  'Selu', 'Shrink', 'Sigmoid', 'Sign', 'Sin', 'Sinh', 'Slice', 'Softmax', 'Softplus', 'Softsign', 'SpaceToDepth', 'Sqrt', 'Tan', 'Tanh',
  'ThresholdedRelu', 'Tile', 'Transpose', 'Trilu', 'Upsample',
]);

/** Operators that broadcast their inputs (numpy rules): the output has the largest input rank. */
const BROADCASTING = new Set([
  'Add', 'And', 'BitShift', 'Div', 'Equal', 'Greater', 'GreaterOrEqual', 'Less', 'LessOrEqual', 'Max', 'Mean', 'Min', 'Mod', 'Mul', 'Or',
  'Pow', 'PRelu', 'Sub', 'Sum', 'Where', 'Xor',
]);

const REDUCTIONS = new Set([
  'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceMax', 'ReduceMean', 'ReduceMin', 'ReduceProd', 'ReduceSum', 'ReduceSumSquare',
]);

/** The rank of every tensor of `graph` (not of its subgraphs) that the rules decide. */
export function inferRanks(graph: Graph): Map<string, number> {
  const ranks = new Map<string, number>();
  for (const v of graph.proto.input) {
    const shape = v.name ? graph.valueType(v.name)?.shape : undefined;
    if (shape) ranks.set(v.name!, shape.length);
  }
  const rankOf = (name: string | undefined) => {
    if (!name) return undefined;
    if (ranks.has(name)) return ranks.get(name);
    const shape = graph.valueType(name)?.shape;
    return shape ? shape.length : undefined;
  };
  // a constant 1-D input's values (axes, shapes), where the graph holds them
  const intsOf = (name: string | undefined): number[] | undefined => {
    if (!name || !graph.isConstant(name)) return undefined;
    const v = graph.constantValue(name);
    return v && typeof v.data !== 'string' && !Array.isArray(v.data) ? Array.from(v.data as ArrayLike<number | bigint>, Number) : undefined;
  };
  // the length of a 1-D tensor computed from shapes (Shape -> Slice -> Concat -> Reshape), which is
  // the rank of what it reshapes to
  const lengths = new Map<string, number>();
  const lengthOf = (name: string | undefined) => (name && lengths.has(name) ? lengths.get(name) : intsOf(name)?.length);
  for (const node of graph.nodes) {
    const len = shapeLength(node, rankOf, intsOf, lengthOf);
    if (len !== undefined && node.output[0]) lengths.set(node.output[0], len);
    const r = outputRank(node, rankOf, intsOf, lengthOf);
    if (r === undefined) continue;
    const outputs = node.op_type === 'Split' ? node.output : node.output.slice(0, 1);
    for (const o of outputs) if (o) ranks.set(o, r);
  }
  return ranks;
}

type RankOf = (name: string | undefined) => number | undefined;
type IntsOf = (name: string | undefined) => number[] | undefined;

/** The length of a 1-D integer tensor made by shape arithmetic, where it is decided statically. */
function shapeLength(node: NodeProto, rankOf: RankOf, intsOf: IntsOf, lengthOf: RankOf): number | undefined {
  const attr = (name: string) => attributeValue(node, name) as number | number[] | undefined;
  switch (node.op_type) {
    case 'Shape': {
      const r = rankOf(node.input[0]);
      if (r === undefined) return undefined;
      const clamp = (v: number) => Math.min(r, Math.max(0, v < 0 ? v + r : v));
      return Math.max(0, clamp((attr('end') as number | undefined) ?? r) - clamp((attr('start') as number | undefined) ?? 0));
    }
    case 'Cast': case 'Identity': return lengthOf(node.input[0]);
    case 'Concat': {
      if (rankOf(node.input[0]) !== 1) return undefined;
      const ls = node.input.map(lengthOf);
      return ls.every((l) => l !== undefined) ? (ls as number[]).reduce((a, b) => a + b, 0) : undefined;
    }
    case 'Slice': {
      const len = lengthOf(node.input[0]);
      if (len === undefined || rankOf(node.input[0]) !== 1) return undefined;
      // opset < 10: attributes; later: inputs (starts, ends, axes, steps)
      const [starts, ends, axes, steps] = node.input.length > 1
        ? [intsOf(node.input[1]), intsOf(node.input[2]), node.input[3] ? intsOf(node.input[3]) : [0], node.input[4] ? intsOf(node.input[4]) : [1]]
        : [attr('starts') as number[] | undefined, attr('ends') as number[] | undefined, (attr('axes') as number[] | undefined) ?? [0], [1]];
      if (!starts || !ends || !axes || !steps || starts.length !== 1 || ![0, -1].includes(axes[0])) return undefined;
      const step = steps[0];
      const at = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v < 0 ? v + len : v));
      return step > 0
        ? Math.max(0, Math.ceil((at(ends[0], 0, len) - at(starts[0], 0, len)) / step))
        : Math.max(0, Math.ceil((at(starts[0], 0, len - 1) - at(ends[0], -1, len - 1)) / -step));
    }
    case 'Unsqueeze': return rankOf(node.input[0]) === 0 ? 1 : undefined;
    default: return undefined;
  }
}

function outputRank(node: NodeProto, rankOf: RankOf, intsOf: IntsOf, lengthOf: RankOf): number | undefined {
  const op = node.op_type ?? '';
  if (node.domain && node.domain !== 'ai.onnx') return undefined;
  const r0 = rankOf(node.input[0]);
  const attr = (name: string) => attributeValue(node, name) as number | number[] | undefined;
  // axes from the attribute (older opsets) or the second input (newer)
  const axes = () => (attr('axes') as number[] | undefined) ?? intsOf(node.input[1]);
  if (SAME_AS_FIRST.has(op) || op === 'Split') return r0;
  if (BROADCASTING.has(op)) {
    const rs = node.input.filter((i) => i).map(rankOf);
    return rs.every((r) => r !== undefined) ? Math.max(...(rs as number[])) : undefined;
  }
  switch (op) {
    case 'Shape': return 1;
    case 'Size': return 0;
    case 'Flatten': return 2;
    case 'Gemm': return 2;
    case 'MatMul': case 'MatMulInteger': case 'QLinearMatMul': {
      const [a, b] = op === 'QLinearMatMul' ? [r0, rankOf(node.input[3])] : [r0, rankOf(node.input[1])];
      if (a === undefined || b === undefined) return undefined;
      if (a === 1 && b === 1) return 0;
      if (a === 1) return b - 1;
      if (b === 1) return a - 1;
      return Math.max(a, b);
    }
    case 'Reshape': return lengthOf(node.input[1]);
    case 'Expand': {
      const len = lengthOf(node.input[1]);
      return len !== undefined && r0 !== undefined ? Math.max(r0, len) : undefined;
    }
    case 'Squeeze': {
      const a = axes();
      return a && r0 !== undefined ? r0 - a.length : undefined; // without axes it depends on the dims
    }
    case 'Unsqueeze': {
      const a = axes();
      return a && r0 !== undefined ? r0 + a.length : undefined;
    }
    case 'Gather': {
      const ri = rankOf(node.input[1]);
      return r0 !== undefined && ri !== undefined ? r0 + ri - 1 : undefined;
    }
    case 'ArgMax': case 'ArgMin':
      return r0 === undefined ? undefined : (attr('keepdims') ?? 1) ? r0 : r0 - 1;
    default:
      if (REDUCTIONS.has(op)) {
        if (r0 === undefined) return undefined;
        if (attr('keepdims') ?? 1) return r0;
        const a = axes();
        if (a) return a.length ? r0 - new Set(a.map((x) => (x < 0 ? x + r0 : x))).size : (attr('noop_with_empty_axes') ? r0 : 0);
        // no axes: all of them (or none, with noop_with_empty_axes), unless the axes input is computed
        return node.input[1] ? undefined : attr('noop_with_empty_axes') ? r0 : 0;
      }
      return undefined;
  }
}
