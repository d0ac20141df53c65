/**
 * Protocol Buffers text format, as far as AMCT's configuration and record files use it:
 * `name: value` scalars (numbers, true/false, quoted strings, enum identifiers), `name { … }`
 * or `name: { … }` messages, `#` comments. A field met twice becomes a list; readers that
 * expect a repeated field wrap a single value themselves (the text carries no schema).
 */
import { QuantbookError } from '../errors';

export type TextValue = string | number | boolean | TextMessage | TextValue[];
export interface TextMessage { [field: string]: TextValue }

const TOKEN = /\s*(?:#[^\n]*\n?\s*)*(?:("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{}:<>;,\[\]])|([^\s{}:<>;,"'#\[\]]+))/y;

function tokenize(text: string, where: string): string[] {
  const tokens: string[] = [];
  let at = 0;
  for (;;) {
    TOKEN.lastIndex = at;
    const m = TOKEN.exec(text);
    if (!m) break; // a failed sticky match resets lastIndex, so the position is kept in `at`
    tokens.push(m[1] ?? m[2] ?? m[3]);
    at = TOKEN.lastIndex;
  }
  const rest = text.slice(at).replace(/#[^\n]*/g, '').trim();
  if (rest) throw new QuantbookError('INVALID_ARGUMENT', `${where}: cannot read text format near "${rest.slice(0, 30)}"`);
  return tokens;
}

function scalar(token: string): string | number | boolean {
  if (/^["']/.test(token)) return token.slice(1, -1).replace(/\\(.)/g, (_, c: string) => ({ n: '\n', t: '\t' })[c] ?? c);
  if (token === 'true' || token === 'True') return true;
  if (token === 'false' || token === 'False') return false;
  const n = Number(token);
  return Number.isNaN(n) || token === '' ? token : n;
}

/** Parses protobuf text format into plain objects; `where` names the source in errors. */
export function parseTextFormat(text: string, where = 'text format'): TextMessage {
  const tokens = tokenize(text, where);
  let i = 0;
  const fail = (why: string): never => {
    throw new QuantbookError('INVALID_ARGUMENT', `${where}: ${why} (token ${i + 1}: "${tokens[i] ?? 'end of file'}")`);
  };
  const message = (close?: string): TextMessage => {
    const out: TextMessage = {};
    const repeated = new Set<string>();
    const add = (k: string, v: TextValue) => {
      if (!(k in out)) out[k] = v;
      else if (repeated.has(k)) (out[k] as TextValue[]).push(v);
      else {
        out[k] = [out[k], v];
        repeated.add(k);
      }
    };
    while (i < tokens.length && tokens[i] !== close) {
      const name = tokens[i++];
      if (!/^[A-Za-z_][\w.]*$/.test(name)) fail(`expected a field name, got "${name}"`);
      if (tokens[i] === ':') i++;
      const t = tokens[i];
      if (t === '{' || t === '<') {
        i++;
        add(name, message(t === '{' ? '}' : '>'));
        i++;
      } else if (t === '[') {
        i++;
        const list: TextValue[] = [];
        while (tokens[i] !== ']') {
          if (i >= tokens.length) fail('unclosed [');
          list.push(scalar(tokens[i++]));
          if (tokens[i] === ',') i++;
        }
        i++;
        for (const v of list) add(name, v);
      } else if (t === undefined || '{}:<>[],;'.includes(t)) {
        fail(`field "${name}" has no value`);
      } else {
        add(name, scalar(tokens[i++]));
      }
      if (tokens[i] === ';' || tokens[i] === ',') i++;
    }
    if (close && tokens[i] !== close) fail(`missing "${close}"`);
    return out;
  };
  return message();
}

/** Writes plain objects as text format (arrays become repeated fields). */
export function formatTextFormat(msg: TextMessage, indent = ''): string {
  const lines: string[] = [];
  const emit = (k: string, v: TextValue): void => {
    if (Array.isArray(v)) return v.forEach((x) => emit(k, x));
    if (v && typeof v === 'object') {
      lines.push(`${indent}${k} {`, formatTextFormat(v, `${indent}  `).replace(/\n$/, ''), `${indent}}`);
    } else {
      lines.push(`${indent}${k}: ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`);
    }
  };
  for (const [k, v] of Object.entries(msg)) emit(k, v);
  return `${lines.filter((l) => l !== '').join('\n')}\n`;
}
