/**
 * Progress on the terminal: a bar redrawn in place on a TTY (stderr, so stdout stays clean for
 * --json), nothing when output is piped or --quiet/--json is set.
 */
export class ProgressBar {
  private readonly started = Date.now();
  private drawn = false;

  constructor(private readonly label: string, private readonly total: number | undefined, private readonly enabled = !!process.stderr.isTTY) {}

  update(done: number): void {
    if (!this.enabled) return;
    const secs = ((Date.now() - this.started) / 1000).toFixed(1);
    const width = 24;
    const bar = this.total ? `[${'#'.repeat(Math.min(width, Math.round((done / this.total) * width))).padEnd(width, '.')}] ${done}/${this.total}` : `${done}`;
    process.stderr.write(`\r${this.label} ${bar} batches, ${secs} s`);
    this.drawn = true;
  }

  done(): void {
    if (this.drawn) process.stderr.write('\n');
    this.drawn = false;
  }
}
