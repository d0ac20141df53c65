/**
 * Child process of `npm run bench -- llm`: a session on a decoder loaded without its external
 * data (weights read as the quantizer reaches them, int8 weights spilled as they are made),
 * saved as QDQ ONNX with external data plus msModelSlim safetensors shards (1 GB parts) and
 * description into <out>. `dynamic`: W8A8_DYNAMIC; `static`: W8A8 (AMCT op set) calibrated block
 * by block on two 16-token batches; `linear`: W8A8 on the Linear layers only (op set
 * 'msmodelslim'); `m6-linear`: m6 (searched) then that W8A8. Prints one JSON line: wall time and the process's peak RSS (VmHWM), so
 * the parent reads this step alone.
 */
import { loadModel, session } from '../sdk';
import { peakRssBytes } from '../test/llm/make-decoder';
import { DecoderShape, prefillFeeds } from '../test/llm/decoder';

const [modelPath, out, mode] = process.argv.slice(2);
(async () => {
  const started = Date.now();
  const model = loadModel(modelPath, { loadExternalData: false });
  const shape = JSON.parse(model.proto.metadata_props.find((p) => p.key === 'shape')!.value!) as DecoderShape;
  const calibData = [1, 2].map((b) => prefillFeeds(shape, [0, 1].map((r) => Array.from({ length: 16 }, (_, i) => (i * 7919 + r * 104729 + b * 15485863) % shape.vocab))));
  const s = mode === 'dynamic' ? session(model).w8a8Dynamic()
    : mode === 'static' ? session(model, { calibData }).w8a8()
      : mode === 'linear' ? session(model, { calibData }).w8a8({ opSet: 'msmodelslim' })
        : mode === 'm6-linear' ? session(model, { calibData }).withM6().w8a8({ opSet: 'msmodelslim' })
          : undefined;
  if (!s) throw new Error(`mode: got "${mode}"; expected dynamic, static, linear or m6-linear`);
  const r = await s.run();
  const saved = r.save(out, { saveType: ['onnx', 'safe_tensor'], partFileSize: 1 });
  const shards = saved.files.filter((f) => f.endsWith('.safetensors')).length;
  console.log(JSON.stringify({ seconds: (Date.now() - started) / 1000, peakRss: peakRssBytes(), layers: r.layers.length, shards, onnx: `model_${r.kind}.onnx` }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
