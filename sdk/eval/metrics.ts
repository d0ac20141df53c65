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

/** Signal-to-quantization-noise ratio in dB, cosine similarity, max abs error. */
export function compareOutputs(reference: ArrayLike<number>, test: ArrayLike<number>): { sqnrDb: number; cosine: number; maxAbsError: number } {
  let sig = 0;
  let noise = 0;
  let dot = 0;
  let nt = 0;
  let maxAbs = 0;
  for (let i = 0; i < reference.length; i++) {
    const r = reference[i];
    const t = test[i];
    const d = r - t;
    sig += r * r;
    noise += d * d;
    dot += r * t;
    nt += t * t;
    if (Math.abs(d) > maxAbs) maxAbs = Math.abs(d);
  }
  return {
    sqnrDb: noise === 0 ? Infinity : 10 * Math.log10(sig / noise),
    cosine: sig === 0 || nt === 0 ? (sig === nt ? 1 : 0) : dot / Math.sqrt(sig * nt),
    maxAbsError: maxAbs,
  };
}
