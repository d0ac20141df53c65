/**
 * Command-line arguments: positionals, `--flag`, `--name value` / `--name=value`. Each command
 * declares its options; anything else is refused with the allowed ones named.
 */
import { QuantbookError } from '../errors';

export interface OptionSpec { [name: string]: 'flag' | 'value' }

export interface ParsedArgs { positional: string[]; flags: Set<string>; values: Map<string, string> }

export function parseArgs(argv: string[], spec: OptionSpec, command: string): ParsedArgs {
  const out: ParsedArgs = { positional: [], flags: new Set(), values: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      out.positional.push(a);
      continue;
    }
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2);
    const kind = spec[name];
    if (!kind) throw new QuantbookError('INVALID_ARGUMENT', `${command}: unknown option --${name}; allowed: ${Object.keys(spec).map((k) => `--${k}`).join(', ')}`);
    if (kind === 'flag') {
      if (inline !== undefined) throw new QuantbookError('INVALID_ARGUMENT', `${command}: --${name} takes no value`);
      out.flags.add(name);
    } else {
      const v = inline ?? argv[++i];
      if (v === undefined || (inline === undefined && v.startsWith('--'))) throw new QuantbookError('INVALID_ARGUMENT', `${command}: --${name} needs a value`);
      out.values.set(name, v);
    }
  }
  return out;
}

export function requirePositional(args: ParsedArgs, count: number, what: string, command: string): string[] {
  if (args.positional.length !== count) throw new QuantbookError('INVALID_ARGUMENT', `${command}: expected ${what}, got ${args.positional.length ? args.positional.map((p) => `"${p}"`).join(' ') : 'nothing'}`);
  return args.positional;
}

export function numberList(v: string, n: number, name: string): number[] {
  const parts = v.split(/[x,]/).map(Number);
  if (parts.length !== n || parts.some((x) => !Number.isFinite(x))) throw new QuantbookError('INVALID_ARGUMENT', `--${name}: got "${v}"; expected ${n} numbers separated by ${n === 2 ? "'x'" : "','"}`);
  return parts;
}

export function positiveInt(v: string | undefined, name: string): number | undefined {
  return integerOption(v, name, 1, 'a positive integer');
}

export function wholeNumber(v: string | undefined, name: string): number | undefined {
  return integerOption(v, name, 0, 'a whole number (0 or more)');
}

/** An integer option of at least `min`; absent stays undefined. */
function integerOption(v: string | undefined, name: string, min: number, expected: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new QuantbookError('INVALID_ARGUMENT', `--${name}: got "${v}"; expected ${expected}`);
  return n;
}
