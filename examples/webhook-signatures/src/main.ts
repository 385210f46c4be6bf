/**
 * Signed webhooks, sender and receiver in one process on 127.0.0.1:
 *
 * 1. a receiver that accepts `v1` signatures of two secrets (a rotation under way) and `v1a`
 *    signatures of an ed25519 public key;
 * 2. a client delivering to it with the old secret, the new one and the key pair, the first
 *    order failing once in the handler (answered 500, retried, delivered with attempt 2);
 * 3. requests made by hand with undici: a tampered body, a stale timestamp and a replayed id,
 *    each refused with its status;
 * 4. an endpoint that is down: the event goes to the dead-letter store and is replayed once the
 *    endpoint is back.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { createEvent, encodeEvent } from '@watchtower/core';
import {
  WebhookClient,
  createWebhookReceiver,
  createWebhookSigner,
  generateWebhookKeyPair,
  generateWebhookSecret,
} from '@watchtower/webhook';

const oldSecret = generateWebhookSecret();
const newSecret = generateWebhookSecret();
const keys = generateWebhookKeyPair();

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
}

// 1. The receiver.
const receiver = createWebhookReceiver({
  secrets: [newSecret, oldSecret],
  publicKeys: keys.publicKey,
  toleranceSeconds: 300,
});
let failFirst = true;
receiver.on('order.*', (event, { id }) => {
  if (failFirst) {
    failFirst = false;
    console.log(
      `  [receiver] ${event.type} ${id.slice(0, 8)}: the database is busy, answering 500`,
    );
    throw new Error('database busy');
  }
  console.log(
    `  [receiver] ${event.type} ${id.slice(0, 8)} handled: ${JSON.stringify(event.payload)}`,
  );
});
// The receiver never rejects: it answers every request itself.
const receiverServer = createServer((req, res) => void receiver(req, res));
const receiverUrl = await listen(receiverServer);

// A second endpoint that is down until `up` is set.
let up = false;
const flaky = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(up ? 204 : 503);
    res.end();
  });
});
const flakyUrl = await listen(flaky);

// 2. The client. Local addresses are refused by default; this example runs on 127.0.0.1.
const client = new WebhookClient({
  allowPrivateAddresses: true,
  deliveryRetry: { maxAttempts: 3, minDelayMs: 50, maxDelayMs: 200 },
  endpoints: [
    { id: 'old-secret', url: receiverUrl, secret: oldSecret, events: ['order.created'] },
    { id: 'new-secret', url: receiverUrl, secret: newSecret, events: ['order.shipped'] },
    { id: 'ed25519', url: receiverUrl, signingKey: keys.signingKey, events: ['order.paid'] },
    { id: 'flaky', url: flakyUrl, secret: newSecret, events: ['invoice.>'] },
  ],
});

console.log('Delivering, signed three ways:');
for (const [type, payload] of [
  ['order.created', { id: 1 }],
  ['order.shipped', { id: 1, carrier: 'post' }],
  ['order.paid', { id: 1, amount: 42 }],
] as const) {
  const report = await client.deliver(createEvent(type, payload));
  for (const d of report.delivered) {
    console.log(
      `  [client] ${type} to ${d.endpointId}: ${d.status} after ${d.attempts} attempt(s)`,
    );
  }
}

// 3. Requests made by hand, as an attacker or a broken sender would make them.
console.log('Requests the receiver refuses:');
const signer = createWebhookSigner({ secret: newSecret });
const event = createEvent('order.refunded', { id: 1, amount: 42 });
const body = encodeEvent(event);
const now = Math.floor(Date.now() / 1000);
async function post(what: string, text: string, headers: Record<string, string>): Promise<void> {
  const res = await request(receiverUrl, { method: 'POST', body: text, headers });
  console.log(`  ${what}: ${res.statusCode} ${(await res.body.text()) || ''}`.trimEnd());
}
await post(
  'tampered amount',
  body.replace('"amount":42', '"amount":4200'),
  signer.sign(event.id, now, body),
);
await post('signed 10 minutes ago', body, signer.sign(event.id, now - 600, body));
await post(
  'wrong secret',
  body,
  createWebhookSigner({ secret: generateWebhookSecret() }).sign(event.id, now, body),
);
receiver.on('order.refunded', () => undefined);
await post('first delivery', body, signer.sign(event.id, now, body));
await post('same id again (a replay)', body, signer.sign(event.id, now, body));

// 4. Dead letters and their replay.
console.log('An endpoint that is down:');
const report = await client.deliver(createEvent('invoice.sent', { invoice: 7 }));
for (const d of report.deadLettered) {
  console.log(
    `  [client] invoice.sent to ${d.endpointId}: dead-lettered (${d.error.code}: ${d.error.message})`,
  );
}
console.log(`  dead letters held: ${await client.deadLetters.size()}`);
up = true;
const replay = await client.replayDeadLetters();
console.log(
  `  endpoint back; replayed: ${replay.delivered} delivered, ${replay.failed} failed; held now: ${await client.deadLetters.size()}`,
);
const flakyStats = client.stats()['flaky'];
if (flakyStats !== undefined) {
  const circuit = flakyStats.circuit?.state ?? 'none';
  console.log(
    `  flaky endpoint stats: ${flakyStats.requests} requests, ${flakyStats.delivered} delivered, circuit ${circuit}`,
  );
}

await client.close();
receiverServer.close();
flaky.close();
