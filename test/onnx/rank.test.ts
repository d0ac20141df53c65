import { strict as assert } from 'assert';
import { DataType, Runner, defaultTargets, loadModel } from '../../sdk';
import { makeAttribute } from '../../sdk/onnx/graph';
import { inferRanks } from '../../sdk/onnx/rank';
import { FEEDS, MODELS } from '../helpers';
import { tinyModel } from '../build';

describe('static rank inference', () => {
  for (const key of ['det', 'rec', 'cls', 'vad'] as const) {
    it(`${key}: every rank it decides is the rank ONNX Runtime produces`, async () => {
      const model = loadModel(MODELS[key]);
      const ranks = inferRanks(model.graph);
      const tensors = model.graph.nodes.flatMap((n) => n.output).filter((o) => o && ranks.has(o));
      const runner = await Runner.create(model, { expose: tensors });
      const { exposed } = await runner.run(FEEDS[key]());
      await runner.dispose();
      for (const t of tensors) assert.equal(ranks.get(t), exposed[t].dims.length, t);
      // every node output but Constants' (rank unknown until read) and the If's (subgraph outputs) is decided
      const undecided = model.graph.nodes.filter((n) => !['Constant', 'If'].includes(n.op_type!)).flatMap((n) => n.output.slice(0, 1)).filter((o) => !ranks.has(o));
      if (key !== 'vad') assert.deepEqual(undecided, [], `${key}: undecided ranks`);
      // the calibration targets (what batch summaries reduce) all have a rank
      for (const t of defaultTargets(model)) assert.ok(ranks.has(t.tensor), `${key}: ${t.tensor}`);
    });
  }

  it('follows shape arithmetic into Reshape, and leaves what depends on dimension values unknown', () => {
    const int64 = (name: string, values: number[]) => ({ name, type: DataType.INT64, dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) });
    const bytes = tinyModel({
      opset: 13,
      inputs: [{ name: 'x', shape: ['n', 4, 'h', 'w'] }, { name: 'v', shape: [4] }],
      outputs: ['flat', 'rows', 'sq', 'usq', 'mm', 'vec', 'red', 'redAll', 'keep', 'squeezeAll'],
      initializers: [int64('minus1', [-1]), int64('axes0', [0]), int64('two', [2]), int64('axes23', [2, 3])],
      nodes: [
        { op: 'Shape', inputs: ['x'], outputs: ['shape'] },
        { op: 'Slice', inputs: ['shape', 'axes0', 'two'], outputs: ['lead'] }, // shape[0:2]: 2 values
        { op: 'Concat', inputs: ['lead', 'minus1'], outputs: ['target'], attrs: [makeAttribute('axis', 0)] },
        { op: 'Reshape', inputs: ['x', 'target'], outputs: ['rows'] }, // rank 3
        { op: 'Flatten', inputs: ['x'], outputs: ['flat'] },
        { op: 'Squeeze', inputs: ['rows', 'axes0'], outputs: ['sq'] },
        { op: 'Unsqueeze', inputs: ['rows', 'axes23'], outputs: ['usq'] },
        { op: 'MatMul', inputs: ['x', 'v'], outputs: ['mm'] }, // [n, 4, h, w] x [4]: rank 3
        { op: 'MatMul', inputs: ['v', 'v'], outputs: ['vec'] }, // dot product: rank 0
        { op: 'ReduceSum', inputs: ['x', 'axes23'], outputs: ['red'], attrs: [makeAttribute('keepdims', 0)] },
        { op: 'ReduceMax', inputs: ['x'], outputs: ['redAll'], attrs: [makeAttribute('keepdims', 0)] },
        { op: 'ReduceMean', inputs: ['x'], outputs: ['keep'] },
        { op: 'Squeeze', inputs: ['x'], outputs: ['squeezeAll'] }, // which axes are 1 is not static
      ],
    });
    const ranks = inferRanks(loadModel(bytes).graph);
    assert.deepEqual(
      Object.fromEntries(['rows', 'flat', 'sq', 'usq', 'mm', 'vec', 'red', 'redAll', 'keep', 'squeezeAll'].map((t) => [t, ranks.get(t)])),
      { rows: 3, flat: 2, sq: 2, usq: 5, mm: 3, vec: 0, red: 2, redAll: 0, keep: 4, squeezeAll: undefined },
    );
  });
});
