// tsc copies only .ts output: copy the non-TypeScript files the SDK reads at run time
// (the ONNX schema) next to the compiled code, and assemble the WebAssembly kernels from their
// text form (wabt) there too.
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const assets = ['sdk/onnx/onnx.proto'];
const wasm = ['sdk/kernels/count-codes.wat'];
for (const rel of assets) {
  const dest = path.join(root, 'dist', rel);
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.copyFileSync(path.join(root, rel), dest);
}
require('wabt')().then((wabt) => {
  for (const rel of wasm) {
    const module = wabt.parseWat(rel, fs.readFileSync(path.join(root, rel), 'utf8'));
    module.validate();
    const dest = path.join(root, 'dist', rel.replace(/\.wat$/, '.wasm'));
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.writeFileSync(dest, Buffer.from(module.toBinary({}).buffer));
    module.destroy();
  }
}).catch((e) => {
  console.error(e);
  process.exit(1);
});
