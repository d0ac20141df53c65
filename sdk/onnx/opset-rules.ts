/**
 * What upgradeOpset knows about each standard ONNX operator: the opset versions at which its
 * schema changed (ONNX Changelog.md / onnx.defs, up to opset 17), and a rule for each change
 * that alters a node's form or meaning (marked * in HISTORY). Every unmarked change was checked
 * against the changelog and keeps the meaning of a node written for the older version: types
 * added; attributes or optional inputs added whose default is the old behaviour (ArgMax
 * select_last_index, MaxPool/AveragePool ceil_mode and dilations, MaxPool Indices, DepthToSpace
 * mode, GatherND batch_dims, Reshape allowzero, RNN/GRU/LSTM layout, TopK largest/sorted,
 * Shape start/end, Scatter* reduction, QuantizeLinear axis, Gemm optional C); negative axes or
 * indices allowed; Max/Min/Mean/Sum broadcasting where shapes had to match; If branches of
 * different shapes; doc fixes. ConvTranspose-11 rewrote the auto_pad/output_shape padding split,
 * but only to agree with the attribute's own description: ONNX Runtime pads the same way at
 * every opset (extra padding at the end for SAME_UPPER), so nodes keep their results.
 */
import { DataType, numberToFloat16Bits } from './dtype';
import { Graph, attributeValue, makeAttribute } from './graph';
import { AttributeType, NodeProto, TensorProto, int64ToBigInt, newAttribute, newGraph, newNode, newValueInfo } from './proto';
import { makeTensor } from './tensor';
import { definingGraph } from './scopes';

