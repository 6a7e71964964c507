/**
 * Package archives: a `.tar.gz` with `manifest.json` at its root. `inspectArchive` reads an
 * upload with a real tar parser, streaming, and rejects anything that could hurt whoever
 * unpacks it later (links, paths leaving the root, device files) or that costs too much to
 * read (gzip bombs). Nothing is written to disk.
 */
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { createGunzip, gzip } from 'node:zlib';
import semver from 'semver';
import { Header, Pax, Parser, type ReadEntry } from 'tar';
import { HeraldError } from '../errors.ts';
import { JSON_MAX_DEPTH, scanJson } from '../http/json-input.ts';
import { PACKAGE_NAME_RE } from './names.ts';

/** The largest manifest.json read (and the largest pax header accepted), in bytes. */
export const MANIFEST_MAX_BYTES = 64 * 1024;
const DESCRIPTION_MAX = 1000;
const LICENSE_MAX = 100;
const RANGE_MAX = 256;

/** What an upload may cost to inspect. */
export interface ArchiveLimits {
  /** Size of the upload itself (the gzip bytes). */
  maxCompressedBytes: number;
  /** Bytes of the unpacked tar stream: file data plus headers and padding, counted as read. */
  maxUncompressedBytes: number;
  /** Entries in the archive: files and directories. */
  maxFiles: number;
}

/** The limits when none are given (the config's defaults are the same). */
export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  maxCompressedBytes: 10 * 1024 * 1024,
  maxUncompressedBytes: 50 * 1024 * 1024,
  maxFiles: 2000,
});

/** A package's manifest.json, as checked. */
export interface Manifest {
  name: string;
  version: string;
  description?: string;
  license?: string;
  /** Package name → semver range. */
  dependencies: Record<string, string>;
}

/** What inspectArchive() learned about an upload. */
export interface ArchiveInfo {
  manifest: Manifest;
  /** Hex sha256 of the compressed bytes, as uploaded. */
  sha256: string;
  /** Compressed size in bytes. */
  size: number;
  /** Regular files in the archive (directories not counted). */
  files: number;
  /** Bytes of the unpacked tar stream (headers and padding included). */
  uncompressedBytes: number;
}

const badRequest = (message: string, cause?: unknown) => new HeraldError('HERALD_ERR_BAD_REQUEST', message, {}, cause === undefined ? undefined : { cause });
const tooLarge = (message: string) => new HeraldError('HERALD_ERR_PAYLOAD_TOO_LARGE', message);

