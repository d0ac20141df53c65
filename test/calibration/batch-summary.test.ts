import { strict as assert } from 'assert';
import * as ort from 'onnxruntime-node';
import { DataType, Observer, PerChannelObserver, QuantbookError, Runner, calibrate, createObserver, defaultTargets, loadModel, loopReductions, qparamsFromRange, resolveSpec } from '../../sdk';
import { BatchSummary, FINE_BINS, codeScale, summaryPlan } from '../../sdk/calibration/batch-summary';
import { roundHalfEven } from '../../sdk/kernels/quant';
import { Histogram } from '../../sdk/kernels/histogram';
import { MODELS, randomFloats } from '../helpers';
import { tinyModel } from '../build';

const recBatch = (seed: number) => ({ x: new ort.Tensor('float32', randomFloats(2 * 3 * 48 * 160, seed), [2, 3, 48, 160]) });

describe('in-graph batch summaries (calibration without copying activations out)', () => {
  const model = loadModel(MODELS.rec);
  const batches = [recBatch(11), recBatch(12)];
  const activations = new Map<string, Float32Array[]>();

  before(async () => {
    const runner = await Runner.create(model, { expose: defaultTargets(model).map((t) => t.tensor) });
    for (const b of batches) {
      const { exposed } = await runner.run(b);
      for (const [name, t] of Object.entries(exposed)) activations.set(name, [...(activations.get(name) ?? []), t.data as Float32Array]);
    }
    await runner.dispose();
  });

  it('returns small reductions and int16 codes only, appended in reverse order of their tensors', () => {
    const targets = defaultTargets(model).map((t) => t.tensor);
    const plan = summaryPlan(model, targets.map((tensor) => ({ tensor, histogram: true })));
    const g = plan.model.graph;
    assert.deepEqual(g.outputNames, plan.outputNames);
    assert.ok(!plan.outputNames.some((o) => targets.includes(o)), 'no activation is an output');
    const codes = g.nodes.filter((n) => n.op_type === 'QuantizeLinear' && n.domain === 'com.microsoft');
    assert.equal(codes.length, targets.length);
    // the file order of the summary nodes is the reverse of the tensors' production order
    const fileOrder = plan.model.proto.graph!.node.filter((n) => n.op_type === 'ReduceMin' && targets.includes(n.input[0])).map((n) => n.input[0]);
    const produced = targets.map((t) => Math.max(-1, g.nodes.findIndex((n) => n.output.includes(t))));
    const sortedDesc = [...targets].sort((a, b) => produced[targets.indexOf(b)] - produced[targets.indexOf(a)]);
    assert.deepEqual(fileOrder, sortedDesc);
    assert.equal(model.graph.outputNames.length, 1, "the caller's model is untouched");
  });

  // the moments of a tensor over both batches, from the exposed values
  const moments = (tensor: string) => {
    const values = activations.get(tensor)!;
    const m = values.map((v) => loopReductions.moments(v));
    const count = m.reduce((a, x) => a + x.count, 0);
    const mean = m.reduce((a, x) => a + x.sum, 0) / count;
    const std = Math.sqrt(Math.max(0, m.reduce((a, x) => a + x.sumSq, 0) / count - mean * mean));
    return { count, mean, std };
  };

  it('min/max equal the exposed values exactly; mean/std within 1e-3 (float32 sums in ORT)', async () => {
    const inGraph = await calibrate(model, batches, { observer: 'sigma', collect: 'in-graph' });
    assert.equal(inGraph.metadata.collection, 'in-graph');
    assert.equal(inGraph.metadata.histogram_values, 'no histograms');
    for (const row of inGraph.tensorRows()) {
      const values = activations.get(row.tensor)!;
      const min = Math.min(...values.map((v) => loopReductions.minMax(v).min));
      const max = Math.max(...values.map((v) => loopReductions.minMax(v).max));
      assert.equal(row.min, min, row.tensor);
      assert.equal(row.max, max, row.tensor);
      const { count, mean, std } = moments(row.tensor);
      assert.equal(row.count, count);
      assert.ok(Math.abs(row.mean - mean) <= 1e-3 * Math.max(std, 1e-6), `${row.tensor}: mean ${row.mean} vs ${mean}`);
      assert.ok(Math.abs(row.std - std) <= 1e-3 * Math.max(std, 1e-6), `${row.tensor}: std ${row.std} vs ${std}`);
    }
  });

  it('histogramSample 0: the codes are the ones QuantizeLinear gives every value, on the grid codeScale computes (bit for bit)', async () => {
    const targets = defaultTargets(model).map((t) => t.tensor);
    const plan = summaryPlan(model, targets.map((tensor) => ({ tensor, histogram: true })));
    assert.equal(plan.sampling, 'every value');
    const runner = await Runner.create(plan.model);
    const { outputs } = await runner.run(batches[0]);
    await runner.dispose();
    for (const tensor of targets) {
      const values = activations.get(tensor)![0];
      const summary = plan.read(outputs, tensor) as BatchSummary;
      if (!(summary.max > summary.min)) continue;
      const scale = codeScale(summary.min, summary.max);
      // QuantizeLinear to int16 with zero point 0 (saturating), shifted to an index
      const offset = FINE_BINS - 1;
      const expected = new Float64Array(2 * FINE_BINS);
      for (const v of values) expected[Math.min(32767, Math.max(-32768, roundHalfEven(Math.fround(v / scale)))) + offset]++;
      const h = summary.histogram!;
      const first = expected.findIndex((c) => c > 0);
      assert.deepEqual([...h.counts], [...expected.subarray(first, first + h.counts.length)], tensor);
      assert.equal(h.counts.reduce((x, y) => x + y, 0), values.length, tensor);
      // the grid: FINE_BINS - 1 steps to the larger of |min| and max, so at least FINE_BINS bins over the range
      assert.ok((summary.max - Math.min(summary.min, 0)) / scale >= FINE_BINS - 1 - 1e-3, tensor);
      assert.equal(Math.max(-summary.min, summary.max) / scale <= FINE_BINS - 1 + 1e-3, true, tensor);
      // the histogram spans the batch's range exactly (end bins cut at min and max)
      assert.deepEqual([h.lo, h.hi], [summary.min, summary.max], tensor);
    }
  });

  it('histogramSample N: codes for N to 2N values of each larger tensor, every k-th value (k odd); smaller tensors whole; stats otherwise exact', async () => {
    const targets = defaultTargets(model).map((t) => t.tensor);
    const plan = summaryPlan(model, targets.map((tensor) => ({ tensor, histogram: true })), { histogramSample: 4096 });
    assert.equal(plan.sampling, 'about 4096 values per tensor and batch (every k-th value, odd k)');
    assert.equal(plan.model.opsetVersion(''), 13, 'rec (opset 9) is raised to 13 for Slice with steps');
    const runner = await Runner.create(plan.model);
    const { outputs } = await runner.run(batches[0]);
    await runner.dispose();
    let sampledTensors = 0;
    for (const tensor of targets) {
      const values = activations.get(tensor)![0];
      const summary = plan.read(outputs, tensor) as BatchSummary;
      assert.equal(summary.count, values.length);
      assert.equal(summary.min, loopReductions.minMax(values).min);
      assert.equal(summary.max, loopReductions.minMax(values).max);
      const total = summary.histogram!.counts.reduce((x, y) => x + y, 0);
      // the weighted sample stands for the whole tensor (+ at most the two end values it may have missed)
      assert.ok(total >= values.length - 1e-6 && total <= values.length + 2 + 1e-6, `${tensor}: ${total} vs ${values.length}`);
      if (values.length >= 2 * 4096) sampledTensors++;
    }
    assert.ok(sampledTensors >= 10, `${sampledTensors} tensors were large enough to sample`);
    const stride = (size: number) => 2 * Math.floor(size / 8192) + 1;
    assert.deepEqual([1000, 8191, 8192, 30000].map(stride), [1, 1, 3, 7]);
  });

  it('histogramSample N samples every channel: an outlier channel keeps its share of the histogram', async () => {
    // [2, 240, 12, 80] like the rec tensor whose large values live in 4 of 240 channels; a stride
    // over whole rows (12 per channel) larger than 12 skipped those channels
    const dims = [2, 240, 12, 80];
    const perChannel = 12 * 80;
    const x = new Float32Array(dims.reduce((a, b) => a * b));
    const outliers = new Set([132, 197, 207, 211]);
    for (let i = 0; i < x.length; i++) {
      const c = Math.floor(i / perChannel) % 240;
      x[i] = outliers.has(c) ? 2 + 0.5 * Math.sin(i) : 0.5 * Math.sin(0.37 * i);
    }
    const tiny = loadModel(tinyModel({ inputs: [{ name: 'x', shape: dims }], outputs: ['y'], nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['y'] }] }));
    const plan = summaryPlan(tiny, [{ tensor: 'x', histogram: true }], { histogramSample: 4096 });
    const runner = await Runner.create(plan.model);
    const { outputs } = await runner.run({ x: new ort.Tensor('float32', x, dims) });
    await runner.dispose();
    const h = (plan.read(outputs, 'x') as BatchSummary).histogram!;
    let above = 0;
    h.counts.forEach((c, k) => { if (h.lo + (k + 0.5) * (h.hi - h.lo) / h.bins > 1.2) above += c; });
    const share = above / x.length;
    assert.ok(Math.abs(share - 4 / 240) < 0.2 * (4 / 240), `mass above 1.2: ${(100 * share).toFixed(2)}% of the values, true ${(100 * 4 / 240).toFixed(2)}%`);
  });

  it('percentile ranges from exact fine histograms are within one bin of those from the values', async () => {
    const a = await calibrate(model, batches, { observer: 'percentile', collect: 'in-graph', histogramSample: 0 });
    assert.equal(a.metadata.histogram_values, 'every value');
    const b = await calibrate(model, batches, { observer: 'percentile', collect: 'exposed' });
    assert.equal(b.metadata.collection, 'exposed');
    const rowsB = b.tensorRows();
    for (const [i, ra] of a.tensorRows().entries()) {
      const rb = rowsB[i];
      const bin = (rb.histHi! - rb.histLo!) / rb.histogram!.length;
      assert.ok(Math.abs(ra.clipMin - rb.clipMin) <= bin && Math.abs(ra.clipMax - rb.clipMax) <= bin, `${ra.tensor}: [${ra.clipMin}, ${ra.clipMax}] vs [${rb.clipMin}, ${rb.clipMax}], bin ${bin}`);
    }
  });

  it('HFMG on the fine histograms quantizes the real activations as well as HFMG on the values: exact within 2%, sampled (16384 values a batch: a third of the larger tensors) within 5%', async () => {
    const spec = resolveSpec({});
    const error = (rows: ReturnType<typeof b.tensorRows>) => rows.reduce((sum, r) => {
      const q = qparamsFromRange([r.clipMin], [r.clipMax], spec);
      return sum + activations.get(r.tensor)!.reduce((s, v) => s + loopReductions.qdqSquaredError(v, q.scale[0], q.zeroPoint[0], q.qmin, q.qmax), 0);
    }, 0);
    const b = await calibrate(model, batches, { observer: 'histogram', collect: 'exposed' });
    const exact = await calibrate(model, batches, { observer: 'histogram', collect: 'in-graph', histogramSample: 0 });
    const sampled = await calibrate(model, batches, { observer: 'histogram', collect: 'in-graph', histogramSample: 16384 });
    const [ee, es, eb] = [error(exact.tensorRows()), error(sampled.tensorRows()), error(b.tensorRows())];
    assert.ok(ee <= eb * 1.02, `in-graph exact ${ee} vs exposed ${eb}`);
    assert.ok(es <= eb * 1.05, `in-graph sampled ${es} vs exposed ${eb}`);
  });

  it("'auto' exposes where summaries cannot serve (per-channel histograms), says so, and 'in-graph' refuses it with the reason", async () => {
    const spec = { perChannel: true, channelAxis: 1 };
    const perChannel = await calibrate(model, batches.slice(0, 1), { observer: 'percentile', spec, tensors: ['p2o.Add.31'] });
    assert.match(perChannel.metadata.collection, /^exposed \(per-channel histograms need the values\)$/);
    await assert.rejects(calibrate(model, batches, { observer: 'histogram', spec, collect: 'in-graph' }), (e: QuantbookError) => e.code === 'UNSUPPORTED' && /per-channel histograms need the values; use 'exposed' or 'auto'/.test(e.message));
    // ranges of more than 8 bits: min/max summaries serve, int16 fine histograms do not
    assert.equal((await calibrate(model, batches.slice(0, 1), { observer: 'minmax', spec: { numBits: 16 }, tensors: ['p2o.Add.31'] })).metadata.collection, 'in-graph');
    assert.match((await calibrate(model, batches.slice(0, 1), { observer: 'histogram', spec: { numBits: 16 }, tensors: ['p2o.Add.31'] })).metadata.collection, /^exposed \(the int16 fine histogram is too coarse for 16-bit ranges\)$/);
    await assert.rejects(calibrate(model, batches, { collect: 'fast' as never }), /collect: got "fast"; expected one of 'auto', 'in-graph', 'exposed'/);
  });

  it('per-channel minmax and sigma run in-graph (one reduction per channel) and equal the exposed values per channel', async () => {
    for (const observer of ['minmax', 'sigma'] as const) {
      const [inGraph, exposed] = await Promise.all((['in-graph', 'exposed'] as const).map((collect) => calibrate(model, batches, { observer, spec: { perChannel: true, channelAxis: 1 }, collect })));
      assert.equal(inGraph.metadata.collection, 'in-graph');
      let channels = 0;
      for (const t of defaultTargets(model)) {
        const [g, e] = [inGraph.observers.get(t.tensor) as PerChannelObserver, exposed.observers.get(t.tensor) as PerChannelObserver];
        assert.equal(g.channels.length, e.channels.length, t.tensor);
        g.channels.forEach((gc, c) => {
          const [gs, es] = [gc.state(), e.channels[c].state()];
          assert.deepEqual([gs.min, gs.max, gs.count, gs.batches], [es.min, es.max, es.count, es.batches], `${t.tensor}[${c}]`);
          // ORT sums in float32: the error of a moment is relative to the mean square, not to the variance
          const meanSquare = es.sumSq / es.count;
          const [vg, ve] = [gc.std ** 2, e.channels[c].std ** 2];
          assert.ok(Math.abs(gc.mean - e.channels[c].mean) <= 1e-5 * Math.sqrt(meanSquare), `${t.tensor}[${c}] mean ${gc.mean} vs ${e.channels[c].mean}`);
          assert.ok(Math.abs(vg - ve) <= 1e-4 * meanSquare, `${t.tensor}[${c}] variance ${vg} vs ${ve} (mean square ${meanSquare})`);
        });
        const [qg, qe] = [g.qparams(), e.qparams()];
        if (observer === 'minmax') {
          assert.deepEqual([qg.scale, qg.zeroPoint], [qe.scale, qe.zeroPoint], t.tensor);
        } else {
          // mean ± k·std: within the moments' float32 error
          qg.scale.forEach((s, c) => assert.ok(Math.abs(s - qe.scale[c]) <= 1e-3 * qe.scale[c], `${t.tensor}[${c}] scale ${s} vs ${qe.scale[c]}`));
          qg.zeroPoint.forEach((z, c) => assert.ok(Math.abs(z - qe.zeroPoint[c]) <= 1, `${t.tensor}[${c}] zero point`));
        }
        channels += g.channels.length;
      }
      assert.ok(channels > 1000, `${channels} channels compared`);
    }
  });

  it('non-float tensors are dropped with skipNonFloat and named without it', async () => {
    const shapeTensor = model.graph.nodes.find((n) => n.op_type === 'Shape')!.output[0];
    const r = await calibrate(model, batches.slice(0, 1), { tensors: ['p2o.Add.31', shapeTensor], skipNonFloat: true });
    assert.equal(r.metadata.collection, 'in-graph');
    assert.deepEqual(r.targets.map((t) => t.tensor), ['p2o.Add.31']);
    await assert.rejects(calibrate(model, batches.slice(0, 1), { tensors: [shapeTensor] }), new RegExp(`"${shapeTensor}" holds int64 values; only float32`));
  });

  it('an observer fed summaries keeps the state it keeps from values', () => {
    const values = randomFloats(10000, 3, -2, 5);
    const fromValues = createObserver('histogram') as Observer;
    fromValues.observe(values);
    const { min, max } = loopReductions.minMax(values);
    const m = loopReductions.moments(values);
    // the fine histogram of these values, as the summary graph's codes would give it
    const lo = Math.min(min, 0);
    const scale = (Math.max(max, 0) - lo) / (FINE_BINS - 1);
    const zp = Math.round(-lo / scale);
    const counts = new Float64Array(FINE_BINS);
    for (const v of values) counts[Math.min(FINE_BINS - 1, Math.max(0, Math.round(v / scale) + zp))]++;
    const fine = new Histogram(FINE_BINS, (-zp - 0.5) * scale, (FINE_BINS - 1 - zp + 0.5) * scale, counts);
    const fromSummary = createObserver('histogram') as Observer;
    fromSummary.observeSummary({ min, max, ...m, histogram: fine });
    const [sa, sb] = [fromValues.state(), fromSummary.state()];
    assert.deepEqual([sb.min, sb.max, sb.count, sb.batches], [sa.min, sa.max, sa.count, sa.batches]);
    assert.ok(Math.abs(sb.histogram!.counts.reduce((x: number, y: number) => x + y, 0) - 10000) < 1e-6);
    const qa = fromValues.qparams();
    const qb = fromSummary.qparams();
    assert.ok(Math.abs(qa.scale[0] - qb.scale[0]) / qa.scale[0] < 0.02, `${qa.scale[0]} vs ${qb.scale[0]}`);
    assert.throws(() => fromSummary.observeSummary({ min: 0, max: 1, count: 3, sum: 1, sumSq: 1 }), /needs the batch's values or a histogram of them/);
    assert.throws(() => fromSummary.observeSummary({ min: NaN, max: 1, count: 3, sum: 1, sumSq: 1, histogram: fine }), /NaN or infinite/);
  });
});

