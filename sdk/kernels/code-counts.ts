/**
 * Counting int16 codes into histogram tables: the per-value work of exact in-graph histograms
 * (calibration/batch-summary.ts), one count per activation value, so its speed is a large part
 * of what histogram calibration costs. Two implementations with one interface: a plain
 * typed-array loop and WebAssembly (count-codes.wat). `chooseCodeCounter()` times both once per
 * process and keeps the faster (on the AVX-512 machine: wasm ~0.5 ns a code, the loop 0.8-1.1).
 *
 * Both count into four interleaved tables of `table` counts (code i into table i mod 4), so that
 * runs of equal codes do not wait on each other's increments; a code c lands at index
 * (c + offset) & 0xffff, which is c + offset for codes from -offset to table - 1 - offset.
 */
import * as fs from 'fs';
import * as path from 'path';
import { timeIt } from './reductions';

export type CodeCounterKind = 'loop' | 'wasm';

export interface CodeCounter {
  readonly kind: CodeCounterKind;
  /** counts per table */
  readonly table: number;
  /** the four tables, table t at [t * table, (t + 1) * table); read them with drainCounts */
  readonly tables: Int32Array;
  /** adds every code to the tables */
  count(codes: Int16Array, offset: number): void;
}

/** The largest table: indices are 16-bit. */
const MAX_TABLE = 1 << 16;

function checkTable(table: number): void {
  if (!(Number.isInteger(table) && table > 0 && table <= MAX_TABLE)) throw new RangeError(`code tables hold 1 to ${MAX_TABLE} counts, got ${table}`);
}

class LoopCounter implements CodeCounter {
  readonly kind = 'loop';
  readonly tables: Int32Array;
  constructor(readonly table: number) {
    checkTable(table);
    this.tables = new Int32Array(4 * table);
  }

  count(codes: Int16Array, offset: number): void {
    countInto(this.tables, this.table, codes, offset);
  }
}

/** Counts the codes into `tables`, two codes per 32-bit read where the buffer is aligned. */
function countInto(tables: Int32Array, table: number, codes: Int16Array, offset: number): void {
  const [T1, T2, T3] = [table, 2 * table, 3 * table];
  let i = 0;
  if ((codes.byteOffset & 3) === 0) {
    const pairs = new Uint32Array(codes.buffer, codes.byteOffset, codes.length >> 1);
    const n = pairs.length & ~1;
    // (a 16-bit two's complement code + offset) & 0xffff is code + offset for codes >= -offset
    for (let p = 0; p < n; p += 2) {
      const a = pairs[p];
      const b = pairs[p + 1];
      tables[((a & 0xffff) + offset) & 0xffff]++;
      tables[T1 + (((a >>> 16) + offset) & 0xffff)]++;
      tables[T2 + (((b & 0xffff) + offset) & 0xffff)]++;
      tables[T3 + (((b >>> 16) + offset) & 0xffff)]++;
    }
    i = 2 * n;
  }
  for (; i < codes.length; i++) tables[codes[i] + offset]++;
}

// The parts of WebAssembly's JS API used here (Node has it; the ES2022 lib this project compiles
// against does not declare it).
interface WasmMemory { readonly buffer: ArrayBuffer; grow(pages: number): number }
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}
const WebAssemblyApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let wasmModule: object | undefined;

/** count-codes.wasm, compiled once per process (synchronously: it is a few hundred bytes). */
function countModule(): object {
  return (wasmModule ??= new WebAssemblyApi.Module(fs.readFileSync(path.join(__dirname, 'count-codes.wasm'))));
}

const PAGE = 65536;

class WasmCounter implements CodeCounter {
  readonly kind = 'wasm';
  private readonly memory: WasmMemory;
  private readonly countCodes: (codes: number, n: number, table: number, offset: number) => void;
  private view?: Int32Array;

  constructor(readonly table: number) {
    checkTable(table);
    const instance = new WebAssemblyApi.Instance(countModule());
    this.memory = instance.exports.memory as WasmMemory;
    this.countCodes = instance.exports.count as WasmCounter['countCodes'];
    this.reserve(0);
  }