const HISTORY_TEXT = `
Abs 1 6 13; Acos 7; Acosh 9; Add 1 6 7 13 14; And 1 7; ArgMax 1 11 12 13; ArgMin 1 11 12 13; Asin 7; Asinh 9; Atan 7
Atanh 9; AveragePool 1 7 10 11; BatchNormalization 1 6 7 9* 14* 15; Bernoulli 15; BitShift 11; BlackmanWindow 17
Cast 1 6 9 13; CastLike 15; Ceil 1 6 13; Celu 12; Clip 1 6 11* 12 13; Compress 9 11; Concat 1 4 11 13
ConcatFromSequence 11; Constant 1 9 11 12 13; ConstantOfShape 9; Conv 1 11; ConvInteger 10; ConvTranspose 1 11; Cos 7
Cosh 9; CumSum 11 14; DepthToSpace 1 11 13; DequantizeLinear 10 13; Det 11; DFT 17; Div 1 6 7 13 14
Dropout 1 6 7 10* 12* 13; DynamicQuantizeLinear 11; Einsum 12; Elu 1 6; Equal 1 7 11 13; Erf 9 13; Exp 1 6 13
Expand 8 13; EyeLike 9; Flatten 1 9 11 13; Floor 1 6 13; Gather 1 11 13; GatherElements 11 13; GatherND 11 12 13
Gemm 1 6 7 9 11 13; GlobalAveragePool 1; GlobalLpPool 1 2; GlobalMaxPool 1; Greater 1 7 9 13; GreaterOrEqual 12 16
GridSample 16; GRU 1 3 7 14; HammingWindow 17; HannWindow 17; Hardmax 1 11 13*; HardSigmoid 1 6; HardSwish 14
Identity 1 13 14 16; If 1 11 13 16; InstanceNormalization 1 6; IsInf 10; IsNaN 9 13; LayerNormalization 17
LeakyRelu 1 6 16; Less 1 7 9 13; LessOrEqual 12 16; Log 1 6 13; LogSoftmax 1 11 13*; Loop 1 11 13 16
LpNormalization 1; LpPool 1 2 11; LRN 1 13; LSTM 1 7 14; MatMul 1 9 13; MatMulInteger 10; Max 1 6 8 12 13
MaxPool 1 8 10 11 12; MaxRoiPool 1; MaxUnpool 9 11; Mean 1 6 8 13; MeanVarianceNormalization 9 13; MelWeightMatrix 17
Min 1 6 8 12 13; Mod 10 13; Mul 1 6 7 13 14; Multinomial 7; Neg 1 6 13; NegativeLogLikelihoodLoss 12 13
NonMaxSuppression 10 11; NonZero 9 13; Not 1; OneHot 9 11; Optional 15; OptionalGetElement 15; OptionalHasElement 15
Or 1 7; Pad 1 2 11* 13; Pow 1 7 12 13 15; PRelu 1 6 7 9 16; QLinearConv 10; QLinearMatMul 10; QuantizeLinear 10 13
RandomNormal 1; RandomNormalLike 1; RandomUniform 1; RandomUniformLike 1; Range 11; Reciprocal 1 6 13
ReduceL1 1 11 13; ReduceL2 1 11 13; ReduceLogSum 1 11 13; ReduceLogSumExp 1 11 13; ReduceMax 1 11 12 13
ReduceMean 1 11 13; ReduceMin 1 11 12 13; ReduceProd 1 11 13; ReduceSum 1 11 13*; ReduceSumSquare 1 11 13
Relu 1 6 13 14; Reshape 1 5 13 14; Resize 10 11* 13; ReverseSequence 10; RNN 1 7 14; RoiAlign 10 16*; Round 11
Scan 8 9* 11 16; Scatter 9 11*; ScatterElements 11 13 16; ScatterND 11 13 16; Selu 1 6; SequenceAt 11
SequenceConstruct 11; SequenceEmpty 11; SequenceErase 11; SequenceInsert 11; SequenceLength 11; SequenceMap 17
Shape 1 13 15; Shrink 9; Sigmoid 1 6 13; Sign 9 13; Sin 7; Sinh 9; Size 1 13; Slice 1 10* 11 13; Softmax 1 11 13*
SoftmaxCrossEntropyLoss 12 13; Softplus 1; Softsign 1; SpaceToDepth 1 13; Split 1 2 11 13*; SplitToSequence 11
Sqrt 1 6 13; Squeeze 1 11 13*; STFT 17; StringNormalizer 10; Sub 1 6 7 13 14; Sum 1 6 8 13; Tan 7; Tanh 1 6 13
TfIdfVectorizer 9; ThresholdedRelu 10; Tile 1 6 13; TopK 1 10* 11; Transpose 1 13; Trilu 14; Unique 11
Unsqueeze 1 11 13*; Upsample 1 7 9* 10*; Where 9 16; Xor 1 7`;

/** Whether a Reduce* node takes its axes as an input (ReduceSum from opset 13, the others from 18) rather than an attribute. */
export function reduceAxesAreInput(opType: string, opset: number): boolean {
  return opset >= (opType === 'ReduceSum' ? 13 : 18);
}

/** The newest opset HISTORY covers: upgrades go no further. */
export const NEWEST_KNOWN_OPSET = 17;

export interface OpHistory { versions: number[]; rewritten: number[] }

/** op_type → the opsets at which its schema changed, and those of them a rule handles. */
export const HISTORY: ReadonlyMap<string, OpHistory> = new Map(HISTORY_TEXT.trim().split(/;|\n/).map((entry) => {
  const [op, ...vs] = entry.trim().split(/\s+/);
  return [op, { versions: vs.map((v) => parseInt(v, 10)), rewritten: vs.filter((v) => v.endsWith('*')).map((v) => parseInt(v, 10)) }];
}));

/** A node to convert from opset `from` to `target`, in the graph (or body) that holds it. */
export interface Site { graph: Graph; node: NodeProto; from: number; target: number }

/**
 * A rule's verdict, decided before anything changes: why the node cannot be converted
 * (`detail` names the variant, e.g. `mode "cubic"`), or the edit that converts it.
 */
export type Verdict = { refuse: string; detail?: string } | { apply: () => void } | undefined;

const crosses = (s: Site, v: number) => s.from < v && v <= s.target;

