/**
 * Tensor spill: where the quantizer puts the tensors it makes when the model it quantizes was
 * loaded without its external data (a model larger than memory). Each tensor's bytes go to a
 * temporary file as soon as it is made, and the model keeps a reference shaped like ONNX
 * external data; readers (readExternalBytes) and the writer (model-io.ts) follow it as they
 * follow the model's own data file, so a save copies one tensor at a time.
 *
 * The file is unlinked as soon as it is opened: only this process's open descriptor keeps it,
 * so nothing is left on disk however the process ends (a SIGKILL included). A reference names
 * its spill by a random id known only to this process; an id from a model file is refused.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QuantbookError } from '../errors';
import { TensorProto, newTensor } from './proto';

/** TensorProto.DataLocation.EXTERNAL (tensor.ts imports this module, so the value is not imported from there) */
const DATA_LOCATION_EXTERNAL = 1;

/** The external_data key that marks a spilled tensor (never written to a saved file: the writer replaces every reference). */
export const SPILL_KEY = 'quantbook_spill';

/** Tensors below this many bytes stay in memory (scales, zero points, biases). */
export const SPILL_THRESHOLD = 1024;

const openSpills = new Map<string, TensorSpill>();

export class TensorSpill {
  readonly id = crypto.randomBytes(12).toString('hex');
  private readonly fd: number;
  private end = 0;

  constructor(dir: string = os.tmpdir()) {
    const file = path.join(dir, `quantbook-spill-${this.id}`);
    try {
      this.fd = fs.openSync(file, 'wx+', 0o600);
    } catch (e) {
      throw new QuantbookError('IO_ERROR', `cannot create a temporary file in ${dir} for tensors of a model held by reference: ${(e as Error).message}`, { cause: e });
    }
    fs.unlinkSync(file); // the open descriptor keeps the bytes; the name is gone at once
    openSpills.set(this.id, this);
  }

  /** Writes `t`'s raw_data to the spill; returns the reference that replaces it (same name, type, dims). Small tensors come back unchanged. */
  put(t: TensorProto): TensorProto {
    const raw = t.raw_data;
    if (!raw || raw.byteLength < SPILL_THRESHOLD) return t;
    const offset = this.end;
    let done = 0;
    while (done < raw.byteLength) done += fs.writeSync(this.fd, raw, done, raw.byteLength - done, offset + done);
    this.end += raw.byteLength;
    const { raw_data: _bytes, ...rest } = t;
    return newTensor({
      ...rest,
      data_location: DATA_LOCATION_EXTERNAL,
      external_data: [
        { key: 'location', value: `quantbook-spill-${this.id}` },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(raw.byteLength) },
        { key: SPILL_KEY, value: this.id },
      ],
    });
  }

  read(offset: number, length: number, tensor: string): Uint8Array {
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= this.end)) {
      throw new QuantbookError('INVALID_MODEL', `tensor "${tensor}": spilled bytes ${offset}..${offset + length} are outside the ${this.end} bytes written`);
    }
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const got = fs.readSync(this.fd, buf, done, length - done, offset + done);
      if (got === 0) throw new QuantbookError('INVALID_MODEL', `tensor "${tensor}": the temporary tensor file ended early`);
      done += got;
    }
    return buf;
  }

  /** Frees the disk space now; every model still referring to this spill can no longer be read. */
  dispose(): void {
    if (!openSpills.delete(this.id)) return;
    fs.closeSync(this.fd);
  }
}

/** The bytes of a spilled tensor, or undefined when `t` is not one. */
export function readSpilled(t: TensorProto): Uint8Array | undefined {
  const id = t.external_data.find((e) => e.key === SPILL_KEY)?.value;
  if (id === undefined) return undefined;
  const spill = openSpills.get(id);
  if (!spill) throw new QuantbookError('INVALID_MODEL', `tensor "${t.name}" refers to a temporary tensor file (${SPILL_KEY} ${id}) this process does not hold; it was disposed, or the reference came from a file`);
  const entry = (k: string) => Number(t.external_data.find((e) => e.key === k)?.value);
  return spill.read(entry('offset'), entry('length'), t.name ?? '');
}