// Quotes a client-supplied value for a message, cut short so a huge value can't bloat it.
function quote(value: unknown): string {
  const s = JSON.stringify(value) ?? String(value);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Throws bad_request unless `name` is a package name: 1–64 of `[a-z0-9_-]`, starting with a letter or digit. */
export function assertPackageName(name: unknown, field = 'package name'): string {
  if (typeof name !== 'string') throw badRequest(`${field} must be a string`);
  if (!PACKAGE_NAME_RE.test(name)) {
    throw badRequest(`${field} ${quote(name)} is not valid: use 1-64 characters of [a-z0-9_-], starting with a letter or digit`);
  }
  return name;
}

/** Throws bad_request if the manifest names a different package or version than `expected`. */
export function assertManifestMatches(manifest: Manifest, expected: { name?: string; version?: string }): void {
  if (expected.name !== undefined && manifest.name !== expected.name) {
    throw badRequest(`manifest.json name ${quote(manifest.name)} does not match the expected name ${quote(expected.name)}`);
  }
  if (expected.version !== undefined && manifest.version !== expected.version) {
    throw badRequest(`manifest.json version ${quote(manifest.version)} does not match the expected version ${quote(expected.version)}`);
  }
}

/**
 * Checks an entry's path and returns it normalised (no leading `./`, no trailing `/`; the root
 * directory is ''). Anything an extractor could resolve outside the root is rejected.
 */
function normalizeEntryPath(raw: string): string {
  if (raw.includes('\0')) throw badRequest(`archive entry ${quote(raw)} has a NUL character in its name`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what this refuses.
  if (/[\x01-\x1f\x7f]/.test(raw)) throw badRequest(`archive entry ${quote(raw)} has a control character in its name`);
  // Windows extractors treat '\' as a separator, so 'a\..\..\x' would climb out there.
  if (raw.includes('\\')) throw badRequest(`archive entry ${quote(raw)} has a backslash in its name`);
  if (raw.startsWith('/') || /^[A-Za-z]:/.test(raw)) throw badRequest(`archive entry ${quote(raw)} has an absolute path`);
  let p = raw;
  // `tar -C dir .` writes './x'; that is the same as 'x'.
  while (p.startsWith('./')) p = p.slice(2);
  if (p.endsWith('/')) p = p.slice(0, -1);
  if (p === '' || p === '.') return '';
  for (const segment of p.split('/')) {
    if (segment === '..') throw badRequest(`archive entry ${quote(raw)} has a '..' segment (path traversal)`);
    if (segment === '' || segment === '.') throw badRequest(`archive entry ${quote(raw)} has an empty or '.' path segment`);
  }
  return p;
}

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);

function describeType(type: string): string {
  switch (type) {
    case 'SymbolicLink':
      return 'a symbolic link';
    case 'Link':
      return 'a hard link';
    case 'CharacterDevice':
    case 'BlockDevice':
      return 'a device file';
    case 'FIFO':
      return 'a FIFO';
    default:
      return `of unsupported type ${quote(type)}`;
  }
}

/**
 * Reads a package archive and returns its manifest and sizes. Throws bad_request for anything
 * malformed or unsafe, and payload_too_large when a limit is exceeded; reading stops at the
 * first problem, so a gzip bomb costs at most `maxUncompressedBytes` of inflation.
 */
export async function inspectArchive(bytes: Buffer, limits: Partial<ArchiveLimits> = DEFAULT_ARCHIVE_LIMITS): Promise<ArchiveInfo> {
  const { maxCompressedBytes, maxUncompressedBytes, maxFiles } = { ...DEFAULT_ARCHIVE_LIMITS, ...limits };
  if (!Buffer.isBuffer(bytes)) throw badRequest('archive must be bytes');
  if (bytes.length > maxCompressedBytes) throw tooLarge(`archive is ${bytes.length} bytes; the limit is ${maxCompressedBytes}`);
  // Magic 1f 8b and method 8 (deflate), the only one gzip defines.
  if (bytes.length < 18 || bytes[0] !== 0x1f || bytes[1] !== 0x8b || bytes[2] !== 0x08) {
    throw badRequest('archive is not a gzip archive (expected a .tar.gz)');
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const scan = await scanTar(bytes, maxUncompressedBytes, maxFiles);
  const manifest = parseManifest(scan.manifest);
  return { manifest, sha256, size: bytes.length, files: scan.files, uncompressedBytes: scan.uncompressedBytes };
}

interface TarScan {
  manifest: Buffer;
  files: number;
  uncompressedBytes: number;
}

const BLOCK = 512;
/** node-tar's names for the headers that describe the next entry rather than being one. */
const META_TYPES = new Set(['ExtendedHeader', 'OldExtendedHeader', 'GlobalExtendedHeader', 'NextFileHasLongPath', 'NextFileHasLongLinkpath', 'OldGnuLongPath']);
const ZEROS = Buffer.alloc(64 * 1024);

/** True when every byte of `buf` is zero (compared against a zero buffer, not byte by byte). */
function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i += ZEROS.length) {
    const end = Math.min(buf.length, i + ZEROS.length);
    if (buf.compare(ZEROS, 0, end - i, i, end) !== 0) return false;
  }
  return true;
}

/**
 * The tar's block structure, walked ahead of node-tar: header, body blocks, header, …, up to
 * the first zero block where a header belongs, the end-of-archive marker. Only the bytes
 * before the marker are forwarded to the parser; everything from the marker on must be zero.
 *
 * node-tar alone stops reading at its end marker and silently drops whatever follows, in the
 * same chunk too, yet `tar --ignore-zeros` and other readers go on and extract entries hidden
 * there (`../../x`, links) that were never checked. A lone zero block followed by more entries
 * ends the archive here as well (GNU tar stops at it), so it is refused the same way.
 *
 * The walk reads header sizes only; the parser also applies pax `size` records. Where the two
 * readings could part, the parser would skip as body what the walk (and a reader ignoring
 * pax) takes for headers, so they must agree on every entry's size (`matchEntry`), and the
 * parser, which never sees the marker, must find no zero block and no end of its own.
 */
