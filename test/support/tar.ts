/**
 * Hand-written tar streams for tests: well-behaved packers refuse to write malicious entries
 * (links out, absolute paths, '..', devices), so these headers are built byte by byte.
 */
import { gzipSync } from 'node:zlib';

export interface RawEntry {
  name: string;
  /** ustar typeflag: '0' file, '1' hard link, '2' symlink, '3' char device, '5' directory, '6' FIFO, 'x' pax. */
  type?: string;
  body?: Buffer | string;
  linkname?: string;
  /** Size written in the header, if not the body's. */
  size?: number;
}

function octal(buf: Buffer, off: number, len: number, value: number): void {
  buf.write(`${value.toString(8).padStart(len - 1, '0')}\0`, off, len, 'ascii');
}

/** One 512-byte ustar header, written by hand (no sanitising), with a correct checksum. */
export function rawHeader(e: RawEntry, size: number): Buffer {
  const b = Buffer.alloc(512);
  b.write(e.name, 0, 100, 'utf8');
  octal(b, 100, 8, e.type === '5' ? 0o755 : 0o644);
  octal(b, 108, 8, 0);
  octal(b, 116, 8, 0);
  octal(b, 124, 12, size);
  octal(b, 136, 12, 0);
  b.write(e.type ?? '0', 156, 1, 'ascii');
  if (e.linkname !== undefined) b.write(e.linkname, 157, 100, 'utf8');
  b.write('ustar\u000000', 257, 8, 'ascii');
  // The checksum is the byte sum with the checksum field itself counted as spaces.
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return b;
}

/** A tar stream from raw entries; `end: false` leaves off the two zero end blocks. */
export function rawTar(entries: RawEntry[], opts: { end?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = typeof e.body === 'string' ? Buffer.from(e.body) : (e.body ?? Buffer.alloc(0));
    parts.push(rawHeader(e, e.size ?? body.length), body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  if (opts.end !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export const rawTgz = (entries: RawEntry[], opts?: { end?: boolean }) => gzipSync(rawTar(entries, opts));
