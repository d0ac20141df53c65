/**
 * Runner: ONNX Runtime sessions over quantbook models.
 *
 * `Runner.create(model, { expose })` builds a session whose extra outputs are the chosen
 * intermediate tensors (what calibration observes). The original outputs are computed by
 * the same graph, so their values do not change; exposing a tensor only keeps it alive.
 */
import * as ort from 'onnxruntime-node';
import { QuantbookError, invalidArgument } from '../errors';
import { DataType, typeInfo } from '../onnx/dtype';
import { Model, loadModel } from '../onnx/model';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export type Feeds = Record<string, ort.Tensor>;

export interface RunnerOptions {
  /** intermediate tensors of the main graph to return besides the model's outputs */
  expose?: string[];
  /** ORT execution providers (default ['cpu']) */
  executionProviders?: ort.InferenceSession.SessionOptions['executionProviders'];
  /** other ORT session options (threads, graph optimisation level, ...) */
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

export interface RunResult {
  /** the model's own outputs */
  outputs: Record<string, ort.Tensor>;
  /** the exposed intermediate tensors */
  exposed: Record<string, ort.Tensor>;
}

export class Runner {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
    readonly exposedNames: readonly string[],
  ) {}

  static async create(source: Model | string | Uint8Array, options: RunnerOptions = {}): Promise<Runner> {
    const model = source instanceof Model ? source : loadModel(source);
    const expose = [...new Set(options.expose ?? [])];
    const g = model.graph;
    const outputNames = g.outputNames;
    for (const name of expose) g.requireTensor(name, 'exposed tensor');

    const extra = expose.filter((n) => !outputNames.includes(n));
    let runnable = model;
    if (extra.length) {
      // add the exposed tensors as outputs of a copy; the caller's model is left as it was
      runnable = model.clone();
      for (const name of extra) runnable.graph.addOutput(name);
    }
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      ...options.sessionOptions,
      executionProviders: options.executionProviders ?? options.sessionOptions?.executionProviders ?? ['cpu'],
    };
    let session: ort.InferenceSession;
    try {
      session = model.heldByReference() ? await sessionFromFile(runnable, sessionOptions) : await ort.InferenceSession.create(runnable.toBytes(), sessionOptions);
    } catch (e) {
      throw new QuantbookError('RUNTIME_ERROR', `ONNX Runtime could not load the model: ${(e as Error).message}`, { cause: e });
    }
    return new Runner(session, session.inputNames, outputNames, expose);
  }

  /** Runs one batch. Feeds are checked by name before ORT sees them. */
  async run(feeds: Feeds): Promise<RunResult> {
    if (feeds === null || typeof feeds !== 'object') throw invalidArgument('feeds', feeds, `an object mapping input names (${this.inputNames.join(', ')}) to ort.Tensor`);
    const missing = this.inputNames.filter((n) => !(n in feeds));
    const unknown = Object.keys(feeds).filter((n) => !this.inputNames.includes(n));
    if (missing.length || unknown.length) {
      throw new QuantbookError('INVALID_ARGUMENT', `feeds: ${missing.length ? `missing inputs ${missing.map((m) => `"${m}"`).join(', ')}` : ''}${missing.length && unknown.length ? '; ' : ''}${unknown.length ? `unknown inputs ${unknown.map((m) => `"${m}"`).join(', ')}` : ''}; the model's inputs are ${this.inputNames.map((m) => `"${m}"`).join(', ')}`);
    }
    let result: ort.InferenceSession.ReturnType;
    try {
      result = await this.session.run(feeds, [...new Set([...this.outputNames, ...this.exposedNames])]);
    } catch (e) {
      throw new QuantbookError('RUNTIME_ERROR', `ONNX Runtime run failed: ${(e as Error).message}`, { cause: e });
    }
    const outputs: Record<string, ort.Tensor> = {};
    const exposed: Record<string, ort.Tensor> = {};
    for (const n of this.outputNames) outputs[n] = result[n];
    for (const n of this.exposedNames) exposed[n] = result[n];
    return { outputs, exposed };
  }

  /** Runs batches one after another, yielding each result as soon as it is ready. */
  async *runBatches(batches: Iterable<Feeds> | AsyncIterable<Feeds>): AsyncGenerator<RunResult> {
    for await (const feeds of batches) yield await this.run(feeds);
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

/**
 * A session over a model that holds weights by reference (a block of a model larger than
 * memory). ORT given bytes has no folder to resolve references against, and bytes would hold
 * every weight three times (the inlined model, its encoding, ORT's copy); so the model is written
 * with its weights as external data to a temporary folder, one tensor at a time, and ORT reads
 * that file. The folder is removed once the session holds the weights.
 */
async function sessionFromFile(model: Model, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quantbook-session-'));
  try {
    const file = path.join(dir, 'model.onnx');
    model.save(file, { externalData: true });
    return await ort.InferenceSession.create(file, options);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Wraps a typed array as an ORT tensor of the matching element type. */
export function ortTensor(type: DataType, data: ArrayLike<number> | BigInt64Array, dims: readonly number[]): ort.Tensor {
  const ortType = typeInfo(type).ort;
  if (!ortType) throw new QuantbookError('UNSUPPORTED', `ONNX Runtime for Node has no tensor type for ONNX element type ${DataType[type]}`);
  return new ort.Tensor(ortType as 'float32', data as Float32Array, dims);
}