class TarBlocks {
  /** Body bytes still to pass through before the next header. */
  private bodyLeft = 0;
  /** The start of a header block that has not fully arrived. */
  private partial = Buffer.alloc(0);
  /** Bytes walked so far (for messages). */
  private offset = 0;
  /** True once the end-of-archive marker has begun. */
  private ended = false;
  /** Each entry's size by its header, in order (pax and GNU long-name headers left out, as the parser does). */
  private readonly sizes: number[] = [];
  /** How many of `sizes` the parser has matched. */
  private matched = 0;

  /** Walks one chunk of the tar stream; returns the bytes to give the parser. */
  push(chunk: Buffer): Buffer {
    if (this.ended) {
      if (!isZero(chunk)) throw badRequest('archive is not a valid tar: data after the end-of-archive marker');
      return Buffer.alloc(0);
    }
    const buf = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    const at = this.offset - this.partial.length;
    this.partial = Buffer.alloc(0);
    const out: Buffer[] = [];
    let i = 0;
    while (i < buf.length) {
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, buf.length - i);
        out.push(buf.subarray(i, i + n));
        this.bodyLeft -= n;
        i += n;
      } else if (buf.length - i < BLOCK) {
        // Copied, so that a few bytes do not keep the whole chunk alive.
        this.partial = Buffer.from(buf.subarray(i));
        break;
      } else {
        const block = buf.subarray(i, i + BLOCK);
        if (isZero(block)) {
          this.ended = true;
          if (!isZero(buf.subarray(i))) throw badRequest('archive is not a valid tar: data after the end-of-archive marker');
          break;
        }
        // node-tar's own header decoding, so sizes are read exactly as the parser reads them
        // (octal or base-256; a directory's size counts as 0). A pax `size` record, which
        // the parser applies on top, must agree (matchEntry).
        const header = new Header(block);
        if (!header.cksumValid) throw badRequest(`archive is not a valid tar: the header at byte ${at + i} fails its checksum`);
        const size = header.size ?? 0;
        if (!Number.isSafeInteger(size)) throw badRequest(`archive is not a valid tar: the header at byte ${at + i} has no readable size`);
        this.bodyLeft = BLOCK * Math.ceil(size / BLOCK);
        if (!META_TYPES.has(header.type ?? '')) this.sizes.push(size);
        out.push(block);
        i += BLOCK;
      }
    }
    this.offset += chunk.length;
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** Throws unless the parser's next entry has the size the walk read in its header. */
  matchEntry(path: string, size: number): void {
    const walked = this.sizes[this.matched++];
    if (walked !== size)
      throw badRequest(`archive is not a valid tar: entry ${quote(path)} is ${size} bytes by its pax header but ${walked ?? 'absent'} by its tar header`);
  }

  /** Throws unless the stream ended cleanly, on the marker, and the parser found every entry the walk did. */
  finish(): void {
    // Without the end-of-archive marker the tar may have been cut at an entry boundary.
    if (!this.ended || this.partial.length > 0) throw badRequest('archive is not a valid tar: it is truncated (no end-of-archive marker)');
    if (this.matched !== this.sizes.length) throw badRequest('archive is not a valid tar: its blocks read two ways (the parser skipped an entry)');
  }
}