// ---- helpers ---------------------------------------------------------------------------

/** INTS attribute as bigints: Slice ends are often INT64_MAX, past a double's exact range. */
function intsAttr(n: NodeProto, name: string): bigint[] | undefined {
  const a = n.attribute.find((x) => x.name === name);
  return a ? a.ints.map((v) => int64ToBigInt(v)) : undefined;
}

function dropAttributes(n: NodeProto, names: string[]): void {
  n.attribute = n.attribute.filter((a) => !names.includes(a.name ?? ''));
}

function setAttribute(n: NodeProto, name: string, value: number | string): void {
  dropAttributes(n, [name]);
  n.attribute.push(makeAttribute(name, value));
}

function baseName(n: NodeProto): string {
  return n.name || n.output[0];
}

function int64Init(g: Graph, base: string, values: bigint[], dims: number[] = [values.length]): string {
  const name = g.uniqueName(base);
  g.addInitializer({ name, type: DataType.INT64, dims, data: BigInt64Array.from(values) });
  return name;
}

/** A tensor of `type` holding `values` (float16 as its bits). */
function typedTensor(name: string, type: DataType, dims: number[], values: number[]): TensorProto {
  return makeTensor(name, type, dims, type === DataType.FLOAT16 ? values.map(numberToFloat16Bits) : type === DataType.INT64 ? BigInt64Array.from(values.map(BigInt)) : values);
}

function scalarInit(g: Graph, base: string, type: DataType, value: number): string {
  const name = g.uniqueName(base);
  g.addInitializer(typedTensor(name, type, [], [value]));
  return name;
}

function isUsed(g: Graph, tensor: string): boolean {
  return !!tensor && (g.consumers(tensor).length > 0 || g.outputNames.includes(tensor));
}

/** Float values of a constant tensor visible from `g` (its own or an enclosing graph's). */
function constantFloats(g: Graph, name: string): number[] | undefined {
  const v = definingGraph(g, name)?.constantValue(name);
  return v && !Array.isArray(v.data) ? Array.from(v.data as ArrayLike<number>, Number) : undefined;
}

const FLOAT_TYPES = new Set([DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE]);

/** Ops whose every output has the element type of their first input (at opsets 7–17). */
const SAME_AS_INPUT = new Set(('Abs Acos Acosh Add Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Compress Concat Conv ' +
  'ConvTranspose Cos Cosh CumSum DepthToSpace Div Elu Erf Exp Expand Flatten Floor GRU Gather GatherElements GatherND Gemm ' +
  'GlobalAveragePool GlobalLpPool GlobalMaxPool HardSigmoid HardSwish Hardmax Identity InstanceNormalization LRN LSTM LeakyRelu Log ' +
  'LogSoftmax LpNormalization LpPool MatMul Max MaxRoiPool Mean MeanVarianceNormalization Min Mod Mul Neg PRelu Pad Pow Reciprocal ' +
  'ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape ' +
  'Resize ReverseSequence RNN RoiAlign Round Scatter ScatterElements ScatterND Selu Shrink Sigmoid Sign Sin Sinh Slice Softmax Softplus ' +
  'Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile Transpose Trilu Unsqueeze Upsample').split(' '));
const BOOL_OUT = new Set('Equal Less Greater LessOrEqual GreaterOrEqual Not And Or Xor IsNaN IsInf'.split(' '));
const INT64_OUT = new Set('Shape Size NonZero ArgMax ArgMin NonMaxSuppression'.split(' '));

/**
 * Element type of a tensor: declared (value_info, inputs, initializers, Constant), or followed
 * back through the ops that pass their input's type on. New min/max/pad-value inputs must have
 * it, and old models often declare no intermediate types.
 */
