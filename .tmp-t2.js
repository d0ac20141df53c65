const qb = require('/work/main/dist/sdk');
const { mnistSplit } = require('/work/main/dist/sdk/eval/mnist');
const ort = require('onnxruntime-node');
(async () => {
  const { train, test } = mnistSplit();
  const file = '/work/main/data/transformer/mnist-transformer.onnx';
  const batch = (set, start, n) => ({ x: new ort.Tensor('float32', set.images.slice(start * 784, (start + n) * 784), [n, 28, 28]) });
  const calib = [0, 1, 2, 3].map((i) => batch(train, i * 64, 64));
  const acc = async (m) => { const s = await ort.InferenceSession.create(m); const o = (await s.run(batch(test, 0, test.count))).logits.data; let c = 0; for (let i = 0; i < test.count; i++) { let b = 0; for (let j = 1; j < 10; j++) if (o[i*10+j] > o[i*10+b]) b = j; if (b === test.labels[i]) c++; } return c / test.count; };
  console.log('fp32', await acc(file));
  const r = await qb.session(file, { calibData: calib }).w8a8('minmax').run();
  console.log('w8a8', await acc(r.qdq.toBytes()), 'layers', r.layers.length);
  const cmp = await r.compare([batch(test, 0, 256)]);
  for (const c of cmp) console.log(c.layer, c.tensor, c.sqnrDb.toFixed(2));
})();