function scanTar(bytes: Buffer, maxUncompressedBytes: number, maxFiles: number): Promise<TarScan> {
  return new Promise<TarScan>((resolve, reject) => {
    let done = false;
    let uncompressed = 0;
    let entries = 0;
    let files = 0;
    let head: Buffer | undefined = Buffer.alloc(0);
    let manifest: Buffer | undefined;
    const filePaths = new Set<string>();
    const blocks = new TarBlocks();

    const gunzip = createGunzip();
    // strict turns every tar warning (bad checksum, truncation, junk) into an 'error'; brotli
    // and zstd off so the parser only ever sees the tar stream we inflated and counted.
    const parser = new Parser({ strict: true, brotli: false, zstd: false, maxMetaEntrySize: MANIFEST_MAX_BYTES });

    const fail = (err: unknown) => {
      if (done) return;
      done = true;
      gunzip.destroy();
      reject(err instanceof HeraldError ? err : badRequest(`archive is not a valid tar: ${err instanceof Error ? err.message : String(err)}`, err));
    };
    // Event handlers must never throw into tar or zlib: route everything to fail().
    const guard =
      <A extends unknown[]>(fn: (...args: A) => void) =>
      (...args: A) => {
        if (done) return;
        try {
          fn(...args);
        } catch (err) {
          fail(err);
        }
      };

    const onEntry = guard((entry: ReadEntry) => {
      blocks.matchEntry(entry.path, entry.size);
      entries++;
      if (entries > maxFiles) throw tooLarge(`archive has more than ${maxFiles} files and directories`);
      const path = normalizeEntryPath(entry.path);
      const type = entry.type;
      if (type === 'Directory') {
        if (path === 'manifest.json') throw badRequest('manifest.json at the archive root must be a file, not a directory');
        entry.resume();
        return;
      }
      if (!FILE_TYPES.has(type)) {
        // All links are refused, even ones that stay inside the root: proving a link target
        // safe means resolving it against every other entry and whatever the extractor does
        // with link chains, and packages have no need for links.
        const target = entry.linkpath === undefined ? '' : ` (to ${quote(entry.linkpath)})`;
        throw badRequest(`archive entry ${quote(entry.path)} is ${describeType(type)}${target}; only regular files and directories are allowed`);
      }
      if (path === '') throw badRequest(`archive entry ${quote(entry.path)} is a file at the root directory's path`);
      if (filePaths.has(path)) {
        throw badRequest(path === 'manifest.json' ? 'archive has more than one manifest.json' : `archive has entry ${quote(path)} twice`);
      }
      filePaths.add(path);
      files++;
      if (path !== 'manifest.json') {
        entry.resume();
        return;
      }
      if (entry.size > MANIFEST_MAX_BYTES) throw badRequest(`manifest.json is ${entry.size} bytes; the limit is ${MANIFEST_MAX_BYTES}`);
      const chunks: Buffer[] = [];
      entry.on('data', (c: Buffer) => chunks.push(c));
      entry.on('end', () => (manifest = Buffer.concat(chunks)));
    });

    parser.on('entry', onEntry);
    // Entries the parser skips (unknown types, oversized pax headers) would otherwise pass
    // unseen, and another extractor might not skip them.
    parser.on(
      'ignoredEntry',
      guard((entry: ReadEntry) => {
        if (entry.meta) throw badRequest(`archive has an extended header of ${entry.size} bytes; the limit is ${MANIFEST_MAX_BYTES}`);
        throw badRequest(`archive entry ${quote(entry.path)} is ${describeType(entry.type)}; only regular files and directories are allowed`);
      }),
    );
    // node-tar cuts names at a NUL, as ustar's C strings mean; in a pax record, though, the
    // NUL is part of the value, so 'a\0../../x' is a name other extractors may read whole.
    parser.on(
      'meta',
      guard((meta: string) => {
        if (/(?:^|\n)\d+ (?:path|linkpath)=[^\n]*\0[^\0\n]/.test(meta)) throw badRequest('archive has a pax path with a NUL character in it');
      }),
    );
    // The parser is given the blocks before the end-of-archive marker only: a zero block or
    // an end it finds is one the block walk did not, a reading that parted from it.
    const parted = guard(() => {
      throw badRequest('archive is not a valid tar: its blocks read two ways (a zero block inside an entry)');
    });
    parser.on('nullBlock', parted);
    parser.on('eof', parted);
    parser.on('error', (err: Error) => fail(badRequest(`archive is not a valid tar: ${err.message}`, err)));
    parser.on(
      'end',
      guard(() => {
        blocks.finish();
        if (manifest === undefined) throw badRequest('archive has no manifest.json at its root');
        done = true;
        resolve({ manifest, files, uncompressedBytes: uncompressed });
      }),
    );

    // Past the end-of-archive marker nothing is forwarded: the parser would buffer it all.
    const feed = (bytes: Buffer) => {
      const forward = blocks.push(bytes);
      if (forward.length > 0) parser.write(forward);
    };
    gunzip.on(
      'data',
      guard((chunk: Buffer) => {
        uncompressed += chunk.length;
        // Counted as inflated, not from headers, and checked per chunk: a bomb is stopped
        // here after at most one chunk beyond the limit.
        if (uncompressed > maxUncompressedBytes) throw tooLarge(`archive unpacks to more than ${maxUncompressedBytes} bytes`);
        if (head !== undefined) {
          // node-tar inflates a gzip stream it finds inside; a tar never starts with 1f 8b,
          // and a nested stream would bypass the count above.
          head = Buffer.concat([head, chunk]);
          if (head.length < 2) return;
          if (head[0] === 0x1f && head[1] === 0x8b) throw badRequest('archive is gzip inside gzip; expected a single .tar.gz');
          chunk = head;
          head = undefined;
        }
        feed(chunk);
      }),
    );
    gunzip.on(
      'end',
      guard(() => {
        if (head !== undefined && head.length > 0) feed(head);
        head = undefined;
        parser.end();
      }),
    );
    gunzip.on('error', (err: Error) => fail(badRequest(`archive is not a valid gzip stream (corrupt or truncated): ${err.message}`, err)));
    gunzip.end(bytes);
  });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optionalString(obj: Record<string, unknown>, field: string, max: number): string | undefined {
  const v = obj[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw badRequest(`manifest.json ${field} must be a string`);
  if (v.length > max) throw badRequest(`manifest.json ${field} is ${v.length} characters; the limit is ${max}`);
  return v;
}

function parseManifest(raw: Buffer): Manifest {
  let json: unknown;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    json = JSON.parse(text);
  } catch (err) {
    throw badRequest(`manifest.json is not valid UTF-8 JSON: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  // What jsonb cannot store (a NUL in the description) failed the insert as `internal`, which
  // is retried; checked here it fails the job once, as bad_request.
  scanJson(text, { what: 'manifest.json', maxDepth: JSON_MAX_DEPTH });
  if (!isPlainObject(json)) throw badRequest('manifest.json must be a JSON object');

  if (json.name === undefined) throw badRequest('manifest.json has no name');
  const name = assertPackageName(json.name, 'manifest.json name');

  const version = json.version;
  if (version === undefined) throw badRequest('manifest.json has no version');
  if (typeof version !== 'string') throw badRequest('manifest.json version must be a string');
  // semver.valid() also accepts 'v1.2.3' and '=1.2.3' and drops '+build'; only the exact
  // canonical spelling is a version here, so a version has one spelling.
  if (semver.valid(version, { loose: false }) !== version) {
    const hint = version.includes('+') ? ' (build metadata "+..." is not allowed)' : '';
    throw badRequest(`manifest.json version ${quote(version)} is not a valid semver 2.0 version like 1.2.3${hint}`);
  }

  const manifest: Manifest = { name, version, dependencies: {} };
  const description = optionalString(json, 'description', DESCRIPTION_MAX);
  if (description !== undefined) manifest.description = description;
  const license = optionalString(json, 'license', LICENSE_MAX);
  if (license !== undefined) manifest.license = license;

  const deps = json.dependencies;
  if (deps !== undefined) {
    if (!isPlainObject(deps)) throw badRequest('manifest.json dependencies must be an object of package name to semver range');
    for (const [dep, range] of Object.entries(deps)) {
      assertPackageName(dep, 'manifest.json dependency name');
      if (typeof range !== 'string' || range.trim() === '' || range.length > RANGE_MAX || semver.validRange(range) === null) {
        throw badRequest(`manifest.json dependency ${quote(dep)} has range ${quote(range)}, which is not a valid semver range`);
      }
      manifest.dependencies[dep] = range;
    }
  }
  return manifest;
}

const gzipAsync = promisify(gzip);

/**
 * Builds a `.tar.gz` from an in-memory map of path → contents, as regular files in map order.
 * Output is deterministic (fixed mtime, uid/gid 0) so equal inputs hash equally. No path
 * checks: this builds test fixtures too, and `inspectArchive` is the gate.
 */
export async function buildArchive(files: Record<string, string | Buffer>, opts: { mtime?: Date; mode?: number } = {}): Promise<Buffer> {
  const mtime = opts.mtime ?? new Date(0);
  const blocks: Buffer[] = [];
  for (const [path, contents] of Object.entries(files)) {
    if (path === '') throw new TypeError('buildArchive: a file path may not be empty');
    const body = typeof contents === 'string' ? Buffer.from(contents, 'utf8') : contents;
    const header = new Header({ path, mode: opts.mode ?? 0o644, uid: 0, gid: 0, size: body.length, mtime, type: 'File', uname: '', gname: '' });
    const block = Buffer.alloc(512);
    // encode() reports when a field (a long or non-ASCII path) doesn't fit ustar: a pax header
    // carrying the full value then goes first.
    if (header.encode(block)) blocks.push(new Pax({ path, size: body.length, mtime }).encode());
    blocks.push(block, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024)); // end-of-archive: two zero blocks
  return gzipAsync(Buffer.concat(blocks));
}
