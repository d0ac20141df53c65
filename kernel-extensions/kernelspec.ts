/**
 * The Jupyter kernelspec that runs notebooks in tslab with this checkout's node_modules, so a
 * notebook's `import ... from '../dist/sdk'` and the display extensions see the same modules.
 *
 *   npm run kernel                          # installs into the user's Jupyter data folder
 *   node dist/kernel-extensions/kernelspec.js /some/dir   # or into <dir>/kernels/tslab (use with JUPYTER_PATH=/some/dir)
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');

/** Writes `<dataDir>/kernels/tslab/kernel.json`; returns its path. */
export function writeKernelSpec(dataDir: string): string {
  const tslab = path.join(ROOT, 'node_modules', '.bin', 'tslab');
  if (!fs.existsSync(tslab)) throw new Error(`tslab is not installed at ${tslab}; run npm install first`);
  const dir = path.join(dataDir, 'kernels', 'tslab');
  fs.mkdirSync(dir, { recursive: true });
  const spec = { argv: [tslab, 'kernel', '--config-path', '{connection_file}'], display_name: 'TypeScript (tslab, quantbook)', language: 'typescript' };
  const file = path.join(dir, 'kernel.json');
  fs.writeFileSync(file, `${JSON.stringify(spec, null, 2)}\n`);
  return file;
}

function userDataDir(): string {
  if (process.env.JUPYTER_DATA_DIR) return process.env.JUPYTER_DATA_DIR;
  if (process.platform === 'darwin') return path.join(os.homedir(), 'Library', 'Jupyter');
  if (process.platform === 'win32') return path.join(process.env.APPDATA ?? os.homedir(), 'jupyter');
  return path.join(process.env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share'), 'jupyter');
}

if (require.main === module) {
  console.log(`wrote ${writeKernelSpec(process.argv[2] ?? userDataDir())}`);
}
