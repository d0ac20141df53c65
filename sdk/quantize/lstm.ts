/**
 * LSTM layers with int8 weights, as ONNX Runtime's own quantizer writes them: the standard LSTM
 * becomes com.microsoft's DynamicQuantizeLSTM, whose CPU kernel multiplies int8 weights by
 * activations it quantizes at run time (uint8, per tensor). The weights W [dir, 4h, in] and
 * R [dir, 4h, h] are quantized symmetric int8 per (direction, gate row), and stored transposed,
 * [dir, in, 4h] and [dir, h, 4h], with scales and zero points [dir, 4h]: the kernel's layout.
 * GRU and RNN have no such kernel in ONNX Runtime: they stay float, with that reason.
 */
import { DataType } from '../onnx/dtype';
import { Graph, attributeValue } from '../onnx/graph';
import { Model } from '../onnx/model';
import { NodeProto, newNode } from '../onnx/proto';
import { makeTensor } from '../onnx/tensor';
import { definingGraph, scopes } from '../onnx/scopes';
import { removeUnusedConstants } from './fold-batchnorm';
import { toFakeQuant } from './fake-quant';
import { TensorSpill } from '../onnx/spill';
import { globToRegExp } from './layers';

export const MS_DOMAIN = 'com.microsoft';

export interface QuantizedLstm {
  name: string;
  /** body path when the LSTM sits inside If/Loop/Scan bodies */
  scope?: string;
  directions: number;
  hiddenSize: number;
  /** per (direction, gate row) weight scales of W and R */
  wScale: Float32Array;
  rScale: Float32Array;
}

/** Int8 rows of `w` [dir, rows, cols] (one symmetric scale per (dir, row)), transposed to [dir, cols, rows]. */
export function quantizeRowsTransposed(w: Float32Array, dir: number, rows: number, cols: number): { int8: Int8Array; scale: Float32Array; dequantized: Float32Array } {
  const scale = new Float32Array(dir * rows);
  const int8 = new Int8Array(w.length);
  const dequantized = new Float32Array(w.length);
  for (let d = 0; d < dir; d++) {
    for (let r = 0; r < rows; r++) {
      const base = (d * rows + r) * cols;
      let m = 0;
      for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(w[base + c]));
      const s = m > 0 ? Math.fround(m / 127) : 1;
      scale[d * rows + r] = s;
      for (let c = 0; c < cols; c++) {
        const q = Math.max(-127, Math.min(127, Math.round(Math.fround(w[base + c] / s))));
        int8[(d * cols + c) * rows + r] = q; // [dir, cols, rows]
        dequantized[base + c] = Math.fround(q * s); // back in [dir, rows, cols], for the fake-quant model
      }
    }
  }
  return { int8, scale, dequantized };
}

/** Why an LSTM node cannot become DynamicQuantizeLSTM, or undefined when it can. */
function refusal(g: Graph, n: NodeProto): string | undefined {
  const [, w, r] = n.input;
  const three = (t: string | undefined) => !!t && g.isConstant(t) && g.constantValue(t)!.type === DataType.FLOAT && g.constantValue(t)!.dims.length === 3;
  if (!three(w) || !three(r)) return 'its W and R are not constant float [dir, 4h, ·] tensors';
  if (((attributeValue(n, 'layout') as number | undefined) ?? 0) !== 0) return 'layout = 1 (batch first): DynamicQuantizeLSTM reads sequence-first input only';
  return undefined;
}

/**
 * Rewrites every LSTM of `model` (bodies included) not named in `disable` as DynamicQuantizeLSTM,
 * in place; `fakeQuant` (the same graph, if given) gets the LSTMs' weights dequantized instead,
 * so it still runs with standard operators only. Returns what was quantized and what was not.
 */
