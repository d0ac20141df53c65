/**
 * The IR version a model file must declare for the opsets it imports, and the IR-3 rule that
 * every initializer is also a graph input. ONNX releases pair each default-domain opset with
 * the IR version they introduced (onnx/helper.py VERSION_TABLE): a file that imports opset 13
 * but says IR 3 is rejected by onnx.checker, and from IR 4 on initializers need not be inputs.
 */
import { GraphProto, ModelProto, int64ToNumber, newValueInfo } from './proto';

/** The lowest IR version that knows each default-domain opset (index: opset). */
const MIN_IR_FOR_OPSET: Record<number, number> = {
  1: 3, 2: 3, 3: 3, 4: 3, 5: 3, 6: 3, 7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7,
  15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11, 24: 11,
};

/** IR version needed by `opset` of the default domain (the newest known for opsets past the table). */
export function minIrForOpset(opset: number): number {
  if (opset in MIN_IR_FOR_OPSET) return MIN_IR_FOR_OPSET[opset];
  const known = Object.keys(MIN_IR_FOR_OPSET).map(Number);
  return opset > Math.max(...known) ? MIN_IR_FOR_OPSET[Math.max(...known)] : 3;
}

function defaultOpset(m: ModelProto): number | undefined {
  const e = m.opset_import.find((o) => !o.domain || o.domain === 'ai.onnx');
  return e ? int64ToNumber(e.version) : undefined;
}

/**
 * Raises `ir_version` to what the model's default opset needs (never lowers it). When that
 * moves the model past IR 3, initializers listed as graph inputs are unlisted: the listing was
 * IR 3's obligation, not the author's choice, and ONNX Runtime treats an initializer that is
 * also an input as overridable, so it would not constant-fold it or fuse the QDQ around it.
 * A model that stays at IR 3 gets every initializer listed as an input, new ones included.
 * Returns the IR version set.
 */
export function conformIrVersion(m: ModelProto): number {
  const before = m.ir_version === undefined ? 0 : int64ToNumber(m.ir_version);
  const opset = defaultOpset(m);
  const ir = Math.max(before, opset === undefined ? before : minIrForOpset(opset));
  if (ir !== before) m.ir_version = ir;
  if (ir >= 4 && before < 4) unlistInitializerInputs(m.graph!);
  if (ir < 4) listInitializersAsInputs(m.graph!);
  return ir;
}

function unlistInitializerInputs(g: GraphProto): void {
  const init = new Set(g.initializer.map((t) => t.name));
  g.input = g.input.filter((v) => !init.has(v.name));
}

function listInitializersAsInputs(g: GraphProto): void {
  const listed = new Set(g.input.map((v) => v.name));
  for (const t of g.initializer) {
    if (listed.has(t.name)) continue;
    g.input.push(newValueInfo({
      name: t.name,
      type: { tensor_type: { elem_type: t.data_type, shape: { dim: t.dims.map((d) => ({ dim_value: d })) } } },
    }));
  }
}

/** `m` itself when its IR version already fits its opsets, else a shallow copy that does (the caller's model is left alone). */
export function withConformingIr(m: ModelProto): ModelProto {
  const copy = { ...m, graph: { ...m.graph!, input: [...m.graph!.input] } } as ModelProto;
  const before = m.ir_version === undefined ? 0 : int64ToNumber(m.ir_version);
  const after = conformIrVersion(copy);
  const inputsChanged = copy.graph!.input.length !== m.graph!.input.length;
  return after === before && !inputsChanged ? m : copy;
}
