#!/usr/bin/env node
// Fails when a workspace member would silently drop out of a recursive check:
// `pnpm -r run typecheck` skips a package that has no `typecheck` script, and
// `pnpm -r --filter "./packages/*" run check:package` skips a package without `check:package`.
// So: every member (packages, examples, benchmarks) must have `typecheck`, and every
// publishable package must have `build` and `check:package`. A publishable package must also
// be ready for a registry: its LICENSE file shipped, and the metadata a registry page shows.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = process.cwd();
const listed = JSON.parse(
  execFileSync('pnpm', ['-r', 'ls', '--depth', '-1', '--json'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }),
);

const problems = [];
for (const { path } of listed) {
  if (path === root) continue;
  const where = relative(root, path);
  const pkg = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8'));
  const scripts = pkg.scripts ?? {};
  const need = ['typecheck'];
  if (pkg.private !== true) need.push('build', 'check:package');
  for (const script of need) {
    if (typeof scripts[script] !== 'string') {
      problems.push(`${where} (${pkg.name ?? 'unnamed'}): no "${script}" script`);
    }
  }
  if (pkg.private !== true) problems.push(...registryProblems(where, path, pkg));
}

/** What a publishable package lacks for its registry page and its license. */
function registryProblems(where, path, pkg) {
  const found = [];
  const name = `${where} (${pkg.name ?? 'unnamed'})`;
  if (typeof pkg.license !== 'string') found.push(`${name}: no "license"`);
  if (!existsSync(join(path, 'LICENSE'))) found.push(`${name}: no LICENSE file`);
  if (!Array.isArray(pkg.files) || !pkg.files.includes('LICENSE')) {
    found.push(`${name}: "files" does not ship LICENSE`);
  }
  if (typeof pkg.repository?.url !== 'string' || typeof pkg.repository?.directory !== 'string') {
    found.push(`${name}: "repository" needs url and directory`);
  }
  if (typeof pkg.homepage !== 'string') found.push(`${name}: no "homepage"`);
  if (typeof pkg.bugs?.url !== 'string' && typeof pkg.bugs !== 'string') {
    found.push(`${name}: no "bugs"`);
  }
  if (!Array.isArray(pkg.keywords) || pkg.keywords.length === 0) {
    found.push(`${name}: no "keywords"`);
  }
  return found;
}

if (problems.length > 0) {
  console.error('Workspace members that the checks would skip, or that are not ready to publish:');
  for (const problem of problems) console.error(`  - ${problem}`);
  console.error(
    'Add the script (typecheck: "tsc -p tsconfig.json"; check:package: ' +
      '"publint --strict && attw --pack . --profile node16").',
  );
  process.exit(1);
}