export function elemType(g: Graph, name: string, depth = 0): DataType | undefined {
  const at = definingGraph(g, name); // a body may read its parents' tensors
  if (!at) return undefined;
  const declared = at.valueType(name)?.elemType;
  if (declared) return declared;
  const p = at.producer(name);
  if (!p || depth > 500 || (p.domain ?? '') !== '') return undefined;
  const index = p.output.indexOf(name);
  const op = p.op_type ?? '';
  if (op === 'Cast') return attributeValue(p, 'to') as DataType;
  if (INT64_OUT.has(op) || (index > 0 && (op === 'TopK' || op === 'MaxPool' || op === 'Unique'))) return DataType.INT64;
  if (BOOL_OUT.has(op)) return DataType.BOOL;
  if (op === 'DequantizeLinear') return DataType.FLOAT;
  if (op === 'QuantizeLinear') return p.input[2] ? elemType(at, p.input[2], depth + 1) : DataType.UINT8;
  if (op === 'ConstantOfShape') return (attributeValue(p, 'value') as TensorProto | undefined)?.data_type ?? DataType.FLOAT;
  if (op === 'Where') return elemType(at, p.input[1], depth + 1);
  if (SAME_AS_INPUT.has(op) || ((op === 'TopK' || op === 'MaxPool' || op === 'Dropout') && index === 0)) return elemType(at, p.input[0], depth + 1);
  return undefined;
}

function floatTypeOf(s: Site, tensor: string, purpose: string): DataType | { refuse: string } {
  const t = elemType(s.graph, tensor);
  if (t !== undefined && FLOAT_TYPES.has(t)) return t;
  return { refuse: `the element type of "${tensor}" is ${t === undefined ? 'not declared (no value_info) and could not be followed back' : `${t}, not a float type`}; ${purpose} must have it` };
}

// ---- rules -----------------------------------------------------------------------------

/** Clip-11: the min/max attributes (float) became optional inputs of the input's type. */
function clip(s: Site): Verdict {
  if (!crosses(s, 11)) return undefined;
  const n = s.node;
  const min = attributeValue(n, 'min') as number | undefined;
  const max = attributeValue(n, 'max') as number | undefined;
  if (min === undefined && max === undefined) return { apply: () => dropAttributes(n, ['min', 'max']) };
  const type = floatTypeOf(s, n.input[0], 'the new min/max inputs');
  if (typeof type !== 'number') return type;
  return {
    apply: () => {
      dropAttributes(n, ['min', 'max']);
      const b = baseName(n);
      n.input = [n.input[0], min === undefined ? '' : scalarInit(s.graph, `${b}_min`, type, min), max === undefined ? '' : scalarInit(s.graph, `${b}_max`, type, max)];
      while (n.input[n.input.length - 1] === '') n.input.pop();
    },
  };
}

/** Slice-10: starts/ends/axes attributes became int64 inputs (steps, new, defaults to 1). */
function slice(s: Site): Verdict {
  if (!crosses(s, 10)) return undefined;
  const n = s.node;
  return {
    apply: () => {
      const [starts, ends, axes] = ['starts', 'ends', 'axes'].map((a) => intsAttr(n, a));
      dropAttributes(n, ['starts', 'ends', 'axes']);
      const b = baseName(n);
      n.input = [n.input[0], int64Init(s.graph, `${b}_starts`, starts ?? []), int64Init(s.graph, `${b}_ends`, ends ?? []), ...(axes ? [int64Init(s.graph, `${b}_axes`, axes)] : [])];
    },
  };
}

/** Squeeze/Unsqueeze/ReduceSum/Split-13: an int64 list attribute became the second input. */
function listToInput(attr: string): (s: Site) => Verdict {
  return (s) => {
    if (!crosses(s, 13)) return undefined;
    const n = s.node;
    const values = intsAttr(n, attr);
    if (values === undefined) return undefined;
    return {
      apply: () => {
        dropAttributes(n, [attr]);
        // ReduceSum axes=[] meant "all axes", as does no axes input at 13 (noop_with_empty_axes=0)
        if (values.length || n.op_type !== 'ReduceSum') n.input = [n.input[0], int64Init(s.graph, `${baseName(n)}_${attr}`, values)];
      },
    };
  };
}

