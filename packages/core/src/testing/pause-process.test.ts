import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { pauseProcess } from './pause-process.js';

describe('pauseProcess', () => {
  it.runIf(process.platform === 'linux')('returns once the process is stopped', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const pid = child.pid as number;
    try {
      pauseProcess(pid);
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      expect(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)).toBe('T');
    } finally {
      process.kill(pid, 'SIGCONT');
      child.kill('SIGKILL');
      await exited;
    }
  });
});
