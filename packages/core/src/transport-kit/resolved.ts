/**
 * One settled promise for every call that has nothing to wait for (an ack queued for the next
 * write, a core publish handed to the socket, a connect already done). Sharing it saves an
 * allocation per call, and the EventBus counts an ack that returns a promise it has seen
 * resolve without a reaction or microtask.
 */
export const RESOLVED: Promise<void> = Promise.resolve();
