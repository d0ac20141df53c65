/**
 * Cross-layer equalization (Nagel et al., "Data-Free Quantization", and the white paper §4.1):
 * for Conv₁ → (Relu | MaxPool)* → Conv₂ where Conv₁'s output reaches only Conv₂, output channel i
 * of Conv₁ is divided by s_i and input channel i of Conv₂ multiplied by s_i. ReLU(x/s) = ReLU(x)/s
 * and max-pooling commutes with a positive per-channel scale, so the function is unchanged; with s_i = √(r₁ᵢ / r₂ᵢ) (r: the channel's max |w|) both
 * layers get the same per-channel range, which per-tensor (and helps per-channel) int8 rounding.
 * BatchNormalization must be folded first. Iterated over the chain until ranges settle.
 */
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto } from '../onnx/proto';

export interface ClePair { first: string; second: string; via: string[] }

/** Ops between the pair that commute with a positive per-channel scale. */
const SCALE_EQUIVARIANT = ['Relu', 'MaxPool'];

/** Pairs CLE can equalize: Conv → [Relu] → Conv with single readers, constant float weights, group 1 or depthwise second. */
export function clePairs(g: Graph): Array<{ a: NodeProto; b: NodeProto; via: NodeProto[] }> {
  const pairs: Array<{ a: NodeProto; b: NodeProto; via: NodeProto[] }> = [];
  const constFloat = (t: string | undefined) => !!t && g.isConstant(t) && g.constantValue(t)!.type === DataType.FLOAT && g.consumers(t).length === 1;
  for (const a of g.nodes) {
    if (a.op_type !== 'Conv' || !constFloat(a.input[1]) || (a.input[2] && !constFloat(a.input[2]))) continue;
    if (((attributeValue(a, 'group') as number | undefined) ?? 1) !== 1) continue;
    const via: NodeProto[] = [];
    let tail = a;
    let readers = g.consumers(a.output[0]);
    while (readers.length === 1 && !g.outputNames.includes(tail.output[0]) && SCALE_EQUIVARIANT.includes(readers[0].op_type!) && readers[0].input[0] === tail.output[0]) {
      tail = readers[0];
      via.push(tail);
      readers = g.consumers(tail.output[0]);
    }
    if (readers.length !== 1 || g.outputNames.includes(tail.output[0])) continue;
    const b = readers[0];
    if (b.op_type !== 'Conv' || b.input[0] !== tail.output[0] || !constFloat(b.input[1])) continue;
    const group = (attributeValue(b, 'group') as number | undefined) ?? 1;
    const cout = g.constantValue(a.input[1])!.dims[0];
    const bw = g.constantValue(b.input[1])!.dims;
    if (!(group === 1 || (group === cout && bw[1] === 1 && bw[0] === cout))) continue;
    pairs.push({ a, b, via });
  }
  return pairs;
}

/** Equalizes every pair in place (`iterations` sweeps); returns the pairs touched. */
export function crossLayerEqualize(model: Model, iterations = 5): ClePair[] {
  const g = model.graph;
  const pairs = clePairs(g);
  for (let it = 0; it < iterations; it++) {
    for (const { a, b } of pairs) {
      const wa = g.constantValue(a.input[1])!;
      const wb = g.constantValue(b.input[1])!;
      const A = Float32Array.from(wa.data as Float32Array);
      const B = Float32Array.from(wb.data as Float32Array);
      const channels = wa.dims[0];
      const perA = A.length / channels;
      const depthwise = wb.dims[1] === 1 && ((attributeValue(b, 'group') as number | undefined) ?? 1) === channels;
      const cinB = wb.dims[1];
      const kB = wb.dims.slice(2).reduce((x, y) => x * y, 1);
      const coutB = wb.dims[0];
      // index of every weight of B that reads input channel c
      const forChannelB = (c: number, f: (i: number) => void) => {
        if (depthwise) for (let k = 0; k < kB; k++) f(c * kB + k);
        else for (let o = 0; o < coutB; o++) for (let k = 0; k < kB; k++) f((o * cinB + c) * kB + k);
      };
      const bias = a.input[2] ? Float32Array.from(g.constantValue(a.input[2])!.data as Float32Array) : undefined;
      for (let c = 0; c < channels; c++) {
        let r1 = 0;
        for (let i = 0; i < perA; i++) r1 = Math.max(r1, Math.abs(A[c * perA + i]));
        let r2 = 0;
        forChannelB(c, (i) => { r2 = Math.max(r2, Math.abs(B[i])); });
        if (!(r1 > 0) || !(r2 > 0)) continue;
        const s = Math.sqrt(r1 / r2);
        for (let i = 0; i < perA; i++) A[c * perA + i] /= s;
        if (bias) bias[c] /= s;
        forChannelB(c, (i) => { B[i] *= s; });
      }
      g.replaceInitializer(a.input[1], { type: DataType.FLOAT, dims: wa.dims, data: A });
      g.replaceInitializer(b.input[1], { type: DataType.FLOAT, dims: wb.dims, data: B });
      if (bias) g.replaceInitializer(a.input[2], { type: DataType.FLOAT, dims: [channels], data: bias });
    }
  }
  return pairs.map(({ a, b, via }) => ({ first: a.name || a.output[0], second: b.name || b.output[0], via: via.map((n) => n.name || n.output[0]) }));
}
