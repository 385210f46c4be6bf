import { readFileSync } from 'node:fs';

const tick = new Int32Array(new SharedArrayBuffer(4));

/** The process state letter of `/proc/<pid>/stat` (`T` stopped), or undefined off Linux. */
function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // `pid (comm) S ...`: comm may hold spaces and parentheses, the state follows the last `)`.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/**
 * Stops a process with SIGSTOP and returns once the kernel reports it stopped, so that a test
 * knows nothing it sends afterwards is answered (`kill` only queues the signal: a server may
 * still answer a request that arrives right after it). Where `/proc` is not available it
 * returns after sending the signal. Throws when the process has not stopped after `timeoutMs`.
 */
export function pauseProcess(pid: number, timeoutMs = 2000): void {
  process.kill(pid, 'SIGSTOP');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = stateOf(pid);
    if (state === undefined || state === 'T' || state === 't') return;
    if (Date.now() > deadline)
      throw new Error(`process ${pid} did not stop within ${timeoutMs} ms`);
    Atomics.wait(tick, 0, 0, 1);
  }
}
