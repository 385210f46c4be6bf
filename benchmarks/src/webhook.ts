/**
 * Webhook scenarios: signed POSTs to a local receiver through `WebhookClient.deliver`, beside
 * raw undici doing the same POSTs: the same body (the event in the core codec), the same
 * Standard Webhooks `v1` signature (HMAC-SHA256 of `{id}.{timestamp}.{body}`), an undici
 * `Agent` with the client's defaults (16 keep-alive connections, no pipelining), the answer's
 * body read to the end. Watchtower runs with its defaults but `allowPrivateAddresses: true`,
 * without which a loopback receiver is refused.
 *
 * The receiver is a bare node:http server in a child process, so its CPU is not counted on the
 * sender's side (`cpu µs/ev` is the sender's process alone). It checks every signature (a bad
 * one fails the run), answers 204, and records when each event arrived, on the machine's
 * monotonic clock, so that the user-level rows can time an event from its publish to its
 * arrival even though `publish` resolves before the POST is made.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import { createEvent, encodeEvent } from '@watchtower/core';
import { WebhookClient } from '@watchtower/webhook';
import { runWindowed, type Measurement, type Scenario } from './harness.js';

const TYPE = 'user.created';
/** The client's defaults: keep-alive connections per origin, and requests at once. */
export const CONNECTIONS = 16;
/** Deliveries outstanding at most in the windowed scenario. */
const WINDOW = 64;

const payload = (n: number): { id: string; name: string; n: number } => ({
  id: `user-${n}`,
  name: 'Ada Lovelace',
  n,
});

/*
 * The receiver, run with `node -e` (plain JavaScript: no loader needed in the child). Messages
 * from the parent: `{ op: 'expect', count }` resets it for a run (answered `ready`);
 * `{ op: 'arrivals' }` asks for the arrival times by event number (ms, monotonic clock). It
 * sends `{ op: 'done', bad }` once `count` events arrived.
 */
const RECEIVER_SOURCE = `
const { createServer } = require('node:http');
const { createHmac, timingSafeEqual } = require('node:crypto');
const key = Buffer.from(process.env.BENCH_WEBHOOK_SECRET.slice('whsec_'.length), 'base64');
let expected = 0, seen = 0, bad = 0, arrivals = new Float64Array(0);
const server = createServer({ keepAliveTimeout: 60000 }, (req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const at = Number(process.hrtime.bigint()) / 1e6;
    const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    const id = req.headers['webhook-id'], stamp = req.headers['webhook-timestamp'];
    const mac = createHmac('sha256', key).update(id + '.' + stamp + '.').update(body).digest();
    const ok = String(req.headers['webhook-signature']).split(' ').some((entry) => {
      const given = Buffer.from(entry.slice(3), 'base64');
      return entry.startsWith('v1,') && given.length === mac.length && timingSafeEqual(given, mac);
    });
    if (!ok) bad++;
    const json = JSON.parse(body.toString('utf8'));
    const n = (json.payload ?? json).n;
    if (n < arrivals.length) arrivals[n] = at;
    res.writeHead(ok ? 204 : 401).end();
    if (++seen === expected) process.send({ op: 'done', bad });
  });
});
process.on('message', (message) => {
  if (message.op === 'expect') {
    expected = message.count; seen = 0; bad = 0; arrivals = new Float64Array(message.count);
    process.send({ op: 'ready' });
  } else if (message.op === 'arrivals') {
    process.send({ op: 'arrivals', at: Array.from(arrivals) });
  }
});
process.on('disconnect', () => server.close(() => process.exit(0)));
server.listen(0, '127.0.0.1', () => process.send({ op: 'listening', port: server.address().port }));
`;

interface ReceiverMessage {
  op: 'listening' | 'ready' | 'done' | 'arrivals';
  port?: number;
  bad?: number;
  at?: number[];
}

/** The receiver child process of one run. */
export interface Receiver {
  readonly url: string;
  /** The `whsec_` secret it checks `v1` signatures with. */
  readonly secret: string;
  /** The HMAC key of `secret`, for the raw side's signing. */
  readonly key: Buffer;
  /** Resolves when `count` events arrived, all signed right (rejects otherwise). */
  readonly done: Promise<void>;
  /** Arrival times by event number, in ms of the monotonic clock (`process.hrtime`). */
  arrivals(): Promise<number[]>;
  close(): Promise<void>;
}

