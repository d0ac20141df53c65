/** Accuracy measures used to judge a quantized model against its float original. */

export function editDistance(a: string, b: string): number {
  const A = [...a];
  const B = [...b];
  let prev = Array.from({ length: B.length + 1 }, (_, j) => j);
  for (let i = 1; i <= A.length; i++) {
    const cur = [i];
    for (let j = 1; j <= B.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (A[i - 1] === B[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[B.length];
}

/** 1 − Σ edit distance / Σ reference length: the usual OCR character accuracy. */
export function characterAccuracy(predicted: string[], reference: string[]): number {
  let errors = 0;
  let chars = 0;
  predicted.forEach((p, i) => {
    errors += editDistance(p, reference[i]);
    chars += [...reference[i]].length;
  });
  return chars ? Math.max(0, 1 - errors / chars) : 1;
}

export function exactMatchRate(predicted: string[], reference: string[]): number {
  return predicted.filter((p, i) => p === reference[i]).length / Math.max(1, predicted.length);
}

/** Intersection over union of two maps thresholded at `threshold`. */
export function binaryIoU(a: ArrayLike<number>, b: ArrayLike<number>, threshold: number): number {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] > threshold;
    const y = b[i] > threshold;
    if (x && y) inter++;
    if (x || y) union++;
  }
  return union ? inter / union : 1;
}

export interface OutputError { sqnrDb: number; cosine: number; maxAbsError: number }

/**
 * Streams reference/test pairs (e.g. one batch at a time) and reports SQNR in dB, cosine
 * similarity and max abs error over everything added.
 */
export class OutputErrorAccumulator {
  private sig = 0;
  private noise = 0;
  private dot = 0;
  private test = 0;
  private maxAbs = 0;

  add(reference: ArrayLike<number>, test: ArrayLike<number>): void {
    for (let i = 0; i < reference.length; i++) {
      const r = reference[i];
      const t = test[i];
      const d = r - t;
      this.sig += r * r;
      this.noise += d * d;
      this.dot += r * t;
      this.test += t * t;
      if (Math.abs(d) > this.maxAbs) this.maxAbs = Math.abs(d);
    }
  }

  result(): OutputError {
    return {
      sqnrDb: this.noise === 0 ? Infinity : 10 * Math.log10(this.sig / this.noise),
      cosine: this.sig === 0 || this.test === 0 ? (this.sig === this.test ? 1 : 0) : this.dot / Math.sqrt(this.sig * this.test),
      maxAbsError: this.maxAbs,
    };
  }
}

/** SQNR (dB), cosine similarity and max abs error of `test` against `reference`. */
export function compareOutputs(reference: ArrayLike<number>, test: ArrayLike<number>): OutputError {
  const acc = new OutputErrorAccumulator();
  acc.add(reference, test);
  return acc.result();
}
