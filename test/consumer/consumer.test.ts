/**
 * The published types compile in a fresh consumer project: test/consumer/fixture (strict, no
 * skipLibCheck, no esModuleInterop) is copied to a temp folder whose node_modules holds
 * `quantbook` (this repository, its built dist/*.d.ts) and the @types a fresh install of it
 * brings (apache-arrow's @types/node, tfjs-core's @types/long), and compiled with the repo's
 * TypeScript. No dependency's own type errors may leak through the public surface.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { tempDir } from '../helpers';

const ROOT = path.join(__dirname, '..', '..', '..');
const FIXTURE = path.join(ROOT, 'test', 'consumer', 'fixture');
/** The repo's TypeScript (devDependency), not node_modules/.bin/tsc, which tslab's own copy may own. */
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/** The folder of `pkg` as node resolves it from `from`: the nearest node_modules holding it (a nested copy first). */
function packageDir(pkg: string, from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', pkg);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`${pkg} is not installed (looked up from ${from})`);
  }
}

describe('published types in a fresh consumer project', () => {
  it('the fixture compiles with strict: true and without skipLibCheck', function () {
    const dir = tempDir('quantbook-consumer-');
    try {
      for (const f of fs.readdirSync(FIXTURE)) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'tsconfig.json'), 'utf8'));
      assert.equal(config.compilerOptions.strict, true);
      assert.ok(!config.compilerOptions.skipLibCheck && !config.compilerOptions.esModuleInterop);
      const modules = path.join(dir, 'node_modules');
      fs.mkdirSync(path.join(modules, '@types'), { recursive: true });
      fs.symlinkSync(ROOT, path.join(modules, 'quantbook'), 'dir');
      // what npm hoists for a consumer: the @types that quantbook's dependencies depend on
      const arrow = packageDir('apache-arrow', ROOT);
      const tfjsCore = packageDir('@tensorflow/tfjs-core', ROOT);
      fs.symlinkSync(packageDir('@types/node', arrow), path.join(modules, '@types', 'node'), 'dir');
      fs.symlinkSync(packageDir('@types/long', tfjsCore), path.join(modules, '@types', 'long'), 'dir');
      const r = spawnSync(process.execPath, [TSC, '-p', dir], { encoding: 'utf8', timeout: 300000 });
      const errors = (r.stdout + r.stderr).split('\n').filter((l) => /error TS\d+/.test(l));
      assert.deepEqual(errors, [], `${errors.length} errors:\n${errors.slice(0, 20).join('\n')}`);
      assert.equal(r.status, 0, r.stdout + r.stderr);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
