import { strict as assert } from 'assert';
import { CodeCounter, CodeCounterKind, chooseCodeCounter, codeCounterChoice, drainCounts, newCodeCounter, useCodeCounter } from '../../sdk/kernels/code-counts';
import { seededRandom } from '../helpers';

/** Every index's count, drained as the histogram reads them; the tables are left zero. */
function totals(counter: CodeCounter): number[] {
  const out = new Float64Array(counter.table);
  drainCounts(counter, 0, counter.table - 1, 1, out);
  assert.ok(counter.tables.every((c) => c === 0), 'drained tables are zero');
  return Array.from(out);
}

describe('kernels: counting histogram codes (loop and WebAssembly)', () => {
  const previous = codeCounterChoice();
  after(() => useCodeCounter(previous));
  const table = 2 * 8192;
  const offset = 8191;

  it('both count every code, extremes included, at any length and byte offset', () => {
    const rand = seededRandom(7);
    const buffer = new Int16Array(300_003);
    for (let i = 0; i < buffer.length; i++) buffer[i] = Math.round((rand() * 2 - 1) ** 3 * offset);
    // runs of one code (the increments that wait on each other), and both ends of the range
    buffer.fill(0, 1000, 5000);
    buffer[17] = -offset;
    buffer[18] = offset;
    for (const [start, length] of [[0, buffer.length], [1, 299_999], [3, 2], [0, 0], [5, 7]]) {
      const codes = buffer.subarray(start, start + length);
      const expected = new Array<number>(table).fill(0);
      for (const c of codes) expected[c + offset]++;
      for (const kind of ['loop', 'wasm'] as CodeCounterKind[]) {
        const counter = newCodeCounter(table, kind);
        assert.equal(counter.kind, kind);
        counter.count(codes, offset);
        assert.deepEqual(totals(counter), expected, `${kind}, codes [${start}, ${start + length})`);
      }
    }
  });

  it('the wasm counter keeps counting across calls that grow its memory', () => {
    const counter = newCodeCounter(table, 'wasm');
    const small = Int16Array.from([1, 2, 3, 4, -5]);
    counter.count(small, offset);
    const large = new Int16Array(2_000_000).fill(-7); // 4 MB of codes: the memory grows
    counter.count(large, offset);
    counter.count(small, offset);
    const t = totals(counter);
    assert.equal(t[offset - 7], 2_000_000);
    assert.equal(t[offset - 5], 2);
    assert.equal(t[offset + 4], 2);
    assert.equal(t.reduce((a, b) => a + b, 0), 2_000_010);
  });

  it('drainCounts weights the span it is given, names its first and last occupied index and zeroes only that span', () => {
    for (const kind of ['loop', 'wasm'] as CodeCounterKind[]) {
      const counter = newCodeCounter(table, kind);
      counter.count(Int16Array.from([-3, 5, 5, 9000 - offset]), offset);
      const out = new Float64Array(table);
      assert.deepEqual(drainCounts(counter, offset - 10, offset + 10, 2.5, out), [offset - 3, offset + 5], kind);
      assert.deepEqual([out[offset - 3], out[offset + 5], out[offset]], [2.5, 5, 0]);
      assert.deepEqual(drainCounts(counter, offset - 10, offset + 10, 1, out), [-1, -1]);
      assert.equal(totals(counter)[9000], 1, 'outside the span: still counted');
    }
  });

  it('chooses the faster implementation by timing both', () => {
    const timings = chooseCodeCounter(1 << 16);
    assert.ok(timings.loop > 0 && timings.wasm > 0);
    assert.equal(codeCounterChoice(), timings.wasm < timings.loop ? 'wasm' : 'loop');
    assert.equal(newCodeCounter(table).kind, codeCounterChoice());
  });

  it('rejects tables its 16-bit indices cannot address', () => {
    assert.throws(() => newCodeCounter(1 << 17, 'wasm'), /code tables hold 1 to 65536 counts, got 131072/);
    assert.throws(() => newCodeCounter(0, 'loop'), /got 0/);
  });
});
