/**
 * Test helpers of the event-system tests: transports with other capabilities, a transport
 * whose first publishes fail, and a quiet logger.
 */
import { ConnectionError } from '../errors.js';
import type { Event } from '../event.js';
import type { Transport, TransportCapabilities } from '../transport.js';

export const quiet = { warn: (): void => undefined, error: (): void => undefined };

/** `transport` as seen with other capabilities (and name): every call goes to it. */
export function withInfo(
  transport: Transport,
  capabilities: Partial<TransportCapabilities>,
  name = transport.info.name,
): Transport {
  const info = Object.freeze({
    ...transport.info,
    name,
    capabilities: Object.freeze({ ...transport.info.capabilities, ...capabilities }),
  });
  return new Proxy(transport, {
    get(target, key) {
      if (key === 'info') return info;
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function'
        ? (value as (...args: unknown[]) => unknown).bind(target)
        : value;
    },
  });
}

/** `transport` whose next `failures` publishes reject with a retryable `CONNECTION` error. */
export function failingFirst(
  transport: Transport,
  failures: number,
): Transport & { attempts: Event[] } {
  let left = failures;
  const attempts: Event[] = [];
  const proxy = new Proxy(transport, {
    get(target, key) {
      if (key === 'attempts') return attempts;
      if (key === 'publish') {
        return (event: Event) => {
          attempts.push(event);
          if (left > 0) {
            left--;
            return Promise.reject(new ConnectionError('the broker is away'));
          }
          return target.publish(event);
        };
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function'
        ? (value as (...args: unknown[]) => unknown).bind(target)
        : value;
    },
  });
  return proxy as Transport & { attempts: Event[] };
}
