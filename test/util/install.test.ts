/**
 * Installing: npm reads the project's .npmrc without warnings (no keys npm does not know), and
 * onnxruntime-node's install script, which would download CUDA libraries from NuGet, is denied
 * by package.json's allowScripts. The second part installs onnxruntime-node from the lockfile
 * offline into a temp project with the same policy (skipped where npm's cache lacks the tarballs).
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { tempDir } from '../helpers';

const ROOT = path.join(__dirname, '..', '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
/** npm without the variables that would skip onnxruntime-node's script on their own (.ci/run sets one). */
function npm(args: string[], cwd: string) {
  const env = { ...process.env };
  for (const k of ['ONNXRUNTIME_NODE_INSTALL', 'ONNXRUNTIME_NODE_INSTALL_CUDA', 'npm_config_onnxruntime_node_install', 'npm_config_onnxruntime_node_install_cuda']) delete env[k];
  return spawnSync('npm', args, { cwd, encoding: 'utf8', timeout: 120000, env });
}

describe('install', () => {
  it('npm reads the project config without warnings', () => {
    const r = npm(['pkg', 'get', 'name'], ROOT);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), '"quantbook"');
    assert.doesNotMatch(r.stderr, /Unknown (project|user|env) config/, r.stderr);
  });

  it("package.json's allowScripts denies onnxruntime-node its script and names every other package with one", () => {
    assert.equal(pkg.allowScripts['onnxruntime-node'], false);
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8'));
    const withScripts = Object.entries(lock.packages as Record<string, { hasInstallScript?: boolean }>)
      .filter(([, p]) => p.hasInstallScript).map(([k]) => k.replace(/^.*node_modules\//, ''));
    assert.deepEqual(withScripts.filter((n) => !(n in pkg.allowScripts)), []);
  });

  it('an offline install of onnxruntime-node under that policy succeeds without running its script', function () {
    const dir = tempDir('quantbook-install-');
    try {
      const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8'));
      const packages = lock.packages as Record<string, { dependencies?: Record<string, string> }>;
      const keep: Record<string, unknown> = {};
      const todo = ['node_modules/onnxruntime-node'];
      while (todo.length) {
        const key = todo.pop()!;
        if (key in keep) continue;
        keep[key] = Object.fromEntries(Object.entries(packages[key]).filter(([k]) => !['dev', 'devOptional', 'peer'].includes(k)));
        for (const dep of Object.keys(packages[key].dependencies ?? {})) {
          const nested = `${key}/node_modules/${dep}`;
          todo.push(nested in packages ? nested : `node_modules/${dep}`);
        }
      }
      const root = { name: 'install-check', version: '1.0.0', private: true, dependencies: { 'onnxruntime-node': pkg.dependencies['onnxruntime-node'] } };
      fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ ...root, allowScripts: { 'onnxruntime-node': pkg.allowScripts['onnxruntime-node'] } }));
      fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify({ name: root.name, version: root.version, lockfileVersion: 3, requires: true, packages: { '': root, ...keep } }));
      const r = npm(['ci', '--offline', '--no-audit', '--no-fund'], dir);
      if (/ENOTCACHED/.test(r.stderr)) {
        console.log('      (skipped: onnxruntime-node is not in the npm cache)');
        this.skip();
      }
      assert.equal(r.status, 0, r.stderr);
      const bin = path.join(dir, 'node_modules', 'onnxruntime-node', 'bin', 'napi-v6', process.platform, process.arch);
      assert.ok(fs.existsSync(path.join(bin, 'onnxruntime_binding.node')), 'the bundled CPU binding is there');
      assert.deepEqual(fs.readdirSync(bin).filter((f) => /cuda|tensorrt/i.test(f)), [], 'no CUDA libraries were fetched');
      assert.doesNotMatch(r.stderr, /nuget|Unknown .* config/i, r.stderr);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
