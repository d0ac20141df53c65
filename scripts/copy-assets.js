// tsc copies only .ts output: copy the non-TypeScript files the SDK reads at run time
// (the ONNX schema) next to the compiled code.
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const assets = ['sdk/onnx/onnx.proto'];
for (const rel of assets) {
  const dest = path.join(root, 'dist', rel);
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.copyFileSync(path.join(root, rel), dest);
}
