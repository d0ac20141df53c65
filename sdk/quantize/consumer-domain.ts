/**
 * The range of an activation that its readers can tell apart.
 *
 * A Conv output read only by a saturating function loses nothing when its quantized range is
 * cut to where that function still varies: ReLU maps every negative value to 0, Clip(a, b)
 * every value outside [a, b] to a or b, HardSwish every value below −3 to 0. Calibration
 * measures the whole range (PP-OCRv4 det: a Conv output over [−265, 198] feeding HardSwish),
 * so the uint8 step is set by values the next op discards; cut to [−3, 198] the step is 2.3×
 * finer where HardSwish bends, at no cost anywhere. Only exact cuts are made: one reader that
 * uses the full range (or any op not listed) keeps the whole range.
 */
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { QParams, QuantSpec, qparamsFromRange, representableRange } from '../observers';
import type { NodeProto } from '../onnx/proto';

type Domain = [number, number];
const WHOLE: Domain = [-Infinity, Infinity];

function scalar(g: Graph, t: string | undefined): number | undefined {
  if (!t || !g.isConstant(t)) return undefined;
  const v = g.constantValue(t)!;
  return v.data.length === 1 ? Number(v.data[0]) : undefined;
}

/** Clip's bounds: inputs at opset ≥ 11, attributes before. */
function clipBounds(g: Graph, clip: NodeProto): Domain {
  const lo = clip.input[1] ? scalar(g, clip.input[1]) : (attributeValue(clip, 'min') as number | undefined);
  const hi = clip.input[2] ? scalar(g, clip.input[2]) : (attributeValue(clip, 'max') as number | undefined);
  return [lo ?? -Infinity, hi ?? Infinity];
}

/**
 * HardSwish written out, x · Clip(x + k, lo, hi) / 6 (how paddle2onnx and older exporters
 * write it): constant for x < lo − k, the part `reader` (the Add or the Mul) belongs to.
 */
function decomposedHardSwish(g: Graph, t: string, reader: NodeProto): Domain | undefined {
  const fromAdd = (add: NodeProto): Domain | undefined => {
    const k = scalar(g, add.input[0] === t ? add.input[1] : add.input[0]);
    const clips = g.consumers(add.output[0]);
    if (k === undefined || clips.length !== 1 || clips[0].op_type !== 'Clip') return undefined;
    const [lo] = clipBounds(g, clips[0]);
    // every reader of the clip multiplies it by t itself: below lo − k the product is lo·t… only 0 when lo = 0
    const muls = g.consumers(clips[0].output[0]);
    if (lo !== 0 || !muls.length || !muls.every((m) => m.op_type === 'Mul' && m.input.includes(t))) return undefined;
    return [lo - k, Infinity];
  };
  if (reader.op_type === 'Add') return fromAdd(reader);
  if (reader.op_type === 'Mul') {
    const clip = g.producer(reader.input[0] === t ? reader.input[1] : reader.input[0]);
    const add = clip?.op_type === 'Clip' ? g.producer(clip.input[0]) : undefined;
    return add?.op_type === 'Add' && add.input.includes(t) ? fromAdd(add) : undefined;
  }
  return undefined;
}

function readerDomain(g: Graph, t: string, reader: NodeProto): Domain {
  switch (reader.op_type) {
    case 'Relu': return [0, Infinity];
    case 'Clip': return reader.input[0] === t ? clipBounds(g, reader) : WHOLE;
    case 'HardSwish': return [-3, Infinity];
    case 'HardSigmoid': {
      const alpha = (attributeValue(reader, 'alpha') as number | undefined) ?? 0.2;
      const beta = (attributeValue(reader, 'beta') as number | undefined) ?? 0.5;
      return alpha > 0 ? [-beta / alpha, (1 - beta) / alpha] : WHOLE;
    }
    default: return decomposedHardSwish(g, t, reader) ?? WHOLE;
  }
}

/**
 * The smallest interval outside of which no reader of `tensor` (in `g`) can tell values apart;
 * [−∞, ∞] when some reader needs them all, or the tensor is a graph output.
 */
export function consumerDomain(g: Graph, tensor: string): Domain {
  const readers = g.consumers(tensor);
  if (!readers.length || g.outputNames.includes(tensor)) return WHOLE;
  let lo = Infinity;
  let hi = -Infinity;
  for (const r of readers) {
    const [a, b] = readerDomain(g, tensor, r);
    lo = Math.min(lo, a);
    hi = Math.max(hi, b);
  }
  return [lo, hi];
}

export interface NarrowedRange { tensor: string; from: [number, number]; to: [number, number] }

/**
 * Cuts each main-graph activation's range to its readers' domain (exact: values outside it give
 * the readers the same result), in place; returns what was cut.
 */
export function narrowToReaders(model: Model, activations: Map<string, QParams>, spec: QuantSpec): NarrowedRange[] {
  const g = model.graph;
  const out: NarrowedRange[] = [];
  for (const [t, q] of activations) {
    if (!g.hasTensor(t) || q.scale.length !== 1) continue;
    const [dlo, dhi] = consumerDomain(g, t);
    const [lo, hi] = representableRange(q);
    const to: [number, number] = [Math.max(lo, dlo), Math.min(hi, dhi)];
    // a cut must leave room (a reader domain that misses the observed values entirely keeps the range)
    if (to[0] >= to[1] || (to[0] === lo && to[1] === hi)) continue;
    activations.set(t, qparamsFromRange([to[0]], [to[1]], spec));
    out.push({ tensor: t, from: [lo, hi], to });
  }
  return out;
}