describe('in-graph batch summaries by rank and opset', () => {
  // a [n, 4, h, w] activation, and the same values as rank 2 and rank 3
  const modelAt = (opset: number) => loadModel(tinyModel({
    opset,
    inputs: [{ name: 'x', shape: ['n', 4, 'h', 'w'] }],
    outputs: ['b', 'c'],
    initializers: [
      { name: 'to2', type: DataType.INT64, dims: [2], data: BigInt64Array.of(0n, -1n) },
      { name: 'to3', type: DataType.INT64, dims: [3], data: BigInt64Array.of(0n, 0n, -1n) },
    ],
    nodes: [
      { op: 'Relu', inputs: ['x'], outputs: ['a'] },
      { op: 'Reshape', inputs: ['a', 'to2'], outputs: ['b'] },
      { op: 'Reshape', inputs: ['a', 'to3'], outputs: ['c'] },
    ],
  }));
  const batch = (seed: number, n: number) => ({ x: new ort.Tensor('float32', randomFloats(n * 4 * 6 * 5, seed, -3, 2), [n, 4, 6, 5]) });
  const tensors = ['a', 'b', 'c'];

  for (const opset of [11, 13, 18]) {
    it(`opset ${opset}: rank ≥ 3 tensors reduce to per-(batch, channel) partials, the rest fully; statistics equal the values`, async () => {
      const model = modelAt(opset);
      const plan = summaryPlan(model, tensors.map((tensor) => ({ tensor, histogram: false })));
      const axesOf = (tensor: string, op: string) => {
        const n = plan.model.graph.nodes.find((x) => x.op_type === op && x.input[0] === tensor)!;
        const attr = n.attribute.find((a) => a.name === 'axes');
        return attr ? attr.ints.map(Number) : n.input[1] ? Array.from(plan.model.graph.constantValue(n.input[1])!.data as BigInt64Array, Number) : [];
      };
      for (const op of ['ReduceMin', 'ReduceMax', 'ReduceSum']) assert.deepEqual([axesOf('a', op), axesOf('b', op), axesOf('c', op)], [[2, 3], [], [2]], `${op} at opset ${opset}`);
      assert.deepEqual(axesOf('a', 'ReduceSumSquare'), [], 'sums of squares stay full reductions (ORT has no fast partial form)');
      const batches = [batch(1, 2), batch(2, 3)];
      for (const observer of ['sigma', 'histogram'] as const) {
        const [inGraph, exposed] = await Promise.all(['in-graph', 'exposed'].map((collect) => calibrate(model, batches, { tensors, observer, collect: collect as 'in-graph' | 'exposed' })));
        assert.equal(inGraph.metadata.collection, 'in-graph');
        for (const t of tensors) {
          const [g, e] = [inGraph.observers.get(t) as Observer, exposed.observers.get(t) as Observer];
          const [gs, es] = [g.state(), e.state()];
          assert.deepEqual([gs.min, gs.max, gs.count, gs.batches], [es.min, es.max, es.count, 2], `${observer} ${t}`);
          assert.ok(Math.abs(g.mean - e.mean) < 1e-6 && Math.abs(g.std - e.std) < 1e-6, `${observer} ${t}: mean/std ${g.mean}/${g.std} vs ${e.mean}/${e.std}`);
          const [sg, se] = [g.qparams().scale[0], e.qparams().scale[0]];
          assert.ok(Math.abs(sg - se) / se < (observer === 'histogram' ? 0.01 : 1e-6), `${observer} ${t}: scale ${sg} vs ${se}`);
        }
      }
      // per channel, along an axis other than 1 too: every axis but the channel axis reduced
      for (const [tensor, channelAxis] of [['a', 2], ['b', 1], ['c', 1]] as const) {
        const spec = { perChannel: true, channelAxis };
        const channelPlan = summaryPlan(model, [{ tensor, histogram: false, channelAxis }]);
        const reductions = channelPlan.model.graph.nodes.filter((x) => x.op_type?.startsWith('Reduce'));
        assert.deepEqual(reductions.map((x) => x.op_type).sort(), ['ReduceMax', 'ReduceMin', 'ReduceSum', 'ReduceSum'], 'squares summed by ReduceSum over Mul');
        const expectedAxes = [0, 1, 2, 3].slice(0, tensor === 'a' ? 4 : tensor === 'b' ? 2 : 3).filter((i) => i !== channelAxis);
        for (const x of reductions) {
          const attr = x.attribute.find((a) => a.name === 'axes');
          const asInput = opset >= (x.op_type === 'ReduceSum' ? 13 : 18);
          assert.equal(!attr, asInput, `${x.op_type}: axes as an attribute before opset ${x.op_type === 'ReduceSum' ? 13 : 18}, an input from then`);
          assert.deepEqual(attr ? attr.ints.map(Number) : Array.from(channelPlan.model.graph.constantValue(x.input[1])!.data as BigInt64Array, Number), expectedAxes);
        }
        const [inGraph, exposed] = await Promise.all((['in-graph', 'exposed'] as const).map((collect) => calibrate(model, batches, { tensors: [tensor], observer: 'sigma', spec, collect })));
        const [g, e] = [inGraph.observers.get(tensor) as PerChannelObserver, exposed.observers.get(tensor) as PerChannelObserver];
        assert.equal(g.channels.length, e.channels.length);
        g.channels.forEach((gc, c) => {
          const [gs, es] = [gc.state(), e.channels[c].state()];
          assert.deepEqual([gs.min, gs.max, gs.count], [es.min, es.max, es.count], `${tensor} axis ${channelAxis} channel ${c}`);
          assert.ok(Math.abs(gc.mean - e.channels[c].mean) < 1e-6 && Math.abs(gc.std - e.channels[c].std) < 1e-6);
        });
      }
      await assert.rejects(calibrate(model, batches, { tensors: ['b'], spec: { perChannel: true, channelAxis: 2 }, collect: 'in-graph' }), /channel axis 2 needs a tensor of known rank ≥ 2 above it \(rank 2\)/);
      // a NaN in a partial is not lost when the partials are folded
      const bad = batch(3, 2);
      (bad.x.data as Float32Array)[7] = NaN;
      await assert.rejects(calibrate(model, [bad], { tensors: ['a'], observer: 'minmax', collect: 'in-graph' }), /NaN/);
    });
  }
});
