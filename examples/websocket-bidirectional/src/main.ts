/**
 * Watchtower over WebSocket, with nothing else to run: a hub on a free local port and two
 * clients that talk both ways.
 *
 *   pnpm --filter @watchtower/example-websocket-bidirectional start
 *
 * The kitchen subscribes to orders and publishes when a meal is ready; the counter publishes
 * orders and subscribes to ready meals. The hub lets in only clients with a token, and lets
 * only the kitchen publish `meal.*`: the counter's attempt is refused with FORBIDDEN. A display
 * board talks plain events, as a Rust Watchtower service does: it never subscribes at the hub,
 * which sends it everything (its `defaultSubscriptions`, `['>']`), and it picks ready meals out
 * itself.
 */
import { isWatchtowerError } from '@watchtower/core';
import { WebSocketHub, WebSocketSubscriber, bearerToken } from '@watchtower/websocket';

const tokens: Record<string, string> = {
  'kitchen-token': 'kitchen',
  'counter-token': 'counter',
  'board-token': 'board',
};

await using hub = new WebSocketHub({
  port: 0,
  authenticate: (request) => tokens[bearerToken(request) ?? ''],
  authorize: (who, action, subject) =>
    action === 'subscribe' || !subject.startsWith('meal.') || who === 'kitchen',
});
await hub.start();
console.log(`hub on ${hub.url}`);

const client = { url: hub.url, reconnectDelayMs: 100 };
await using kitchen = new WebSocketSubscriber({
  ...client,
  authToken: 'kitchen-token',
  source: 'kitchen',
});
await using counter = new WebSocketSubscriber({
  ...client,
  authToken: 'counter-token',
  source: 'counter',
});

await using board = new WebSocketSubscriber({
  ...client,
  authToken: 'board-token',
  protocol: 'plain',
});

const served: string[] = [];
const shown: string[] = [];
let allServed: () => void = () => undefined;
const done = new Promise<void>((resolve) => (allServed = resolve));
const check = (): void => {
  if (served.length === 3 && shown.length === 3) allServed();
};

await kitchen.subscribe('order.*', async (event) => {
  const { dish } = event.payload as { dish: string };
  console.log(`kitchen: cooking ${dish} (${event.type} from ${event.source ?? '?'})`);
  await kitchen.publish('meal.ready', { dish }, { correlationId: event.correlationId ?? event.id });
});

await counter.subscribe('meal.ready', (event) => {
  const { dish } = event.payload as { dish: string };
  served.push(dish);
  console.log(`counter: serving ${dish}`);
  check();
});

// Filtered here: the hub sends the board every event, orders included.
await board.subscribe('meal.ready', (event) => {
  const { dish } = event.payload as { dish: string };
  shown.push(dish);
  console.log(`board: ${dish} is ready`);
  check();
});

for (const dish of ['soup', 'noodles', 'dumplings']) {
  await counter.publish('order.placed', { dish });
}
await done;

// Only the kitchen may announce meals.
try {
  await counter.publish('meal.ready', { dish: 'imaginary' });
} catch (error) {
  if (!isWatchtowerError(error)) throw error;
  console.log(`counter: refused, as it should be: ${error.message}`);
}

const stats = hub.stats();
console.log(
  `hub: ${stats.connections} clients, ${stats.subscriptions} subscriptions, ` +
    `${stats.eventsIn} events in, ${stats.eventsOut} out, ${stats.refusedRequests} refused`,
);
