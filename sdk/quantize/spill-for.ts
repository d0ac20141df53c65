/**
 * Whether a quantizer spills what it makes (onnx/spill.ts): only for a model held by reference,
 * i.e. loaded with `loadExternalData: false` because it is larger than memory. A model in memory
 * keeps everything in memory, as before.
 */
import { Model } from '../onnx/model';
import { TensorSpill } from '../onnx/spill';

export function spillFor(model: Model): TensorSpill | undefined {
  return model.heldByReference() ? new TensorSpill() : undefined;
}