export function quantizeLstms(model: Model, disable: string[] = [], fakeQuant?: Model): { quantized: QuantizedLstm[]; kept: Array<{ name: string; scope?: string; reason: string }> } {
  const quantized: QuantizedLstm[] = [];
  const kept: Array<{ name: string; scope?: string; reason: string }> = [];
  const fakeScopes = fakeQuant ? new Map(scopes(fakeQuant).map((s) => [s.path, s.graph])) : undefined;
  const disabled = disable.map(globToRegExp);
  for (const s of scopes(model)) {
    const g = s.graph;
    const where = s.path ? { scope: s.path } : {};
    let changed = false;
    for (const n of [...g.nodes]) {
      if (n.op_type !== 'LSTM' || (n.domain ?? '') !== '') continue;
      const name = n.name || n.output[0];
      if (disabled.some((re) => re.test(name))) continue;
      const why = refusal(g, n);
      if (why) {
        kept.push({ name, ...where, reason: `LSTM kept float: ${why}` });
        continue;
      }
      const [x, wName, rName, ...rest] = n.input;
      const wt = g.constantValue(wName)!;
      const rt = g.constantValue(rName)!;
      const [dir, rows, inSize] = wt.dims;
      const hidden = rt.dims[2];
      const wq = quantizeRowsTransposed(wt.data as Float32Array, dir, rows, inSize);
      const rq = quantizeRowsTransposed(rt.data as Float32Array, dir, rows, hidden);
      const names = g.nameSource();
      const add = (base: string, type: DataType, dims: number[], data: Float32Array | Int8Array) => {
        const t = names.fresh(`${name}_${base}`);
        g.proto.initializer.push(makeTensor(t, type, dims, data));
        return t;
      };
      const inputs = [
        x,
        add('W_quantized', DataType.INT8, [dir, inSize, rows], wq.int8),
        add('R_quantized', DataType.INT8, [dir, hidden, rows], rq.int8),
        ...Array.from({ length: 5 }, (_, i) => rest[i] ?? ''),
        add('W_scale', DataType.FLOAT, [dir, rows], wq.scale),
        add('W_zero_point', DataType.INT8, [dir, rows], new Int8Array(dir * rows)),
        add('R_scale', DataType.FLOAT, [dir, rows], rq.scale),
        add('R_zero_point', DataType.INT8, [dir, rows], new Int8Array(dir * rows)),
      ];
      const attribute = n.attribute.filter((a) => a.name !== 'layout');
      g.proto.node[g.proto.node.indexOf(n)] = newNode({ op_type: 'DynamicQuantizeLSTM', domain: MS_DOMAIN, name: `${name}_quant`, input: inputs, output: n.output, attribute });
      changed = true;
      const fg = fakeScopes?.get(s.path);
      if (fg) {
        // the weight may be an outer-scope constant: replace it where it is defined
        definingGraph(fg, wName)!.replaceInitializer(wName, { type: DataType.FLOAT, dims: wt.dims, data: wq.dequantized });
        definingGraph(fg, rName)!.replaceInitializer(rName, { type: DataType.FLOAT, dims: rt.dims, data: rq.dequantized });
      }
      quantized.push({ name, ...where, directions: dir, hiddenSize: hidden, wScale: wq.scale, rScale: rq.scale });
    }
    if (changed) {
      g.invalidate();
      removeUnusedConstants(g);
    }
  }
  if (quantized.length && !model.proto.opset_import.some((o) => (o.domain ?? '') === MS_DOMAIN)) model.proto.opset_import.push({ domain: MS_DOMAIN, version: 1 });
  return { quantized, kept };
}

/** The selection after the LSTM pass: quantized LSTMs leave the skipped list; refused ones say why. */
export function settleRecurrentSkips(skipped: Array<{ name: string; opType: string; reason: string; scope?: string }>, outcome: ReturnType<typeof quantizeLstms>): typeof skipped {
  const same = (a: { name: string; scope?: string }, b: { name: string; scope?: string }) => a.name === b.name && (a.scope ?? '') === (b.scope ?? '');
  return skipped
    .filter((s) => !(s.opType === 'LSTM' && outcome.quantized.some((q) => same(q, s))))
    .map((s) => {
      const k = s.opType === 'LSTM' ? outcome.kept.find((q) => same(q, s)) : undefined;
      return k ? { ...s, reason: k.reason } : s;
    });
}

/**
 * The last step of every quantizer: the fake-quant model is derived from the finished QDQ model,
 * then the LSTMs of both are rewritten (int8 in `qdq`, dequantized weights in the fake-quant
 * model) and `selection.skipped` says what became of each recurrent layer.
 */
export function finishWithLstms(qdq: Model, selection: { skipped: Array<{ name: string; opType: string; reason: string; scope?: string }> }, disable: string[] = [], spill?: TensorSpill): { fakeQuant: Model; lstm: QuantizedLstm[] } {
  if (spill && !hasLstm(qdq)) {
    // a model held by reference: the fake-quant model is made when first asked for (its weights
    // spilled as they are dequantized), not beside the QDQ model that most callers only save
    const outcome = quantizeLstms(qdq, disable);
    selection.skipped = settleRecurrentSkips(selection.skipped, outcome);
    const snapshot = qdq.clone(); // cheap: its weights are references; later edits of qdq do not reach it
    let made: Model | undefined;
    return Object.defineProperty({ lstm: outcome.quantized } as { fakeQuant: Model; lstm: QuantizedLstm[] }, 'fakeQuant', { enumerable: true, get: () => (made ??= toFakeQuant(snapshot, spill)) });
  }
  const fakeQuant = toFakeQuant(qdq, spill);
  const outcome = quantizeLstms(qdq, disable, fakeQuant);
  selection.skipped = settleRecurrentSkips(selection.skipped, outcome);
  return { fakeQuant, lstm: outcome.quantized };
}

function hasLstm(model: Model): boolean {
  return scopes(model).some((s) => s.graph.nodes.some((n) => n.op_type === 'LSTM'));
}
