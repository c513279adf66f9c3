// Installs pagewire as an embedder would: `npm pack` of this checkout (in a copy, so that the checkout's
// build/, dist/ and prebuilds/ are left alone), then the tarball into a scratch project, offline from
// npm's cache, with a PATH holding node and npm but no compiler, make or Python. Run by
// `npm run test:package` (and .ci/run), not by `npm test`: packing compiles the addon again.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const checkout = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'pagewire-package-'));
/** What the scratch project may install: pagewire and its runtime dependencies, nothing that compiles. */
const EXPECTED_PACKAGES = ['node-addon-api', 'node-gyp-build', 'pagewire', 'xxhash-wasm'];
const PREBUILD = join('prebuilds', `${process.platform}-${process.arch}`, 'pagewire.node');

/** The environment without the npm_* variables of the `npm run` that started vitest. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_/i.test(key) && key !== 'INIT_CWD') env[key] = value;
  }
  return { ...env, ...extra };
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (result.error) throw result.error;
  return result;
}

function mustRun(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): string {
  const result = run(command, args, cwd, env);
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.status}:\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

/** A copy of the files git would commit (tracked or new, not ignored), with the checkout's node_modules. */
function copyCheckout(to: string): void {
  const files = mustRun('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], checkout, cleanEnv())
    .split('\0').filter((file) => file !== '' && existsSync(join(checkout, file)));
  for (const file of files) cpSync(join(checkout, file), join(to, file), { recursive: true });
  symlinkSync(join(checkout, 'node_modules'), join(to, 'node_modules'), 'dir');
}

/** A bin directory with node, npm, npx and a shell only: no C or C++ compiler, make or Python. */
function toollessPath(): string {
  const bin = join(work, 'bin');
  mkdirSync(bin);
  for (const tool of ['node', 'npm', 'npx', 'sh', 'env']) {
    const found = mustRun('sh', ['-c', `command -v ${tool}`], work, cleanEnv()).trim();
    symlinkSync(tool === 'node' ? process.execPath : found, join(bin, tool));
  }
  return bin;
}

/**
 * A scratch project depending on the tarball, with a lock file that pins pagewire's dependencies to the
 * versions this checkout's lock file resolved, so that `npm ci --offline` finds every tarball in npm's
 * cache (which the checkout's own `npm ci` filled) and asks the registry nothing.
 */
function scratchProject(name: string, tarball: string): string {
  const dir = join(work, name);
  mkdirSync(dir);
  const manifest = JSON.parse(readFileSync(join(checkout, 'package.json'), 'utf8'));
  const repoLock = JSON.parse(readFileSync(join(checkout, 'package-lock.json'), 'utf8'));
  const registry = mustRun('npm', ['config', 'get', 'registry'], dir, cleanEnv()).trim().replace(/\/?$/, '/');
  const packages: Record<string, unknown> = {
    '': { name, version: '1.0.0', dependencies: { pagewire: `file:${tarball}` } },
    'node_modules/pagewire': {
      version: manifest.version, resolved: `file:${tarball}`,
      integrity: `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`,
      hasInstallScript: true, license: manifest.license, dependencies: manifest.dependencies, bin: manifest.bin,
      engines: manifest.engines,
    },
  };
  for (const [path, entry] of Object.entries(repoLock.packages as Record<string, { dev?: boolean; version: string; resolved?: string }>)) {
    if (path === '' || entry.dev) continue;
    const dependency = path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const file = `${dependency.split('/').pop()}-${entry.version}.tgz`;
    packages[path] = { ...entry, resolved: entry.resolved ?? `${registry}${dependency}/-/${file}` };
  }
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, dependencies: { pagewire: `file:${tarball}` } }));
  writeFileSync(join(dir, 'package-lock.json'), JSON.stringify({ name, version: '1.0.0', lockfileVersion: 3, requires: true, packages }));
  return dir;
}

function installedPackages(project: string): string[] {
  const found: string[] = [];
  const walk = (modules: string): void => {
    if (!existsSync(modules)) return;
    for (const entry of readdirSync(modules)) {
      if (entry.startsWith('.')) continue;
      const names = entry.startsWith('@') ? readdirSync(join(modules, entry)).map((child) => `${entry}/${child}`) : [entry];
      for (const name of names) {
        found.push(name);
        walk(join(modules, name, 'node_modules'));
      }
    }
  };
  walk(join(project, 'node_modules'));
  return found.sort();
}

/** Which engine an import of the installed package picks, and the addon file node-gyp-build resolves. */
function engineOf(project: string, env: NodeJS.ProcessEnv): { kind: string; addon: string | null; stderr: string } {
  const script = "import { codecKind } from 'pagewire'; import { createRequire } from 'node:module'; " +
    "const require = createRequire(process.cwd() + '/'); let addon = null; " +
    "try { addon = require('node-gyp-build').path(process.cwd() + '/node_modules/pagewire'); } catch {} " +
    'console.log(JSON.stringify({ kind: codecKind(), addon }));';
  const result = run('node', ['--input-type=module', '-e', script], project, env);
  expect(result.status, result.stderr).toBe(0);
  return { ...JSON.parse(result.stdout), stderr: result.stderr };
}

let tarball: string;
let toolless: NodeJS.ProcessEnv;

