/**
 * Builds the MNIST CNN the QAT work is measured on as an ONNX graph (opset 11, IR 7), trains
 * it in fp32 with quantbook's own trainable executor (sdk/train) and saves it as
 * data/mnist-cnn/mnist-cnn.onnx with its training history.
 *
 *   x [N,1,28,28] → Conv 3×3 (16) → BatchNorm → Relu → MaxPool 2
 *                 → Conv 3×3 (32) → BatchNorm → Relu → MaxPool 2 → Flatten → Gemm (10) = logits
 *
 * Data: the fixed split of sdk/eval/mnist.ts (8,000 train / 2,000 test); weights from a seeded
 * generator (He init), sample order seeded: the same file on every run of one backend.
 *
 *   npm run make-mnist-cnn
 */
import * as fs from 'fs';
import * as path from 'path';
import { initBackend } from '../sdk/kernels/backend';
import { mnistSplit } from '../sdk/eval/mnist';
import { DataType } from '../sdk/onnx/dtype';
import { makeAttribute } from '../sdk/onnx/graph';
import { Model } from '../sdk/onnx/model';
import { newGraph, newModel, newNode, newValueInfo } from '../sdk/onnx/proto';
import { makeTensor } from '../sdk/onnx/tensor';
import { TrainableGraph } from '../sdk/train/executor';
import { evaluate, fit } from '../sdk/train/fit';
import { seededNormal, seededRandom } from '../sdk/util/seeded-random';

const EPOCHS = 5;
export const SAMPLE_SHAPE = [1, 28, 28];

export function buildCnn(seed = 7): Model {
  const gaussian = seededNormal(seededRandom(seed));
  const he = (dims: number[], fanIn: number) => Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => gaussian() * Math.sqrt(2 / fanIn));
  const init = [
    makeTensor('conv1.weight', DataType.FLOAT, [16, 1, 3, 3], he([16, 1, 3, 3], 9)),
    makeTensor('conv1.bias', DataType.FLOAT, [16], new Float32Array(16)),
    makeTensor('conv2.weight', DataType.FLOAT, [32, 16, 3, 3], he([32, 16, 3, 3], 144)),
    makeTensor('conv2.bias', DataType.FLOAT, [32], new Float32Array(32)),
    makeTensor('fc.weight', DataType.FLOAT, [10, 1568], he([10, 1568], 1568).map((v) => v / 2)),
    makeTensor('fc.bias', DataType.FLOAT, [10], new Float32Array(10)),
  ];
  for (const [bn, c] of [['bn1', 16], ['bn2', 32]] as const) {
    init.push(
      makeTensor(`${bn}.weight`, DataType.FLOAT, [c], new Float32Array(c).fill(1)),
      makeTensor(`${bn}.bias`, DataType.FLOAT, [c], new Float32Array(c)),
      makeTensor(`${bn}.running_mean`, DataType.FLOAT, [c], new Float32Array(c)),
      makeTensor(`${bn}.running_var`, DataType.FLOAT, [c], new Float32Array(c).fill(1)),
    );
  }
  const nodes: ReturnType<typeof newNode>[] = [];
  const node = (op: string, name: string, inputs: string[], attrs: Record<string, number | number[]> = {}) => {
    nodes.push(newNode({ op_type: op, name, input: inputs, output: [name], attribute: Object.entries(attrs).map(([k, v]) => makeAttribute(k, v)) }));
    return name;
  };
  let h = 'x';
  for (const i of [1, 2]) {
    h = node('Conv', `conv${i}`, [h, `conv${i}.weight`, `conv${i}.bias`], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [1, 1] });
    h = node('BatchNormalization', `bn${i}`, [h, `bn${i}.weight`, `bn${i}.bias`, `bn${i}.running_mean`, `bn${i}.running_var`], { epsilon: 1e-5, momentum: 0.9 });
    h = node('Relu', `relu${i}`, [h]);
    h = node('MaxPool', `pool${i}`, [h], { kernel_shape: [2, 2], strides: [2, 2] });
  }
  h = node('Flatten', 'flatten', [h], { axis: 1 });
  nodes.push(newNode({ op_type: 'Gemm', name: 'fc', input: [h, 'fc.weight', 'fc.bias'], output: ['logits'], attribute: [makeAttribute('transB', 1)] }));
  const graph = newGraph({
    name: 'mnist_cnn',
    node: nodes,
    initializer: init,
    input: [newValueInfo({ name: 'x', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'N' }, { dim_value: 1 }, { dim_value: 28 }, { dim_value: 28 }] } } } as never })],
    output: [newValueInfo({ name: 'logits', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'N' }, { dim_value: 10 }] } } } as never })],
  });
  return new Model(newModel({ ir_version: 7, opset_import: [{ domain: '', version: 11 }], producer_name: 'quantbook data/make-mnist-cnn.ts', graph }));
}

async function main(): Promise<void> {
  const backend = await initBackend();
  const { train, test } = mnistSplit();
  const graph = TrainableGraph.fromModel(buildCnn());
  const result = await fit(graph, {
    train, test, epochs: EPOCHS, batchSize: 64, learningRate: 2e-3, sampleShape: SAMPLE_SHAPE, seed: 1,
    onEpoch: (r) => console.log(`epoch ${r.epoch}: loss ${r.trainLoss.toFixed(4)}, train ${(100 * r.trainAccuracy).toFixed(2)}%, test ${(100 * r.testAccuracy).toFixed(2)}% (${r.seconds.toFixed(1)} s)`),
  });
  const dir = path.join(__dirname, '..', '..', 'data', 'mnist-cnn');
  fs.mkdirSync(dir, { recursive: true });
  graph.toModel().save(path.join(dir, 'mnist-cnn.onnx'));
  result.writeHistory(path.join(dir, 'training-history.arrow'));
  const acc = await evaluate(graph, test, { sampleShape: SAMPLE_SHAPE });
  console.log(`wrote ${dir}/mnist-cnn.onnx on backend ${backend.name}; test accuracy ${(100 * acc).toFixed(2)}% on ${test.count} digits`);
}

if (require.main === module) main().catch((e) => { console.error(e); process.exit(1); });