/** Pad-11: pads became an int64 input, value an optional input of the data's type; mode stays. */
function pad(s: Site): Verdict {
  if (!crosses(s, 11)) return undefined;
  const n = s.node;
  const value = (attributeValue(n, 'value') as number | undefined) ?? 0;
  const type = value === 0 ? DataType.FLOAT : floatTypeOf(s, n.input[0], 'the new constant_value input');
  if (typeof type !== 'number') return type;
  return {
    apply: () => {
      const pads = intsAttr(n, 'pads') ?? [];
      dropAttributes(n, ['pads', 'value']);
      const b = baseName(n);
      // a missing constant_value is 0, so 0 needs no input (and no type)
      n.input = [n.input[0], int64Init(s.graph, `${b}_pads`, pads), ...(value === 0 ? [] : [scalarInit(s.graph, `${b}_value`, type, value)])];
    },
  };
}

/** TopK-10: k became an int64 input of shape [1]. */
function topK(s: Site): Verdict {
  if (!crosses(s, 10)) return undefined;
  const n = s.node;
  return {
    apply: () => {
      const k = BigInt(attributeValue(n, 'k') as number);
      dropAttributes(n, ['k']);
      n.input = [n.input[0], int64Init(s.graph, `${baseName(n)}_k`, [k])];
    },
  };
}

/**
 * Dropout-10 made the mask bool (it had the input's type), Dropout-12 made ratio an input.
 * In inference Dropout passes its input through; ONNX Runtime's kernels for 7–11 write an
 * all-zero mask and those for 12+ an all-true one, so a mask that is read is replaced by the
 * zeros the old node gave: ConstantOfShape(Shape(input)) of the old mask type.
 */
function dropout(s: Site): Verdict {
  const n = s.node;
  const ratio = crosses(s, 12) ? (attributeValue(n, 'ratio') as number | undefined) : undefined;
  const mask = n.output[1] ?? '';
  const maskChanges = crosses(s, 10) || crosses(s, 12);
  if (!maskChanges) return undefined;
  const maskRead = isUsed(s.graph, mask);
  let maskType: DataType = DataType.BOOL;
  if (maskRead && s.from < 10) {
    const t = elemType(s.graph, n.input[0]);
    if (t === undefined) return { refuse: `its mask output "${mask}" is read and had the input's type, which is not declared`, detail: 'mask output' };
    maskType = t;
  }
  return {
    apply: () => {
      const g = s.graph;
      if (crosses(s, 12)) {
        dropAttributes(n, ['ratio']);
        // the ratio does nothing in inference; kept as the input so training sees the same rate
        if (ratio !== undefined) n.input = [n.input[0], scalarInit(g, `${baseName(n)}_ratio`, DataType.FLOAT, ratio)];
      }
      if (n.output.length > 1) {
        n.output = [n.output[0]];
        g.proto.value_info = g.proto.value_info.filter((v) => v.name !== mask || maskRead);
      }
      if (!maskRead) return;
      const names = g.nameSource();
      const shape = names.fresh(`${mask}_shape`);
      const at = g.proto.node.indexOf(n) + 1;
      g.proto.node.splice(at, 0,
        newNode({ op_type: 'Shape', name: names.fresh(`${baseName(n)}_mask_shape`), input: [n.input[0]], output: [shape] }),
        newNode({ op_type: 'ConstantOfShape', name: names.fresh(`${baseName(n)}_mask`), input: [shape], output: [mask], attribute: [makeAttribute('value', typedTensor('', maskType, [1], [0]))] }),
      );
    },
  };
}

/**
 * BatchNormalization-9 dropped `spatial` (1, the default, is what remains). spatial=0 (one
 * mean/var/scale/bias per activation, shaped like an input sample) becomes the arithmetic ONNX
 * Runtime does for it: a = scale / sqrt(var + eps), Y = X·a + (B − mean·a). BatchNormalization-14
 * changed the outputs a node in training mode has; at 7–13 declaring them is what selects that mode.
 */
