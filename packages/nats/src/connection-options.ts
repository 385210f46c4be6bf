import {
  credsAuthenticator,
  nkeyAuthenticator,
  type Authenticator,
  type NodeConnectionOptions,
} from '@nats-io/transport-node';
import type { ResolvedNatsConfig } from './config.js';

const utf8 = new TextEncoder();

function bytes(value: string | Uint8Array): Uint8Array {
  return typeof value === 'string' ? utf8.encode(value) : value;
}

/**
 * The `@nats-io/transport-node` connection options for a config: servers, reconnect policy
 * (always on, with our attempts, wait and jitter), connect timeout, TLS and credentials, over
 * any extra `connectionOptions`; request stack traces off unless those turn them on.
 */
export function toConnectionOptions(config: ResolvedNatsConfig): NodeConnectionOptions {
  const options: NodeConnectionOptions = {
    // The client otherwise builds an Error (a stack capture) for every request, JetStream
    // publishes included: a fifth of the CPU of a publish. Our errors keep the driver's as
    // `cause`; `connectionOptions: { noAsyncTraces: false }` turns the traces back on.
    noAsyncTraces: true,
    ...config.connectionOptions,
    servers: [...config.servers],
    name: config.name,
    reconnect: true,
    maxReconnectAttempts: config.maxReconnectAttempts,
    reconnectTimeWait: config.reconnectTimeWaitMs,
    reconnectJitter: config.reconnectJitterMs,
    reconnectJitterTLS: config.reconnectJitterMs,
    timeout: config.connectTimeoutMs,
    // Fail fast on the first connect: connect() reports CONNECTION rather than hanging.
    waitOnFirstConnect: false,
  };
  if (config.tls !== undefined) options.tls = config.tls;

  const { auth } = config;
  if (auth.token !== undefined) options.token = auth.token;
  if (auth.user !== undefined) options.user = auth.user;
  if (auth.pass !== undefined) options.pass = auth.pass;
  let authenticator: Authenticator | Authenticator[] | undefined = auth.authenticator;
  if (auth.nkeySeed !== undefined) authenticator = nkeyAuthenticator(bytes(auth.nkeySeed));
  if (auth.creds !== undefined) authenticator = credsAuthenticator(bytes(auth.creds));
  if (authenticator !== undefined) options.authenticator = authenticator;
  return options;
}
