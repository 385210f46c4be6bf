/**
 * What a new user meets first, run as they would run it: the README's quickstart compiled by
 * `tsc` with the settings `tsc --init` writes and run on this Node.js, against the built
 * package; and the demo (`make demo`), whose output must explain itself. Both need the build
 * (`make test` builds before it tests).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'watchtower-first-contact-'));

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

/** The first TypeScript block after `heading` in the README. */
function readmeBlock(heading: string): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf(heading));
  const match = /```ts\n([\s\S]*?)```/.exec(section);
  if (match?.[1] === undefined) throw new Error(`no ts block after ${heading} in README.md`);
  return match[1];
}

/** A package of `root` made resolvable from `work`, as an install would. */
function link(name: string, target: string): void {
  const at = join(work, 'node_modules', name);
  mkdirSync(dirname(at), { recursive: true });
  symlinkSync(target, at, 'dir');
}

describe('first contact', () => {
  it('runs the README quickstart compiled with the tsconfig that tsc --init writes', () => {
    writeFileSync(join(work, 'package.json'), JSON.stringify({ type: 'module' }));
    // What `tsc --init` of TypeScript 5.9 writes, in substance.
    writeFileSync(
      join(work, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'esnext',
          module: 'nodenext',
          strict: true,
          skipLibCheck: true,
          outDir: 'out',
        },
        include: ['quickstart.ts'],
      }),
    );
    writeFileSync(join(work, 'quickstart.ts'), readmeBlock('## Quickstart'));
    link('@watchtower/core', join(root, 'packages/core'));
    link('zod', join(root, 'node_modules/zod'));

    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', work], {
      stdio: 'pipe',
    });
    const run = spawnSync(process.execPath, [join(work, 'out/quickstart.js')], {
      cwd: work,
      encoding: 'utf8',
    });

    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('welcome ada@example.com');
  });

  it('tells what exists today: packages marked planned have no code, and npm installs name tarballs', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const rows = [
      ...readme.matchAll(/^\| \[?`@watchtower\/([a-z]+)`\]?[^|]*\|[^|]*\| *([^|]*?) *\|$/gm),
    ];
    expect(rows.length).toBeGreaterThanOrEqual(6);
    for (const [, name, status] of rows) {
      const exists = existsSync(join(root, 'packages', String(name), 'package.json'));
      expect({ name, planned: String(status).startsWith('planned') }).toEqual({
        name,
        planned: !exists,
      });
    }
    // Until the packages are published, an `npm install` of them is only the promise of later.
    const installs = readme
      .split(/(?<=[.:])\s/)
      .filter((sentence) => /npm install[^`\n]*@watchtower\//.test(sentence));
    for (const sentence of installs) expect(sentence).toMatch(/once they are on npm/i);
  });

  it('runs the demo, whose every line names its subscription and whose stats explain themselves', () => {
    const quickstart = join(root, 'examples/quickstart');
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: quickstart,
      encoding: 'utf8',
    });
    expect(run.status).toBe(0);
    const lines = run.stdout.split('\n');
    const handlerLines = lines.filter((line) => /^ {2}\[[a-z-]+\] /.test(line));
    for (const name of ['welcome-mail', 'billing', 'domain-check']) {
      expect(handlerLines.some((line) => line.startsWith(`  [${name}] `))).toBe(true);
    }
    // Every dead letter says which subscription gave up and after how many attempts.
    expect(handlerLines.filter((line) => line.includes('-> dead-letter queue after'))).toHaveLength(
      2,
    );
    expect(run.stdout).toContain('handled can exceed published');
  });
});
