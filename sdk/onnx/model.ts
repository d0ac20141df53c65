/**
 * Model: an ONNX ModelProto with its main Graph, opsets, and IO. The entry point for
 * everything that reads or edits a model: `loadModel(pathOrBytes)`.
 */
import { Graph } from './graph';
import { conformIrVersion } from './ir-version';
import { LoadOptions, SaveOptions, SaveResult, allInitializers, readModelProto, serializeModel, writeModelProto } from './model-io';
import { isExternal } from './tensor';
import { ModelProto, cloneModel, int64ToNumber } from './proto';

export class Model {
  private mainGraph?: Graph;

  constructor(
    readonly proto: ModelProto,
    /** folder that external data references resolve against */
    readonly baseDir?: string,
  ) {}

  get graph(): Graph {
    return (this.mainGraph ??= new Graph(this.proto.graph!, { baseDir: this.baseDir }));
  }

  get irVersion(): number { return int64ToNumber(this.proto.ir_version); }

  /** The opset version imported for `domain` ('' and 'ai.onnx' are the default domain). */
  opsetVersion(domain = ''): number | undefined {
    const wanted = domain === 'ai.onnx' ? '' : domain;
    const entry = this.proto.opset_import.find((o) => (o.domain ?? '') === wanted || (wanted === '' && o.domain === 'ai.onnx'));
    return entry ? int64ToNumber(entry.version) : undefined;
  }

  /** Sets the default-domain opset (e.g. 13 for per-channel QDQ), and the IR version it needs. Never lowers either. */
  requireOpset(version: number): void {
    const entry = this.proto.opset_import.find((o) => !o.domain || o.domain === 'ai.onnx');
    if (!entry) this.proto.opset_import.push({ domain: '', version });
    else if (int64ToNumber(entry.version) < version) entry.version = version;
    conformIrVersion(this.proto);
    this.mainGraph?.invalidate();
  }

  /** The encoded model (all tensor data inside; throws over protobuf's 2 GB limit). */
  toBytes(): Uint8Array {
    return serializeModel(this.proto);
  }

  save(path: string, options?: SaveOptions): SaveResult {
    return writeModelProto(this.proto, path, options, this.baseDir);
  }

  /** True when some initializer (of the main graph or a body) is held by reference: a model loaded with `loadExternalData: false`. */
  heldByReference(): boolean {
    for (const t of allInitializers(this.proto.graph!)) if (isExternal(t)) return true;
    return false;
  }

  /** An independent deep copy. */
  clone(): Model {
    return new Model(cloneModel(this.proto), this.baseDir);
  }
}

/** Loads an ONNX model from a file path or from its bytes; external data is read into memory. */
export function loadModel(source: string | Uint8Array, options?: LoadOptions): Model {
  const { proto, baseDir } = readModelProto(source, options);
  return new Model(proto, baseDir);
}