beforeAll(() => {
  const source = join(work, 'source');
  mkdirSync(source);
  copyCheckout(source);
  // Its stdout mixes the prepack build's output with the tarball's name: the tarball is the .tgz it wrote.
  mustRun('npm', ['pack', '--pack-destination', work], source, cleanEnv());
  const tarballs = readdirSync(work).filter((file) => file.endsWith('.tgz'));
  expect(tarballs).toHaveLength(1);
  tarball = join(work, tarballs[0]!);
  toolless = cleanEnv({ PATH: toollessPath() });
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the packed tarball', () => {
  it('ships the code, the prebuilt binary, the sources a build needs and the licences, and nothing else', () => {
    const files = mustRun('tar', ['-tzf', tarball], work, cleanEnv()).split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
    expect(files).toContain(PREBUILD);
    expect(files).toContain('LICENSE');
    expect(files).toContain('native/vendor/lz4/LICENSE');
    expect(files).toContain('binding.gyp');
    expect(files).toContain('dist/src/index.js');
    expect(files).toContain('dist/src/index.d.ts');
    expect(files.filter((f) => f.startsWith('dist/bench/') || f.startsWith('bench/') || f.startsWith('test'))).toEqual([]);

    // Every source map points at sources the tarball holds.
    const maps = files.filter((f) => f.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(0);
    for (const map of maps) {
      const { sources, sourceRoot = '' } = JSON.parse(mustRun('tar', ['-xzOf', tarball, `package/${map}`], work, cleanEnv()));
      for (const source of sources as string[]) {
        expect(files, `${map} -> ${source}`).toContain(posix.join(posix.dirname(map), sourceRoot, source));
      }
    }
  });
});

describe('installed without a compiler, offline', () => {
  let project: string;

  beforeAll(() => {
    project = scratchProject('scratch', tarball);
  });

  it('finds no compiler, make or Python on the PATH it installs with', () => {
    for (const tool of ['g++', 'c++', 'gcc', 'cc', 'clang', 'make', 'python3', 'python']) {
      expect(run('sh', ['-c', `command -v ${tool}`], project, toolless).status, tool).not.toBe(0);
    }
  });

  it('installs four packages, loads the prebuilt binary, and runs pagewire demo', () => {
    const started = process.hrtime.bigint();
    mustRun('npm', ['ci', '--offline', '--no-audit', '--no-fund'], project, toolless);
    const installMs = Number(process.hrtime.bigint() - started) / 1e6;
    const packages = installedPackages(project);
    console.log(`npm ci --offline without a compiler: ${installMs.toFixed(0)} ms, ${packages.length} packages: ${packages.join(', ')}`);

    expect(packages).toEqual(EXPECTED_PACKAGES);
    expect(existsSync(join(project, 'node_modules', 'pagewire', 'build'))).toBe(false);
    const engine = engineOf(project, toolless);
    expect(engine.kind).toBe('addon');
    expect(engine.addon).toBe(join(project, 'node_modules', 'pagewire', PREBUILD));

    const demo = run('npx', ['--offline', 'pagewire', 'demo'], project, toolless);
    expect(demo.status, demo.stderr).toBe(0);
    expect(demo.stdout).toContain('target image is byte-identical to the source');
  });

  it('falls back to the TypeScript twin, with a warning, when no binary loads', () => {
    rmSync(join(project, 'node_modules', 'pagewire', 'prebuilds'), { recursive: true });
    const engine = engineOf(project, toolless);
    expect(engine.kind).toBe('twin');
    expect(engine.addon).toBe(null);
    expect(engine.stderr).toContain('PAGEWIRE_NO_ADDON');

    const demo = run('npx', ['--offline', 'pagewire', 'demo', '--size', '16MiB'], project, toolless);
    expect(demo.status, demo.stderr).toBe(0);
    expect(demo.stdout).toContain('target image is byte-identical to the source');
  });
});

describe('asked to build from source without a compiler', () => {
  it('still installs, so that the prebuilt binary or the twin can serve', () => {
    const project = scratchProject('failed-build', tarball);
    const env = { ...toolless, npm_config_build_from_source: 'true' };
    mustRun('npm', ['ci', '--offline', '--foreground-scripts', '--no-audit', '--no-fund'], project, env);
    expect(existsSync(join(project, 'node_modules', 'pagewire', 'build', 'Release', 'pagewire.node'))).toBe(false);
    expect(engineOf(project, toolless).kind).toBe('addon');
  });
});

describe('installed with --ignore-scripts', () => {
  it('still loads the prebuilt binary: the install script only builds when no prebuilt binary loads', () => {
    const project = scratchProject('ignore-scripts', tarball);
    mustRun('npm', ['ci', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], project, toolless);
    const engine = engineOf(project, toolless);
    expect(engine.kind).toBe('addon');
    expect(engine.addon).toBe(join(project, 'node_modules', 'pagewire', PREBUILD));
  });
});

describe('built from source', () => {
  it("compiles with npm's own node-gyp (pagewire does not install one) and loads that build first", () => {
    const project = scratchProject('from-source', tarball);
    const env = cleanEnv({ npm_config_build_from_source: 'true' });
    mustRun('npm', ['ci', '--offline', '--no-audit', '--no-fund'], project, env);
    expect(installedPackages(project)).not.toContain('node-gyp');
    const built = join(project, 'node_modules', 'pagewire', 'build', 'Release', 'pagewire.node');
    expect(existsSync(built)).toBe(true);
    const engine = engineOf(project, env);
    expect(engine.kind).toBe('addon');
    expect(engine.addon).toBe(built);
  });
});
