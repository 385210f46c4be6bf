import type { WebSocket } from 'ws';

/*
 * `ws` writes every message with its own system call (a `writev` of header and payload); under
 * load that is most of the CPU a WebSocket costs. Frames sent in the same turn of the event
 * loop (a burst of publishes, one event fanned out, the answers to one read) are cheaper as
 * one write: the socket is corked at the first send of a turn and uncorked on the next tick,
 * which is before any I/O, so nothing waits longer than it would have. Node-only.
 */

const corked = new WeakSet<object>();

/** The TCP socket under a `ws` WebSocket, where `ws` has one (it keeps it as `_socket`). */
function tcpOf(socket: WebSocket): { cork(): void; uncork(): void } | undefined {
  const tcp = (socket as unknown as { _socket?: { cork?: unknown; uncork?: unknown } })._socket;
  return typeof tcp?.cork === 'function' && typeof tcp.uncork === 'function'
    ? (tcp as { cork(): void; uncork(): void })
    : undefined;
}

/** `socket.send(data)`, written together with the other frames sent to it in this turn. */
export function sendCorked(socket: WebSocket, data: string | Buffer, binary = false): void {
  const tcp = tcpOf(socket);
  if (tcp !== undefined && !corked.has(tcp)) {
    corked.add(tcp);
    tcp.cork();
    process.nextTick(() => {
      corked.delete(tcp);
      tcp.uncork();
    });
  }
  socket.send(data, { binary });
}
