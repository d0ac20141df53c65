/**
 * report(session, file): the reproducible record of a quantization run as one self-contained
 * HTML file: config, versions, backend, seed, calibration data hash, statistics, per-layer
 * error plots and the accuracy table. The numbers come from the run itself, so the same model,
 * config and data give the same report (apart from its creation time).
 */
import * as path from 'path';
import { CalibrationSource } from '../calibration/data';
import { ReportInput, writeReport } from '../export/report';
import { QuantSession, QuantizationResult } from './session';

export interface ReportOptions {
  title?: string;
  /** batches to compare fp32 and int8 on, layer by layer (any calibration source); no comparison without */
  compareOn?: CalibrationSource;
  accuracy?: ReportInput['accuracy'];
  /** the seed of anything random in the run (QAT, sampling); deterministic PTQ needs none */
  seed?: number;
  /** files written with the result, listed in the report */
  files?: string[];
  /** how many activation histograms to draw (default 4) */
  histogramsShown?: number;
}

export async function report(source: QuantSession | QuantizationResult, file: string, options: ReportOptions = {}): Promise<{ file: string; input: ReportInput }> {
  const result = source instanceof QuantizationResult ? source : await source.run();
  const comparison = options.compareOn === undefined ? undefined : await result.compare(options.compareOn);
  const input = result.reportInput({
    title: options.title ?? `quantbook report: ${result.baseName} (${result.kind})`,
    model: result.baseName,
    comparison,
    accuracy: options.accuracy,
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
    files: options.files?.map((f) => path.relative(path.dirname(path.resolve(file)), path.resolve(f))),
    histogramsShown: options.histogramsShown,
  });
  return { file: writeReport(file, input), input };
}