function batchNormalization(s: Site): Verdict {
  const n = s.node;
  const training = n.output.slice(1).some(Boolean);
  if (crosses(s, 14) && training) {
    return { refuse: 'its running-mean/variance outputs are declared, so it runs in training mode, whose outputs opset 14 changed', detail: 'training outputs' };
  }
  const spatial = crosses(s, 9) ? ((attributeValue(n, 'spatial') as number | undefined) ?? 1) : 1;
  if (spatial !== 0) {
    return {
      apply: () => {
        if (crosses(s, 9)) dropAttributes(n, ['spatial']);
        // at 14+ at most 3 outputs may be listed: drop trailing empty ones
        while (n.output.length > 1 && n.output[n.output.length - 1] === '') n.output.pop();
      },
    };
  }
  if (training) return { refuse: 'spatial=0 in training mode (batch-statistics outputs declared) has no opset-9 form', detail: 'spatial=0' };
  const type = floatTypeOf(s, n.input[0], 'the epsilon constant');
  if (typeof type !== 'number') return { ...type, detail: 'spatial=0' };
  return {
    apply: () => {
      const g = s.graph;
      const [x, scale, bias, mean, variance] = n.input;
      const b = baseName(n);
      const eps = scalarInit(g, `${b}_epsilon`, type, (attributeValue(n, 'epsilon') as number | undefined) ?? 1e-5);
      const names = g.nameSource(); // one snapshot: the new nodes are not in the graph while named
      const [varEps, std, invStd, a, meanA, shift, xa] = ['var_eps', 'std', 'inv_std', 'scale', 'mean_scale', 'shift', 'x_scale'].map((t) => names.fresh(`${b}_${t}`));
      const node = (op: string, inputs: string[], output: string) => newNode({ op_type: op, name: names.fresh(`${b}_${op}`), input: inputs, output: [output] });
      g.proto.node.splice(g.proto.node.indexOf(n), 1,
        node('Add', [variance, eps], varEps), node('Sqrt', [varEps], std), node('Reciprocal', [std], invStd), node('Mul', [scale, invStd], a),
        node('Mul', [mean, a], meanA), node('Sub', [bias, meanA], shift), node('Mul', [x, a], xa), node('Add', [xa, shift], n.output[0]));
    },
  };
}

/**
 * Upsample (scales an attribute at 7, an input at 9, deprecated at 10) and Resize-10 compute
 * x_in = x_out / scale ("asymmetric"); ONNX Runtime then takes the nearest pixel as
 * floor(x_in) on up-sampled axes and ceil(x_in) on down-sampled ones (Upsample only up-samples).
 * Resize-11+ says so with coordinate_transformation_mode and nearest_mode. Only nearest and
 * linear exist before opset 11.
 */