  /** The tables in wasm memory (a new view after the memory grows: the old one is detached). */
  get tables(): Int32Array {
    if (!this.view || this.view.buffer !== this.memory.buffer) this.view = new Int32Array(this.memory.buffer, 0, 4 * this.table);
    return this.view;
  }

  /** Grows the memory to hold the tables and `codes` codes after them. */
  private reserve(codes: number): void {
    const bytes = 16 * this.table + 2 * codes;
    const pages = Math.ceil(bytes / PAGE) - this.memory.buffer.byteLength / PAGE;
    if (pages > 0) this.memory.grow(pages);
  }

  count(codes: Int16Array, offset: number): void {
    this.reserve(codes.length);
    const at = 16 * this.table;
    new Int16Array(this.memory.buffer, at, codes.length).set(codes);
    const n = codes.length & ~3;
    this.countCodes(at, n, this.table, offset);
    // the last 0-3 codes
    const tables = this.tables;
    for (let i = n; i < codes.length; i++) tables[codes[i] + offset]++;
  }
}

/**
 * Moves the counts at indices [from, to] out of the counter: out[k] = (sum of the four tables at
 * k) · weight, and the tables are zeroed there for the next count. Returns the first and last
 * index holding a count ([-1, -1] when none). One pass, over the given span only: per tensor and
 * batch it is a fixed cost, so callers pass the span their codes can occupy.
 */
export function drainCounts(counter: CodeCounter, from: number, to: number, weight: number, out: Float64Array): [number, number] {
  const tables = counter.tables;
  const [T1, T2, T3] = [counter.table, 2 * counter.table, 3 * counter.table];
  let first = -1;
  let last = -1;
  for (let k = from; k <= to; k++) {
    const c = tables[k] + tables[k + T1] + tables[k + T2] + tables[k + T3];
    out[k] = c * weight;
    if (c === 0) continue;
    tables[k] = tables[k + T1] = tables[k + T2] = tables[k + T3] = 0;
    if (first < 0) first = k;
    last = k;
  }
  return [first, last];
}

export function newCodeCounter(table: number, kind: CodeCounterKind = chosen): CodeCounter {
  return kind === 'wasm' ? new WasmCounter(table) : new LoopCounter(table);
}

let chosen: CodeCounterKind = 'loop';

/** The implementation newCodeCounter uses by default (the loop until chooseCodeCounter says otherwise). */
export function codeCounterChoice(): CodeCounterKind {
  return chosen;
}

/**
 * Times both implementations on a million codes shaped like an activation's (most near zero,
 * a long tail) and keeps the faster. The wasm counter runs a few times first: V8 compiles wasm
 * with its baseline compiler and optimises a function only after it has run a while (the first
 * call counts ~5x slower). Returns the timings (ms) for the bench table.
 */
export function chooseCodeCounter(sampleSize = 1 << 20): Record<CodeCounterKind, number> {
  // codes and tables as an exact in-graph histogram has them: within ±8191, tables of 2 · 8192
  const offset = 8191;
  const codes = new Int16Array(sampleSize);
  for (let i = 0; i < codes.length; i++) codes[i] = Math.round(Math.min(offset, -400 * Math.log((i * 0.6180339887) % 1 || 0.5) - 200));
  const timings = {} as Record<CodeCounterKind, number>;
  for (const kind of ['loop', 'wasm'] as const) {
    let counter: CodeCounter;
    try {
      counter = newCodeCounter(2 * (offset + 1), kind);
    } catch {
      // count-codes.wasm missing (compiled without `npm run build`'s assets step): the loop counts the same
      timings[kind] = Infinity;
      continue;
    }
    for (let i = 0; i < 3; i++) counter.count(codes, offset);
    timings[kind] = timeIt(() => counter.count(codes, offset));
  }
  chosen = timings.wasm < timings.loop ? 'wasm' : 'loop';
  return timings;
}

/** Forces one implementation (tests, or a machine where timing once is not wanted). */
export function useCodeCounter(kind: CodeCounterKind): void {
  chosen = kind;
}
