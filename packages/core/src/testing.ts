/**
 * Test helpers for Watchtower and for transports built on it: `@watchtower/core/testing`.
 */
export { FakeClock } from './testing/fake-clock.js';
export { waitFor, type WaitForOptions } from './testing/wait-for.js';
export { collectEvents, type EventCollector } from './testing/collect.js';
export { thrown } from './testing/thrown.js';
export { pauseProcess } from './testing/pause-process.js';
export { configErrorField, settlement } from './testing/outcomes.js';
export { acceptsConnections, freePort, freePorts } from './testing/ports.js';