function resizeLike(s: Site): Verdict {
  const n = s.node;
  const isUpsample = n.op_type === 'Upsample';
  const mode = (attributeValue(n, 'mode') as string | undefined) ?? 'nearest';
  const converts = isUpsample ? s.target >= 9 : crosses(s, 11);
  if (!converts) return undefined;
  if (mode !== 'nearest' && mode !== 'linear') {
    return { refuse: `mode "${mode}" is not defined for ${n.op_type} before opset 11 (nearest and linear are), so its results have no specified meaning to keep`, detail: `mode "${mode}"` };
  }
  const scalesAttr = attributeValue(n, 'scales') as number[] | undefined;
  let nearestMode = 'floor';
  if (!isUpsample && mode === 'nearest') {
    const scales = constantFloats(s.graph, n.input[1]);
    if (!scales) return { refuse: 'its scales are computed at run time, and opset 10 rounds the nearest pixel down on up-sampled axes but up on down-sampled ones, which Resize-11 can state only for known scales', detail: 'mode "nearest"' };
    if (scales.some((v) => v < 1) && scales.some((v) => v > 1)) return { refuse: `its scales [${scales.map((v) => Number(v.toPrecision(7))).join(', ')}] up-sample some axes and down-sample others, which round the nearest pixel differently (down and up): no single nearest_mode does both`, detail: 'mode "nearest"' };
    if (scales.some((v) => v < 1)) nearestMode = 'ceil';
  }
  return {
    apply: () => {
      const g = s.graph;
      dropAttributes(n, ['scales']);
      const scales = scalesAttr ? (() => {
        const name = g.uniqueName(`${baseName(n)}_scales`);
        g.addInitializer({ name, type: DataType.FLOAT, dims: [scalesAttr.length], data: Float32Array.from(scalesAttr) });
        return name;
      })() : n.input[1];
      if (s.target < 10) { n.input = [n.input[0], scales]; return; } // Upsample-9
      n.op_type = 'Resize';
      if (s.target < 11) { n.input = [n.input[0], scales]; return; } // Resize-10 is Upsample-9 renamed
      // roi is read only by tf_crop_and_resize; before 13 it must still be given
      const roi = s.target >= 13 ? '' : (() => {
        const name = g.uniqueName(`${baseName(n)}_roi`);
        g.addInitializer({ name, type: DataType.FLOAT, dims: [0], data: new Float32Array(0) });
        return name;
      })();
      n.input = [n.input[0], roi, scales];
      setAttribute(n, 'coordinate_transformation_mode', 'asymmetric');
      if (mode === 'nearest') setAttribute(n, 'nearest_mode', nearestMode);
    },
  };
}

/** Scatter was deprecated at 11 for ScatterElements, the same operation under a new name. */
function scatter(s: Site): Verdict {
  return s.target >= 11 ? { apply: () => { s.node.op_type = 'ScatterElements'; } } : undefined;
}

/** RoiAlign-16 added coordinate_transformation_mode, defaulting to half_pixel; before, it was output_half_pixel. */
function roiAlign(s: Site): Verdict {
  return crosses(s, 16) ? { apply: () => setAttribute(s.node, 'coordinate_transformation_mode', 'output_half_pixel') } : undefined;
}

/**
 * Scan-8 runs its body once per batch entry: inputs [sequence_lens?, states…, scan inputs…],
 * each with a leading batch axis (scan inputs [batch, sequence, …]); Scan-9 has no batch.
 * Without sequence_lens (every sequence full length) that is a Loop over the batch whose body
 * takes entry i of each input (Gather) and runs the Scan-9 form on it; Loop stacks the results
 * along a new axis 0, where Scan-8 put the batch.
 */
function scan(s: Site): Verdict {
  if (!crosses(s, 9)) return undefined;
  const n = s.node;
  if (n.input[0]) return { refuse: `its sequence_lens input "${n.input[0]}" gives each batch entry its own length, which Scan-9 has no form for`, detail: 'sequence_lens' };
  return {
    apply: () => {
      const g = s.graph;
      const b = baseName(n);
      const inputs = n.input.slice(1);
      const directions = attributeValue(n, 'directions') as number[] | undefined;
      const zero = int64Init(g, `${b}_batch_axis`, [0n], []);
      const names = g.nameSource();
      const [shape, batch, iter, condIn, condOut] = ['shape', 'batch', 'entry', 'cond_in', 'cond_out'].map((t) => names.fresh(`${b}_${t}`));
      const picked = inputs.map((t) => names.fresh(`${t}_entry`));
      const results = n.output.map((o) => names.fresh(`${o}_entry`));
      const scalar = (name: string, elem_type: DataType) => newValueInfo({ name, type: { tensor_type: { elem_type, shape: { dim: [] } } } });
      const perEntry = newGraph({
        name: `${b}_per_entry`,
        input: [scalar(iter, DataType.INT64), scalar(condIn, DataType.BOOL)],
        output: [condOut, ...results].map((name) => newValueInfo({ name })),
        node: [
          ...inputs.map((t, i) => newNode({ op_type: 'Gather', name: names.fresh(`${b}_take_${i}`), input: [t, iter], output: [picked[i]] })),
          newNode({
            op_type: 'Scan', name: names.fresh(`${b}_scan9`), input: picked, output: results,
            attribute: [...n.attribute.filter((a) => a.name === 'body' || a.name === 'num_scan_inputs'), ...(directions ? [makeAttribute('scan_input_directions', directions)] : [])],
          }),
          newNode({ op_type: 'Identity', name: names.fresh(`${b}_keep_going`), input: [condIn], output: [condOut] }),
        ],
      });
      g.proto.node.splice(g.proto.node.indexOf(n), 1,
        newNode({ op_type: 'Shape', name: names.fresh(`${b}_shape`), input: [inputs[0]], output: [shape] }),
        newNode({ op_type: 'Gather', name: names.fresh(`${b}_batch`), input: [shape, zero], output: [batch] }),
        newNode({ op_type: 'Loop', name: n.name, input: [batch, ''], output: n.output, attribute: [newAttribute({ name: 'body', type: AttributeType.GRAPH, g: perEntry })] }));
    },
  };
}

