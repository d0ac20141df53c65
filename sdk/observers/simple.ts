/** Observers that need no histogram: min-max (optionally a moving average) and sigma (mean ± k·std). */
import { ObservedBatch, Observer, ObserverState } from './observer';

export class MinMaxObserver extends Observer {
  private avgMin = 0;
  private avgMax = 0;

  protected update({ min: batchMin, max: batchMax }: ObservedBatch): void {
    const c = this.options.averagingConstant ?? 0;
    if (this.batchesSeen === 1 || c === 0) {
      this.avgMin = c === 0 ? this.min : batchMin;
      this.avgMax = c === 0 ? this.max : batchMax;
    } else {
      this.avgMin += c * (batchMin - this.avgMin);
      this.avgMax += c * (batchMax - this.avgMax);
    }
  }

  protected chooseRange(): [number, number] { return [this.avgMin, this.avgMax]; }

  override state(): ObserverState { return { ...super.state(), avgMin: this.avgMin, avgMax: this.avgMax }; }
  override restore(s: ObserverState): void {
    super.restore(s);
    this.avgMin = s.avgMin ?? s.min;
    this.avgMax = s.avgMax ?? s.max;
  }
}

/** The data-free statistic: mean ± k·std, never wider than what was observed. */
export class SigmaObserver extends Observer {
  protected update(): void {}

  protected chooseRange(): [number, number] {
    const k = this.options.sigmaK ?? 3;
    return [Math.max(this.min, this.mean - k * this.std), Math.min(this.max, this.mean + k * this.std)];
  }
}
