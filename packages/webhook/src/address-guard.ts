/**
 * The guard against delivering to private, loopback, link-local and other non-public
 * addresses (server-side request forgery: a webhook URL that points into your own network).
 * An address literal in the URL is checked when the endpoint is added; a host name is checked
 * on every connection, after DNS, in the socket's own lookup, so a name that resolves to a
 * private address later (DNS rebinding) is refused too.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { ErrorCode } from '@watchtower/core';
import { WebhookDeliveryError } from './errors.js';

const blocked = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  blocked.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  blocked.addSubnet(network, prefix, 'ipv6');
}

/** True for an address that is not on the public internet (IPv4-mapped IPv6 included). */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family !== 6) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return blocked.check(mapped[1], 'ipv4');
  return blocked.check(address, 'ipv6');
}

/** The error for `url` resolving to `address`. */
export function privateAddressError(url: string, address: string): WebhookDeliveryError {
  return new WebhookDeliveryError(
    ErrorCode.NON_RETRYABLE,
    `${url} resolves to ${address}, a private, loopback or link-local address; set allowPrivateAddresses to deliver there`,
    { url, kind: 'private-address' },
    { retryable: false },
  );
}

type LookupCallback = (
  error: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/**
 * A `lookup` for sockets (`net.connect({ lookup })`) that resolves as `dns.lookup` does and
 * fails the connection when any address found is private.
 */
export function guardedLookup(
  hostname: string,
  options: LookupOptions,
  callback: LookupCallback,
): void {
  dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
    if (error !== null) {
      callback(error, []);
      return;
    }
    const bad = addresses.find((entry) => isPrivateAddress(entry.address));
    if (bad !== undefined) {
      callback(privateAddressError(hostname, bad.address), []);
      return;
    }
    if (options.all === true) callback(null, addresses);
    else {
      const first = addresses[0] as LookupAddress;
      callback(null, first.address, first.family);
    }
  });
}