/**
 * Before opset 13 these ops flatten the input to 2-D at `axis` (default 1) and normalise over
 * the second dimension; from 13 they work along `axis` alone. Where the axis is the last one
 * the two agree; otherwise the old meaning is kept explicitly: Flatten → op(axis 1) → Reshape.
 */
function softmaxFamily(s: Site): Verdict {
  if (!crosses(s, 13)) return undefined;
  const { graph: g, node: n } = s;
  const axis = (attributeValue(n, 'axis') as number | undefined) ?? 1;
  const rank = g.valueType(n.input[0])?.shape?.length;
  if (axis === -1 || (rank !== undefined && axis === rank - 1)) return { apply: () => setAttribute(n, 'axis', -1) };
  return {
    apply: () => {
      const [input, output, b] = [n.input[0], n.output[0], baseName(n)];
      const names = g.nameSource();
      const [flat, shape, inner] = [`${input}_flat2d`, `${input}_shape`, `${output}_2d`].map((t) => names.fresh(t));
      g.proto.node.splice(g.proto.node.indexOf(n), 0,
        newNode({ op_type: 'Shape', name: names.fresh(`${b}_shape`), input: [input], output: [shape] }),
        newNode({ op_type: 'Flatten', name: names.fresh(`${b}_flatten`), input: [input], output: [flat], attribute: [makeAttribute('axis', axis)] }),
      );
      n.input = [flat];
      n.output = [inner];
      setAttribute(n, 'axis', 1);
      g.proto.node.splice(g.proto.node.indexOf(n) + 1, 0, newNode({ op_type: 'Reshape', name: names.fresh(`${b}_reshape`), input: [inner, shape], output: [output] }));
    },
  };
}

/** The rule for each operator with a starred change in HISTORY. */
export const RULES: ReadonlyMap<string, (s: Site) => Verdict> = new Map([
  ['BatchNormalization', batchNormalization], ['Clip', clip], ['Dropout', dropout], ['Pad', pad], ['Slice', slice], ['TopK', topK],
  ['Squeeze', listToInput('axes')], ['Unsqueeze', listToInput('axes')], ['ReduceSum', listToInput('axes')], ['Split', listToInput('split')],
  ['Softmax', softmaxFamily], ['LogSoftmax', softmaxFamily], ['Hardmax', softmaxFamily],
  ['Upsample', resizeLike], ['Resize', resizeLike], ['Scatter', scatter], ['Scan', scan], ['RoiAlign', roiAlign],
]);

for (const [op, h] of HISTORY) {
  if (h.rewritten.length && !RULES.has(op)) throw new Error(`opset-rules: ${op} changes at ${h.rewritten.join(', ')} but has no rule`);
}
for (const op of RULES.keys()) if (!HISTORY.get(op)?.rewritten.length) throw new Error(`opset-rules: rule for ${op}, which HISTORY marks unchanged`);
