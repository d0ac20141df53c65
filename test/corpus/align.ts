/**
 * Filters that look at the data, as trained ones do. A He-initialised random filter spreads its
 * weight evenly over every direction of its input patch, while natural activations put most of
 * their variance in a few directions (1/f images; correlated feature maps). Such a filter's
 * response is small, the normalisation after it gives that response unit variance, and with it
 * any broadband perturbation of the input — rounding noise above all — is amplified; stacked
 * layer after layer, a random network turns 35 dB of per-layer int8 noise into 10 dB at its
 * output, while trained networks do not (measured on the corpus: docs/corpus.md).
 *
 * `alignConvToData` redraws a Conv's weights as random mixtures of centred input patches
 * sampled from the calibration batch: w = Σᵢ rᵢ (pᵢ − μ), so E[w wᵀ] ∝ Σ, the patch covariance.
 * A filter's power is split between that data-following part (`alignedPower`) and its random
 * draw, so it responds more to what its input contains, as a trained filter does, without
 * every filter collapsing onto the same leading directions; it keeps the He norm it had.
 */
import { NodeProto, TensorProto } from '../../sdk/onnx/proto';
import { DataType } from '../../sdk/onnx/dtype';
import { seededNormal, seededRandom } from '../../sdk/util/seeded-random';

/**
 * The share of each filter's power that follows the data. Chosen by measurement, not by the
 * floors: "excess amplification" (output SQNR minus the SQNR the layers' own int8 noise would
 * give if it added at unit gain) is +1.8 / +6.2 / +9.6 dB on the trained PP-OCRv4 rec / det / cls
 * models; on eight corpus CNNs it is −15…+6 (median −4.5) with random filters, +10…+41 (median
 * +15) with 50 % aligned power, and −8…+10 (median +5.3) with 5 %, the share kept
 * (docs/corpus.md has the table).
 */
export const ALIGNED_POWER = 0.05;

/** How many patches each filter mixes, and how many estimate the mean patch. */
const PATCHES_PER_FILTER = 12;
const MEAN_PATCHES = 256;

export interface ConvGeometry { group: number; kernel: [number, number]; strides: [number, number]; pads: [number, number]; dilations: [number, number] }

function ints(node: NodeProto, name: string): number[] | undefined {
  const a = node.attribute.find((x) => x.name === name);
  return a ? a.ints.map(Number) : undefined;
}

/** The geometry of a Conv node whose weight has dims [Cout, Cin/g, kh, kw]. */
export function convGeometry(node: NodeProto, weightDims: number[]): ConvGeometry {
  const group = Number(node.attribute.find((x) => x.name === 'group')?.i ?? 1);
  const kernel = (ints(node, 'kernel_shape') ?? weightDims.slice(2)) as [number, number];
  const strides = (ints(node, 'strides') ?? [1, 1]) as [number, number];
  const pads = ints(node, 'pads') ?? [0, 0, 0, 0];
  const dilations = (ints(node, 'dilations') ?? [1, 1]) as [number, number];
  return { group, kernel, strides, pads: [pads[0], pads[1]], dilations };
}

/**
 * New weights for a 2-D Conv (dims [Cout, Cin/g, kh, kw]) from its input `x` ([N, Cin, H, W]),
 * drawn with `seed`. Returns undefined when the input holds no patch to learn from.
 */
export function alignConvToData(old: Float32Array, dims: number[], geometry: ConvGeometry, x: Float32Array, xDims: number[], seed: number, alignedPower = ALIGNED_POWER): Float32Array | undefined {
  if (dims.length !== 4 || xDims.length !== 4) return undefined;
  const [cout, cg, kh, kw] = dims;
  const [n, cin, h, w] = xDims;
  const { group, dilations: [dh, dw], pads: [ph, pw] } = geometry;
  if (cg * group !== cin || cout % group !== 0 || n * h * w === 0) return undefined;
  const random = seededRandom(seed >>> 0);
  const normal = seededNormal(random);
  const size = cg * kh * kw;
  const spanY = h + 2 * ph - (kh - 1) * dh;
  const spanX = w + 2 * pw - (kw - 1) * dw;
  if (spanY <= 0 || spanX <= 0) return undefined;
  // one patch of group `g`'s input channels at a random position (zero outside the image, as the padding is)
  const patch = (g: number, out: Float64Array): void => {
    const i = Math.floor(random() * n);
    const y0 = Math.floor(random() * spanY) - ph;
    const x0 = Math.floor(random() * spanX) - pw;
    let k = 0;
    for (let c = 0; c < cg; c++) {
      const base = (i * cin + g * cg + c) * h * w;
      for (let a = 0; a < kh; a++) {
        const y = y0 + a * dh;
        for (let b = 0; b < kw; b++, k++) {
          const xx = x0 + b * dw;
          out[k] = y >= 0 && y < h && xx >= 0 && xx < w ? x[base + y * w + xx] : 0;
        }
      }
    }
  };
  const next = new Float32Array(old.length);
  const perGroup = cout / group;
  const p = new Float64Array(size);
  for (let g = 0; g < group; g++) {
    const mean = new Float64Array(size);
    for (let s = 0; s < MEAN_PATCHES; s++) {
      patch(g, p);
      for (let k = 0; k < size; k++) mean[k] += p[k] / MEAN_PATCHES;
    }
    for (let j = g * perGroup; j < (g + 1) * perGroup; j++) {
      const mix = new Float64Array(size);
      for (let s = 0; s < PATCHES_PER_FILTER; s++) {
        patch(g, p);
        const r = normal();
        for (let k = 0; k < size; k++) mix[k] += r * (p[k] - mean[k]);
      }
      const own = old.subarray(j * size, (j + 1) * size);
      const heNorm = Math.hypot(...own);
      const mixNorm = Math.hypot(...mix);
      if (!(heNorm > 0 && mixNorm > 0)) {
        next.set(own, j * size);
        continue;
      }
      for (let k = 0; k < size; k++) next[j * size + k] = Math.sqrt(alignedPower) * heNorm * mix[k] / mixNorm + Math.sqrt(1 - alignedPower) * own[k];
    }
  }
  return next;
}

/** A Gemm with transB = 1 (weights [out, in]) on rows [N, in] is a 1×1 Conv on [N, in, 1, 1]. */
export const DENSE_GEOMETRY: ConvGeometry = { group: 1, kernel: [1, 1], strides: [1, 1], pads: [0, 0], dilations: [1, 1] };

/** The 4-D views alignConvToData takes, for a Conv or a transB Gemm with a float initializer weight; undefined for other nodes. */
export function alignable(node: NodeProto, weight: TensorProto | undefined): { dims: number[]; geometry: ConvGeometry } | undefined {
  if (!weight || weight.data_type !== DataType.FLOAT) return undefined;
  const dims = weight.dims.map(Number);
  if (node.op_type === 'Conv' && dims.length === 4) return { dims, geometry: convGeometry(node, dims) };
  const transB = Number(node.attribute.find((a) => a.name === 'transB')?.i ?? 0);
  if (node.op_type === 'Gemm' && dims.length === 2 && transB === 1) return { dims: [...dims, 1, 1], geometry: DENSE_GEOMETRY };
  return undefined;
}
