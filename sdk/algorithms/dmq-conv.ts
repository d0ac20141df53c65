/**
 * AMCT's DMQ balancer on convolutions (Conv2d, Conv3d, ConvTranspose2d): SmoothQuant migration
 * per INPUT channel j of the layer, s_j = max|X_j|^m / max|W_j|^(1−m), m = dmq_balancer_param.
 * X_j is divided by s_j (a Mul inserted in front of this layer only) and the weights that read
 * channel j are multiplied by s_j, so the float function is unchanged (zero padding stays zero).
 *
 * Which weights read input channel j:
 *  - Conv, weight [Cout, Cin/g, k…]: column j mod (Cin/g) (axis 1) of the Cout/g output channels
 *    of j's group ⌊j / (Cin/g)⌋ — grouped and depthwise convs are exact per group;
 *  - ConvTranspose, weight [Cin, Cout/g, k…]: row j (axis 0), whatever the group.
 */
import { QuantbookError } from '../errors';
import { attributeValue } from '../onnx/graph';
import { DataType } from '../onnx/dtype';
import { Model } from '../onnx/model';
import { newNode } from '../onnx/proto';
import { Feeds, Runner } from '../runtime/runner';
import { QuantLayer } from '../quantize/layers';

export interface DmqConvGroup {
  input: string;
  layers: string[];
  absorbedBy: { kind: 'Mul'; node: string };
  /** m and 1 − m */
  alpha: number;
  beta: number;
  /** per input channel: max|X_j| before and after, max|W_j| before, and s_j */
  channelMaxBefore: Float32Array;
  channelMaxAfter: Float32Array;
  weightMaxBefore: Float32Array;
  scales: Float32Array;
}

/** Per input channel j, the flat indices of the weight elements that multiply X_j. */
export function inputChannelIndices(opType: string, dims: number[], group: number): (j: number) => number[] {
  const inner = dims.slice(2).reduce((a, b) => a * b, 1);
  if (opType === 'ConvTranspose') {
    const row = dims[1] * inner;
    return (j) => Array.from({ length: row }, (_, i) => j * row + i);
  }
  if (opType !== 'Conv') throw new QuantbookError('UNSUPPORTED', `dmq_balancer: ${opType} is not a convolution`);
  const [cout, cinPerGroup] = dims;
  const coutPerGroup = cout / group;
  return (j) => {
    const g = Math.floor(j / cinPerGroup);
    const jj = j % cinPerGroup;
    const out: number[] = [];
    for (let o = g * coutPerGroup; o < (g + 1) * coutPerGroup; o++) for (let i = 0; i < inner; i++) out.push((o * cinPerGroup + jj) * inner + i);
    return out;
  };
}

/**
 * Balances each conv `layer` with strength `m` on `batches`, in place on `model`; returns one
 * group per layer. The layer's activation input becomes the inserted Mul's output.
 */
export async function dmqBalanceConvs(model: Model, layers: QuantLayer[], m: number, batches: Feeds[]): Promise<DmqConvGroup[]> {
  if (!layers.length) return [];
  const g = model.graph;
  const inputs = [...new Set(layers.map((l) => l.node.input[0]))];
  const xMax = new Map<string, Float64Array>();
  const rank = new Map<string, number>();
  const runner = await Runner.create(model, { expose: inputs });
  try {
    for (const feeds of batches) {
      const { exposed } = await runner.run(feeds);
      for (const t of inputs) {
        const v = exposed[t];
        if (v.type !== 'float32') throw new QuantbookError('INVALID_ARGUMENT', `dmq_balancer: activation "${t}" holds ${v.type}; only float32 can be balanced`);
        const dims = v.dims.map(Number);
        const c = dims[1];
        const inner = dims.slice(2).reduce((a, b) => a * b, 1);
        const x = v.data as Float32Array;
        const acc = xMax.get(t) ?? new Float64Array(c);
        for (let n = 0; n < dims[0]; n++) for (let j = 0; j < c; j++) {
          const base = (n * c + j) * inner;
          let mx = acc[j];
          for (let i = 0; i < inner; i++) { const a = Math.abs(x[base + i]); if (a > mx) mx = a; }
          acc[j] = mx;
        }
        xMax.set(t, acc);
        rank.set(t, dims.length);
      }
    }
  } finally {
    await runner.dispose();
  }
  const groups: DmqConvGroup[] = [];
  for (const layer of layers) {
    const node = layer.node;
    const input = node.input[0];
    const w = g.constantValue(node.input[1])!;
    const data = Float32Array.from(w.data as Float32Array);
    const group = (attributeValue(node, 'group') as number | undefined) ?? 1;
    const xm = xMax.get(input)!;
    const indices = inputChannelIndices(layer.opType, w.dims, group);
    const channels = xm.length;
    const expected = layer.opType === 'ConvTranspose' ? w.dims[0] : w.dims[1] * group;
    if (channels !== expected) throw new QuantbookError('GRAPH_INVALID', `dmq_balancer: layer "${layer.name}": input "${input}" has ${channels} channels, its weight ${JSON.stringify(w.dims)} (group ${group}) reads ${expected}`);
    const scales = new Float32Array(channels);
    const wMax = new Float32Array(channels);
    for (let j = 0; j < channels; j++) {
      const idx = indices(j);
      wMax[j] = idx.reduce((mx, i) => Math.max(mx, Math.abs(data[i])), 0);
      const s = xm[j] > 0 && wMax[j] > 0 ? Math.pow(xm[j], m) / Math.pow(wMax[j], 1 - m) : 1;
      scales[j] = Number.isFinite(s) && s > 0 ? s : 1;
      for (const i of idx) data[i] = Math.fround(data[i] * scales[j]);
    }
    g.replaceInitializer(node.input[1], { type: DataType.FLOAT, dims: w.dims, data });
    // x / s in front of this layer only (other readers of x keep the float x)
    const shape = Array.from({ length: rank.get(input)! }, (_, i) => (i === 1 ? channels : 1));
    const inv = g.addInitializer({ name: g.uniqueName(`${layer.name}.dmq_inv_scale`), type: DataType.FLOAT, dims: shape, data: Float32Array.from(scales, (s) => 1 / s) }).name!;
    const out = g.uniqueName(`${input}_dmq_${layer.name}`);
    const mulName = g.uniqueName(`${layer.name}_dmq_balance`);
    const at = g.proto.node.indexOf(node);
    g.proto.node.splice(at, 0, newNode({ op_type: 'Mul', name: mulName, input: [input, inv], output: [out] }));
    node.input[0] = out;
    g.invalidate();
    groups.push({
      input, layers: [layer.name], absorbedBy: { kind: 'Mul', node: mulName }, alpha: m, beta: 1 - m,
      channelMaxBefore: Float32Array.from(xm), channelMaxAfter: Float32Array.from(xm, (v, j) => v / scales[j]), weightMaxBefore: wMax, scales,
    });
  }
  return groups;
}