function nextMessage(child: ChildProcess, op: ReceiverMessage['op']): Promise<ReceiverMessage> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: ReceiverMessage): void => {
      if (message.op !== op) return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(message);
    };
    const onExit = (code: number | null): void => {
      child.off('message', onMessage);
      reject(new Error(`the webhook receiver exited (${String(code)}) before '${op}'`));
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** Starts a receiver child expecting `count` events. */
export async function startReceiver(count: number): Promise<Receiver> {
  const key = randomBytes(32);
  const secret = `whsec_${key.toString('base64')}`;
  const child = spawn(process.execPath, ['-e', RECEIVER_SOURCE], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, BENCH_WEBHOOK_SECRET: secret },
  });
  const { port } = await nextMessage(child, 'listening');
  if (port === undefined) throw new Error('the webhook receiver did not say its port');
  const ready = nextMessage(child, 'ready');
  child.send({ op: 'expect', count });
  await ready;
  const done = nextMessage(child, 'done').then(({ bad }) => {
    if (bad !== 0) throw new Error(`the webhook receiver refused ${String(bad)} signatures`);
  });
  // Awaited by the caller; a rejection before that must not count as unhandled.
  done.catch(() => undefined);
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    secret,
    key,
    done,
    arrivals: async () => {
      const reply = nextMessage(child, 'arrivals');
      child.send({ op: 'arrivals' });
      return (await reply).at ?? [];
    },
    close: async () => {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.disconnect();
      await exited;
    },
  };
}

/** The raw side's POST: the body signed the Standard Webhooks way, the answer read to the end. */
export async function rawPost(
  agent: Agent,
  receiver: Receiver,
  id: string,
  body: Buffer,
): Promise<void> {
  const timestamp = Math.floor(Date.now() / 1000);
  const signature = createHmac('sha256', receiver.key)
    .update(`${id}.${timestamp}.`)
    .update(body)
    .digest('base64');
  const res = await request(receiver.url, {
    method: 'POST',
    body,
    headers: {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': `v1,${signature}`,
    },
    dispatcher: agent,
  });
  await res.body.dump();
  if (res.statusCode !== 204) throw new Error(`the receiver answered ${String(res.statusCode)}`);
}

/** A raw undici agent with the webhook client's pool settings. */
export const rawAgent = (): Agent => new Agent({ connections: CONNECTIONS, pipelining: 1 });

async function rawDeliver(count: number, window: number): Promise<Measurement> {
  const receiver = await startReceiver(count);
  const agent = rawAgent();
  const measured = await runWindowed(
    count,
    window,
    (i) => {
      const event = createEvent(TYPE, payload(i));
      return rawPost(agent, receiver, event.id, Buffer.from(encodeEvent(event)));
    },
    'each',
  );
  await receiver.done;
  await agent.close();
  await receiver.close();
  return measured;
}

async function watchtowerDeliver(count: number, window: number): Promise<Measurement> {
  const receiver = await startReceiver(count);
  const client = new WebhookClient({
    endpoints: [{ url: receiver.url, secret: receiver.secret }],
    allowPrivateAddresses: true,
  });
  let failed = 0;
  const measured = await runWindowed(
    count,
    window,
    async (i) => {
      const report = await client.deliver(createEvent(TYPE, payload(i)));
      if (report.delivered.length !== 1) failed++;
    },
    'each',
  );
  await receiver.done;
  await client.close();
  await receiver.close();
  if (failed > 0) throw new Error(`${failed} webhook deliveries failed`);
  return measured;
}

export function webhookScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(WINDOW, Math.round(count * scale));
  return [
    {
      name: 'webhook deliver, await each POST',
      transport: 'webhook',
      raw: () => rawDeliver(at(1000), 1),
      watchtower: () => watchtowerDeliver(at(1000), 1),
    },
    {
      name: `webhook deliver, ${WINDOW} in flight`,
      transport: 'webhook',
      raw: () => rawDeliver(at(5000), WINDOW),
      watchtower: () => watchtowerDeliver(at(5000), WINDOW),
    },
  ];
}
