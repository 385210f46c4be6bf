#!/usr/bin/env node
// Fails when a workspace member would silently drop out of a recursive check:
// `pnpm -r run typecheck` skips a package that has no `typecheck` script, and
// `pnpm -r --filter "./packages/*" run check:package` skips a package without `check:package`.
// So: every member (packages, examples, benchmarks) must have `typecheck`, and every
// publishable package must have `build` and `check:package`.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
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
}

if (problems.length > 0) {
  console.error('Workspace members that the recursive checks would skip:');
  for (const problem of problems) console.error(`  - ${problem}`);
  console.error(
    'Add the script (typecheck: "tsc -p tsconfig.json"; check:package: ' +
      '"publint --strict && attw --pack . --profile node16").',
  );
  process.exit(1);
}
