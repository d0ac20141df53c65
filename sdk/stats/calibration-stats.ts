/**
 * Calibration statistics as an Apache Arrow table: one row per (layer, tensor, channel),
 * with the observer's summaries, its histogram as a list column, and the chosen
 * scale/zero point. Written as an Arrow IPC file (Feather v2) that pyarrow/pandas read;
 * read back to re-quantize without running calibration again.
 */
import * as fs from 'fs';
import * as arrow from 'apache-arrow';
import { QuantbookError } from '../errors';
import { writeAll, writeFilesAtomically } from '../util/atomic-write';
import type { ObserverKind } from '../observers';

export interface StatRow {
  layer: string;
  tensor: string;
  opType: string;
  observer: ObserverKind;
  /** −1 for per-tensor rows */
  channel: number;
  min: number;
  max: number;
  mean: number;
  std: number;
  count: number;
  sum: number;
  sumSq: number;
  batches: number;
  histLo: number | null;
  histHi: number | null;
  histogram: Float64Array | null;
  clipMin: number;
  clipMax: number;
  scale: number;
  zeroPoint: number;
  qmin: number;
  qmax: number;
  numBits: number;
  signed: boolean;
  symmetric: boolean;
}

const histogramType = new arrow.List(new arrow.Field('item', new arrow.Float64(), true));

const COLUMNS: Array<[keyof StatRow, arrow.DataType]> = [
  ['layer', new arrow.Utf8()], ['tensor', new arrow.Utf8()], ['opType', new arrow.Utf8()], ['observer', new arrow.Utf8()],
  ['channel', new arrow.Int32()], ['min', new arrow.Float64()], ['max', new arrow.Float64()], ['mean', new arrow.Float64()],
  ['std', new arrow.Float64()], ['count', new arrow.Float64()], ['sum', new arrow.Float64()], ['sumSq', new arrow.Float64()],
  ['batches', new arrow.Int32()], ['histLo', new arrow.Float64()], ['histHi', new arrow.Float64()], ['histogram', histogramType],
  ['clipMin', new arrow.Float64()], ['clipMax', new arrow.Float64()], ['scale', new arrow.Float32()], ['zeroPoint', new arrow.Int32()],
  ['qmin', new arrow.Int32()], ['qmax', new arrow.Int32()], ['numBits', new arrow.Int32()], ['signed', new arrow.Bool()], ['symmetric', new arrow.Bool()],
];

/** Builds the table; `metadata` (backend, versions, seed, ...) goes into the schema. */
export function statsTable(rows: StatRow[], metadata: Record<string, string> = {}): arrow.Table {
  const vectors: Record<string, arrow.Vector> = {};
  for (const [name, type] of COLUMNS) vectors[name] = arrow.vectorFromArray(rows.map((r) => r[name]) as never[], type);
  const table = new arrow.Table(vectors);
  return new arrow.Table(new arrow.Schema(table.schema.fields, new Map(Object.entries(metadata))), table.batches);
}

export function rowsFromTable(table: arrow.Table): StatRow[] {
  const missing = COLUMNS.map(([n]) => n).filter((n) => !table.getChild(n));
  if (missing.length) throw new QuantbookError('INVALID_ARGUMENT', `statistics table lacks columns ${missing.join(', ')}`);
  const cols = Object.fromEntries(COLUMNS.map(([n]) => [n, table.getChild(n)!]));
  const rows: StatRow[] = [];
  for (let i = 0; i < table.numRows; i++) {
    const row = {} as Record<string, unknown>;
    for (const [name] of COLUMNS) {
      const v = cols[name].get(i);
      row[name] = name === 'histogram' ? (v ? Float64Array.from(v.toArray()) : null) : v;
    }
    rows.push(row as unknown as StatRow);
  }
  return rows;
}

/** Any Arrow table as an IPC file, written atomically. */
export function writeTable(path: string, table: arrow.Table): void {
  const bytes = arrow.tableToIPC(table, 'file');
  writeFilesAtomically([{ path, write: (fd) => writeAll(fd, bytes) }]);
}

export function writeStats(path: string, rows: StatRow[], metadata: Record<string, string> = {}): void {
  writeTable(path, statsTable(rows, metadata));
}

export function readStats(path: string): { rows: StatRow[]; metadata: Record<string, string> } {
  if (!fs.existsSync(path)) throw new QuantbookError('FILE_NOT_FOUND', `statistics file not found: ${path}`);
  let table: arrow.Table;
  try {
    table = arrow.tableFromIPC(fs.readFileSync(path));
  } catch (e) {
    throw new QuantbookError('INVALID_ARGUMENT', `${path} is not an Arrow IPC file: ${(e as Error).message}`, { cause: e });
  }
  return { rows: rowsFromTable(table), metadata: Object.fromEntries(table.schema.metadata) };
}
