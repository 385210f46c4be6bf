/**
 * Event ids: random UUIDs (version 4), as `crypto.randomUUID()` makes them, from the same
 * cryptographic source.
 *
 * Why not `crypto.randomUUID()` itself: it joins each id from some twenty short strings, about
 * 570 bytes of garbage per id, and every published event takes one. Here the random bytes of
 * {@link BATCH} ids are drawn and written out as text at once, and each id is one 36-character
 * string cut from that text: one allocation per id.
 */
import { Buffer } from 'node:buffer';
import { randomFillSync } from 'node:crypto';

/** Ids drawn and written out together. */
const BATCH = 128;
const UUID_LENGTH = 36;

const random = new Uint8Array(16 * BATCH);
const text = Buffer.alloc(UUID_LENGTH * BATCH);
/** The character codes of `0123456789abcdef`. */
const HEX_DIGITS = Uint8Array.from('0123456789abcdef', (digit) => digit.charCodeAt(0));
let next = BATCH;

function refill(): void {
  randomFillSync(random);
  let at = 0;
  for (let id = 0; id < BATCH; id++) {
    const start = id * 16;
    // RFC 9562: version 4 in the high nibble of byte 6, variant 10 in the top bits of byte 8.
    random[start + 6] = ((random[start + 6] as number) & 0x0f) | 0x40;
    random[start + 8] = ((random[start + 8] as number) & 0x3f) | 0x80;
    for (let i = 0; i < 16; i++) {
      if (i === 4 || i === 6 || i === 8 || i === 10) text[at++] = 0x2d; // -
      const byte = random[start + i] as number;
      text[at++] = HEX_DIGITS[byte >> 4] as number;
      text[at++] = HEX_DIGITS[byte & 0x0f] as number;
    }
  }
  next = 0;
}

/** A new random UUID (version 4), lower-case: `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`. */
export function randomEventId(): string {
  if (next === BATCH) refill();
  const start = next++ * UUID_LENGTH;
  return text.toString('latin1', start, start + UUID_LENGTH);
}
