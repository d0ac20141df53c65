/**
 * One error type for everything the SDK rejects. `code` is stable for programs;
 * the message names the parameter or file, the value, and what is allowed.
 */
export type ErrorCode =
  | 'FILE_NOT_FOUND'
  | 'INVALID_MODEL'
  | 'INVALID_ARGUMENT'
  | 'UNKNOWN_TENSOR'
  | 'UNSUPPORTED'
  | 'GRAPH_INVALID'
  | 'IO_ERROR'
  | 'RUNTIME_ERROR'
  | 'CANCELLED'
  /** another process is writing the same output folder */
  | 'LOCKED';

export class QuantbookError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'QuantbookError';
  }
}

/** `value` as an object (a config section), or an error naming `where`. */
export function requireObject(value: unknown, where: string): Record<string, unknown> {
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw invalidArgument(where, value, 'an object');
  return value as Record<string, unknown>;
}

/** Refuses keys of `obj` outside `allowed`, naming them and the allowed ones; `spellings` lists the accepted forms of a key. */
export function checkKeys(obj: Record<string, unknown>, allowed: string[], where: string, spellings: (key: string) => string[] = (k) => [k]): void {
  const known = new Set(allowed.flatMap(spellings));
  const unknown = Object.keys(obj).filter((k) => !known.has(k));
  if (unknown.length) throw new QuantbookError('INVALID_ARGUMENT', `${where}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')}; allowed: ${allowed.join(', ')}`);
}

/** An optional list of strings from a config (null/undefined → null), copied; anything else is rejected. */
export function optionalStringList(name: string, v: unknown): string[] | null {
  if (v === null || v === undefined) return null;
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw invalidArgument(name, v, 'a list of strings or null');
  return [...v];
}

/** Shorthand for the commonest rejection: parameter `name` got `value`; `allowed` says what fits. */
export function invalidArgument(name: string, value: unknown, allowed: string): QuantbookError {
  return new QuantbookError('INVALID_ARGUMENT', `${name}: got ${describe(value)}; expected ${allowed}`);
}

export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === undefined || value === null || typeof value !== 'object') return String(value);
  if (Array.isArray(value)) return `[${value.slice(0, 8).map(describe).join(', ')}${value.length > 8 ? ', …' : ''}]`;
  const ctor = (value as object).constructor?.name;
  return ctor && ctor !== 'Object' ? `a ${ctor}` : JSON.stringify(value).slice(0, 120);
}

/** Names from `candidates` that look like `wanted`, to help with typos in error messages. */
export function closeNames(wanted: string, candidates: Iterable<string>, max = 5): string[] {
  const w = wanted.toLowerCase();
  const scored: Array<[number, string]> = [];
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase(), 12);
    if (d <= Math.max(2, Math.floor(w.length / 3)) || c.toLowerCase().includes(w)) scored.push([d, c]);
  }
  return scored.sort((a, b) => a[0] - b[0]).slice(0, max).map(([, c]) => c);
}

function editDistance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) > cap) return cap + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}
