import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const example = fileURLToPath(new URL('../../../examples/webhook-signatures', import.meta.url));

describe('examples/webhook-signatures', () => {
  it('runs as a user runs it and shows each refusal, the retry and the replay', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: example,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const out = run.stdout;
    expect(out).toContain('order.created to old-secret: 204 after 2 attempt(s)');
    expect(out).toContain('order.paid to ed25519: 204 after 1 attempt(s)');
    expect(out).toMatch(/tampered amount: 401/);
    expect(out).toMatch(/signed 10 minutes ago: 401/);
    expect(out).toMatch(/wrong secret: 401/);
    expect(out).toMatch(/same id again \(a replay\): 409/);
    expect(out).toContain('replayed: 1 delivered, 0 failed; held now: 0');
  });
});
