/**
 * Package archive inspection. Malicious tars (links, absolute paths, '..', devices) are built
 * from raw ustar headers here, since well-behaved packers refuse to write them; everything is
 * local and in memory.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { gzipSync } from 'node:zlib';
import path from 'node:path';
import * as tar from 'tar';
import { describe, expect, it } from 'vitest';
import { type ErrorCode, HeraldError } from '../../src/errors.ts';
import {
  type ArchiveLimits,
  assertManifestMatches,
  assertPackageName,
  buildArchive,
  DEFAULT_ARCHIVE_LIMITS,
  inspectArchive,
  type Manifest,
} from '../../src/registry/archive.ts';
import { PACKAGE_NAME_RE } from '../../src/registry/names.ts';
import { type RawEntry, rawHeader, rawTar, rawTgz } from '../support/tar.ts';

const BAD = 'HERALD_ERR_BAD_REQUEST';
const BIG = 'HERALD_ERR_PAYLOAD_TOO_LARGE';

const MANIFEST = {
  name: 'left-pad',
  version: '1.2.3',
  description: 'pads strings',
  license: 'MIT',
  dependencies: { 'is-string': '^2.0.0', x_1: '>=1 <2 || 3.x' },
};
const manifestJson = (m: Record<string, unknown> = MANIFEST) => JSON.stringify(m);
/** A valid manifest with `patch` applied (undefined values remove the field). */
const withManifest = (patch: Record<string, unknown>) => buildArchive({ 'manifest.json': manifestJson({ ...MANIFEST, ...patch }) });

const manifestEntry: RawEntry = { name: 'manifest.json', body: manifestJson() };

/** A pax extended header whose `path` record is `value`, verbatim. */
function paxPath(value: string): RawEntry {
  const rec = (len: number) => `${len} path=${value}\n`;
  let len = Buffer.byteLength(rec(0));
  while (Buffer.byteLength(rec(len)) !== len) len = Buffer.byteLength(rec(len));
  return { name: 'PaxHeader/x', type: 'x', body: rec(len) };
}

async function rejection(p: Promise<unknown>): Promise<HeraldError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a rejection').toBeInstanceOf(HeraldError);
  return err as HeraldError;
}

describe('inspectArchive', () => {
  it('accepts a valid archive and reports the exact manifest, file count, size and sha256', async () => {
    const bytes = await buildArchive({
      'manifest.json': manifestJson({ ...MANIFEST, extra: 'ignored' }),
      'index.js': 'module.exports = 1;\n',
      'lib/util.js': Buffer.from('x'.repeat(700)),
    });
    const info = await inspectArchive(bytes);
    expect(info.manifest).toEqual(MANIFEST);
    expect(info.files).toBe(3);
    expect(info.size).toBe(bytes.length);
    expect(info.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    // Three headers, bodies padded to blocks (1 + 1 + 2), two end blocks.
    expect(info.uncompressedBytes).toBe(512 * (3 + 4 + 2));
  });

  it('defaults dependencies to {} and leaves out absent optional fields', async () => {
    const info = await inspectArchive(await buildArchive({ 'manifest.json': '{"name":"a","version":"0.0.1-beta.2"}' }));
    expect(info.manifest).toStrictEqual({ name: 'a', version: '0.0.1-beta.2', dependencies: {} });
  });

  it("accepts './' prefixes and directory entries, as `tar -C dir .` writes them", async () => {
    const bytes = rawTgz([
      { name: './', type: '5' },
      { name: './manifest.json', body: manifestJson() },
      { name: './lib/', type: '5' },
      { name: './lib/a.js', body: 'a' },
    ]);
    const info = await inspectArchive(bytes);
    expect(info.manifest.name).toBe('left-pad');
    expect(info.files).toBe(2);
  });

  it('reads a ustar name as a C string: bytes after a NUL are padding, not part of the path', async () => {
    const info = await inspectArchive(rawTgz([manifestEntry, { name: 'ok\0../../evil', body: 'x' }]));
    expect(info.files).toBe(2);
  });

  it('accepts paths too long for ustar (pax headers) from buildArchive', async () => {
    const long = `${'d'.repeat(120)}/${'f'.repeat(120)}.js`;
    const info = await inspectArchive(await buildArchive({ 'manifest.json': manifestJson(), [long]: 'x', 'ünïcode.txt': 'y' }));
    expect(info.files).toBe(3);
  });

  it("accepts an archive written by node-tar's packer from a directory", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-archive-'));
    try {
      await mkdir(path.join(dir, 'src'));
      await writeFile(path.join(dir, 'manifest.json'), manifestJson());
      await writeFile(path.join(dir, 'src', 'index.js'), 'export {};\n');
      const chunks: Buffer[] = [];
      for await (const c of tar.c({ gzip: true, cwd: dir, portable: true }, ['.'])) chunks.push(c as Buffer);
      const info = await inspectArchive(Buffer.concat(chunks));
      expect(info.manifest).toEqual(MANIFEST);
      expect(info.files).toBe(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('stops a real gzip bomb (64 MiB of zeros in ~64 KiB) under the default limits', async () => {
    const tarBytes = Buffer.concat([rawTar([manifestEntry], { end: false }), rawHeader({ name: 'zeros' }, 64 * 1024 * 1024), Buffer.alloc(64 * 1024 * 1024)]);
    const bomb = gzipSync(tarBytes);
    expect(bomb.length).toBeLessThan(DEFAULT_ARCHIVE_LIMITS.maxCompressedBytes);
    const err = await rejection(inspectArchive(bomb));
    expect(err.code).toBe(BIG);
    expect(err.message).toContain(`more than ${DEFAULT_ARCHIVE_LIMITS.maxUncompressedBytes} bytes`);
  });

  const MiB = 1024 * 1024;
  const cases: { name: string; build: () => Buffer | Promise<Buffer>; limits?: Partial<ArchiveLimits>; code: ErrorCode; message: string | RegExp }[] = [
    // Not gzip, or broken gzip
    {
      name: 'random bytes (not gzip)',
      build: () => Buffer.concat([Buffer.from('PK\x03\x04'), createHash('sha512').update('x').digest()]),
      code: BAD,
      message: 'not a gzip archive',
    },
    { name: 'empty upload', build: () => Buffer.alloc(0), code: BAD, message: 'not a gzip archive' },
    {
      name: 'truncated gzip',
      build: async () => {
        const b = await buildArchive({ 'manifest.json': manifestJson(), 'a.txt': createHash('sha512').update('a').digest('hex').repeat(50) });
        return b.subarray(0, Math.floor(b.length / 2));
      },
      code: BAD,
      message: 'not a valid gzip stream',
    },
    { name: 'gzip inside gzip', build: async () => gzipSync(await buildArchive({ 'manifest.json': manifestJson() })), code: BAD, message: 'gzip inside gzip' },
    // Not tar, or broken tar
    { name: 'gzip of non-tar garbage', build: () => gzipSync(Buffer.alloc(4096, 'this is not a tar archive ')), code: BAD, message: 'not a valid tar' },
    { name: 'gzip of a few bytes', build: () => gzipSync(Buffer.from('hello')), code: BAD, message: 'not a valid tar' },
    {
      name: 'tar cut in the middle of an entry',
      build: () => gzipSync(rawTar([manifestEntry, { name: 'big.bin', size: 4096, body: Buffer.alloc(1000, 1) }], { end: false })),
      code: BAD,
      message: 'not a valid tar',
    },
    { name: 'tar cut at an entry boundary', build: () => rawTgz([manifestEntry], { end: false }), code: BAD, message: 'no end-of-archive marker' },
    {
      name: 'corrupt header checksum',
      build: () => {
        const t = rawTar([manifestEntry]);
        t[0] = 'n'.charCodeAt(0);
        return gzipSync(t);
      },
      code: BAD,
      message: 'checksum',
    },
    {
      name: 'junk after the end-of-archive marker',
      build: () => gzipSync(Buffer.concat([rawTar([manifestEntry]), Buffer.alloc(20_000, 7)])),
      code: BAD,
      message: 'after the end-of-archive marker',
    },
    // Unsafe paths
    { name: 'path traversal ../evil', build: () => rawTgz([manifestEntry, { name: '../evil', body: 'x' }]), code: BAD, message: "'..' segment" },
    { name: 'path traversal a/../../evil', build: () => rawTgz([manifestEntry, { name: 'a/../../evil', body: 'x' }]), code: BAD, message: "'..' segment" },
    { name: 'absolute path /etc/passwd', build: () => rawTgz([manifestEntry, { name: '/etc/passwd', body: 'x' }]), code: BAD, message: 'absolute path' },
    { name: 'drive-letter path C:/x', build: () => rawTgz([manifestEntry, { name: 'C:/x', body: 'x' }]), code: BAD, message: 'absolute path' },
    { name: 'backslash a\\..\\..\\x', build: () => rawTgz([manifestEntry, { name: 'a\\..\\..\\x', body: 'x' }]), code: BAD, message: 'backslash' },
    { name: 'NUL in a (pax) path', build: () => rawTgz([manifestEntry, paxPath('a\0b'), { name: 'ab', body: 'x' }]), code: BAD, message: 'NUL' },
    {
      name: 'traversal in a pax path',
      build: () => rawTgz([manifestEntry, paxPath('../../evil'), { name: 'harmless', body: 'x' }]),
      code: BAD,
      message: "'..' segment",
    },
    // Links and special files
    {
      name: 'symlink pointing outside (link -> ../../etc/passwd)',
      build: () => rawTgz([manifestEntry, { name: 'link', type: '2', linkname: '../../etc/passwd' }]),
      code: BAD,
      message: 'is a symbolic link (to "../../etc/passwd")',
    },
    {
      name: 'symlink pointing to an absolute path',
      build: () => rawTgz([manifestEntry, { name: 'link', type: '2', linkname: '/etc/passwd' }]),
      code: BAD,
      message: 'symbolic link',
    },
    {
      name: 'symlink inside the root (still rejected)',
      build: () => rawTgz([manifestEntry, { name: 'link', type: '2', linkname: 'manifest.json' }]),
      code: BAD,
      message: 'symbolic link',
    },
    { name: 'hard link', build: () => rawTgz([manifestEntry, { name: 'hard', type: '1', linkname: 'manifest.json' }]), code: BAD, message: 'is a hard link' },
    { name: 'character device', build: () => rawTgz([manifestEntry, { name: 'null', type: '3' }]), code: BAD, message: 'device file' },
    { name: 'FIFO', build: () => rawTgz([manifestEntry, { name: 'pipe', type: '6' }]), code: BAD, message: 'FIFO' },
    { name: 'unknown entry type', build: () => rawTgz([manifestEntry, { name: 'sparse', type: 'S', body: 'x' }]), code: BAD, message: 'unsupported type' },
    // Limits
    {
      name: 'too many files',
      build: () => buildArchive({ 'manifest.json': manifestJson(), a: '1', b: '2', c: '3', d: '4', e: '5' }),
      limits: { maxFiles: 5 },
      code: BIG,
      message: 'more than 5 files',
    },
    {
      name: 'too big uncompressed (2 MiB file, 1 MiB limit)',
      build: () => buildArchive({ 'manifest.json': manifestJson(), 'zeros.bin': Buffer.alloc(2 * MiB) }),
      limits: { maxUncompressedBytes: MiB },
      code: BIG,
      message: `more than ${MiB} bytes`,
    },
    {
      name: 'zero padding bomb after the end marker',
      build: () => gzipSync(Buffer.concat([rawTar([manifestEntry]), Buffer.alloc(4 * MiB)])),
      limits: { maxUncompressedBytes: MiB },
      code: BIG,
      message: `more than ${MiB} bytes`,
    },
    {
      name: 'header claims a small size, body is huge (real bytes counted)',
      build: () => gzipSync(Buffer.concat([rawTar([manifestEntry], { end: false }), rawHeader({ name: 'liar' }, 1), Buffer.alloc(4 * MiB, 0)])),
      limits: { maxUncompressedBytes: MiB },
      code: BIG,
      message: `more than ${MiB} bytes`,
    },
    {
      name: 'too big compressed',
      build: () => buildArchive({ 'manifest.json': manifestJson() }),
      limits: { maxCompressedBytes: 100 },
      code: BIG,
      message: 'the limit is 100',
    },
    // manifest.json presence and shape
    { name: 'missing manifest', build: () => buildArchive({ 'index.js': 'x' }), code: BAD, message: 'no manifest.json at its root' },
    {
      name: 'manifest only in a subfolder',
      build: () => buildArchive({ 'pkg/manifest.json': manifestJson() }),
      code: BAD,
      message: 'no manifest.json at its root',
    },
    {
      name: 'manifest only in an npm-style package/ folder',
      build: () => buildArchive({ 'package/manifest.json': manifestJson() }),
      code: BAD,
      message: 'no manifest.json at its root',
    },
    {
      name: 'two manifests (manifest.json and ./manifest.json)',
      build: () => rawTgz([manifestEntry, { ...manifestEntry, name: './manifest.json' }]),
      code: BAD,
      message: 'more than one manifest.json',
    },
    { name: 'duplicate file', build: () => rawTgz([manifestEntry, { name: 'a', body: '1' }, { name: './a', body: '2' }]), code: BAD, message: 'twice' },
    { name: 'manifest.json is a directory', build: () => rawTgz([{ name: 'manifest.json/', type: '5' }]), code: BAD, message: 'must be a file' },
    {
      name: 'manifest larger than 64 KiB',
      build: () => buildArchive({ 'manifest.json': manifestJson({ ...MANIFEST, pad: 'x'.repeat(70_000) }) }),
      code: BAD,
      message: 'manifest.json is',
    },
    { name: 'manifest not JSON', build: () => buildArchive({ 'manifest.json': 'name: left-pad' }), code: BAD, message: 'not valid UTF-8 JSON' },
    { name: 'manifest not UTF-8', build: () => buildArchive({ 'manifest.json': Buffer.from([0x7b, 0xff, 0x7d]) }), code: BAD, message: 'not valid UTF-8 JSON' },
    { name: 'manifest is an array', build: () => buildArchive({ 'manifest.json': '[]' }), code: BAD, message: 'must be a JSON object' },
    { name: 'manifest without name', build: () => withManifest({ name: undefined }), code: BAD, message: 'has no name' },
    { name: 'manifest name ../x', build: () => withManifest({ name: '../x' }), code: BAD, message: 'manifest.json name "../x" is not valid' },
    { name: 'manifest name Upper', build: () => withManifest({ name: 'Upper' }), code: BAD, message: 'manifest.json name "Upper" is not valid' },
    { name: 'manifest name not a string', build: () => withManifest({ name: 7 }), code: BAD, message: 'manifest.json name must be a string' },
    { name: 'manifest without version', build: () => withManifest({ version: undefined }), code: BAD, message: 'has no version' },
    { name: 'version 1.0', build: () => withManifest({ version: '1.0' }), code: BAD, message: 'version "1.0" is not a valid semver' },
    { name: 'version v1.0.0', build: () => withManifest({ version: 'v1.0.0' }), code: BAD, message: 'version "v1.0.0" is not a valid semver' },
    { name: 'version 1.0.0.0', build: () => withManifest({ version: '1.0.0.0' }), code: BAD, message: 'version "1.0.0.0" is not a valid semver' },
    { name: 'version =1.0.0', build: () => withManifest({ version: '=1.0.0' }), code: BAD, message: 'not a valid semver' },
    { name: 'version with build metadata', build: () => withManifest({ version: '1.0.0+build.5' }), code: BAD, message: 'build metadata' },
    { name: 'version a number', build: () => withManifest({ version: 1 }), code: BAD, message: 'version must be a string' },
    { name: 'description not a string', build: () => withManifest({ description: 5 }), code: BAD, message: 'description must be a string' },
    { name: 'description too long', build: () => withManifest({ description: 'd'.repeat(1001) }), code: BAD, message: 'the limit is 1000' },
    { name: 'license too long', build: () => withManifest({ license: 'l'.repeat(101) }), code: BAD, message: 'license is 101 characters' },
    { name: 'dependencies an array', build: () => withManifest({ dependencies: ['a'] }), code: BAD, message: 'dependencies must be an object' },
    {
      name: 'dependency range latest',
      build: () => withManifest({ dependencies: { a: 'latest' } }),
      code: BAD,
      message: 'dependency "a" has range "latest", which is not a valid semver range',
    },
    { name: 'dependency range garbage', build: () => withManifest({ dependencies: { a: '>=1.0.0 <<2' } }), code: BAD, message: 'not a valid semver range' },
    { name: 'dependency range empty', build: () => withManifest({ dependencies: { a: '' } }), code: BAD, message: 'not a valid semver range' },
    { name: 'dependency range a number', build: () => withManifest({ dependencies: { a: 1 } }), code: BAD, message: 'not a valid semver range' },
    {
      name: 'dependency with a bad name',
      build: () => withManifest({ dependencies: { '../evil': '^1.0.0' } }),
      code: BAD,
      message: 'dependency name "../evil" is not valid',
    },
  ];

  it.each(cases)('rejects: $name', async ({ build, limits, code, message }) => {
    const err = await rejection(inspectArchive(await build(), limits));
    expect(err.code).toBe(code);
    if (typeof message === 'string') expect(err.message).toContain(message);
    else expect(err.message).toMatch(message);
  });

  describe('after the end-of-archive marker only zero padding may follow', () => {
    // The archive issue 14 found published and served: a traversal and a link to /etc/passwd
    // behind the two zero blocks, where node-tar stops reading but `tar --ignore-zeros` (and
    // other readers) go on.
    const hidden: RawEntry[] = [
      { name: '../../../../tmp/x', body: 'pwned' },
      { name: 'link', type: '2', linkname: '/etc/passwd' },
    ];
    const manifestTar = (bodyBytes = 0) =>
      rawTar(bodyBytes ? [manifestEntry, { name: 'pad.bin', body: Buffer.alloc(bodyBytes, 1) }] : [manifestEntry], { end: false });
    const EOA = Buffer.alloc(1024);

    it('the hidden entries are really there: GNU tar --ignore-zeros lists them, plain tar does not', () => {
      const file = path.join(os.tmpdir(), `herald-hidden-${process.pid}.tgz`);
      writeFileSync(file, gzipSync(Buffer.concat([manifestTar(), EOA, rawTar(hidden)])));
      try {
        const list = (args: string[]) =>
          execFileSync('tar', [...args, '-tzf', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
            .trim()
            .split('\n');
        expect(list(['--ignore-zeros'])).toEqual(['manifest.json', '../../../../tmp/x', 'link']);
        expect(list([])).toEqual(['manifest.json']);
      } finally {
        rmSync(file, { force: true });
      }
    });

    const hiddenCases: { name: string; tar: () => Buffer }[] = [
      { name: 'right after the marker, in the same chunk', tar: () => Buffer.concat([manifestTar(), EOA, rawTar(hidden)]) },
      { name: 'after a lone zero block (GNU tar stops there too)', tar: () => Buffer.concat([manifestTar(), Buffer.alloc(512), rawTar(hidden)]) },
      { name: 'after 40 KiB of zero padding, in a later chunk', tar: () => Buffer.concat([manifestTar(), Buffer.alloc(40 * 1024), rawTar(hidden)]) },
      // zlib hands out 16 KiB chunks: the marker at the end of one, the entries in the next.
      ...[-1024, -512, 0, 512].map((shift) => ({
        name: `with the marker ${shift} bytes from the first 16 KiB chunk boundary`,
        tar: () => {
          const head = manifestTar(16 * 1024 + shift - 3 * 512);
          return Buffer.concat([head, EOA, rawTar(hidden)]);
        },
      })),
      { name: 'a single non-zero byte after the marker', tar: () => Buffer.concat([manifestTar(), EOA, Buffer.alloc(700), Buffer.from([1])]) },
    ];
    it.each(hiddenCases)('refuses data $name', async ({ tar: build }) => {
      const err = await rejection(inspectArchive(gzipSync(build())));
      expect(err.code).toBe(BAD);
      expect(err.httpStatus).toBe(400);
      expect(err.message).toBe('archive is not a valid tar: data after the end-of-archive marker');
    });

    it("accepts zero padding of any length after the marker (GNU tar pads to 10 KiB records), and GNU tar's own archives", async () => {
      for (const pad of [0, 512, 9 * 1024, 100 * 1024]) {
        const info = await inspectArchive(gzipSync(Buffer.concat([manifestTar(), EOA, Buffer.alloc(pad)])));
        expect(info.files, `padding ${pad}`).toBe(1);
      }
      const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-gnutar-'));
      try {
        await mkdir(path.join(dir, 'pkg', 'src'), { recursive: true });
        await writeFile(path.join(dir, 'pkg', 'manifest.json'), manifestJson());
        await writeFile(path.join(dir, 'pkg', 'src', 'index.js'), 'export {};\n'.repeat(3000));
        execFileSync('tar', ['-czf', path.join(dir, 'pkg.tgz'), '-C', path.join(dir, 'pkg'), '.']);
        const info = await inspectArchive(await readFile(path.join(dir, 'pkg.tgz')));
        expect(info.manifest).toEqual(MANIFEST);
        expect(info.files).toBe(2);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('refuses a pax size that differs from the tar header, which would make the blocks read two ways', async () => {
      // By its header `a` is empty and the next header is the hidden link; by the pax size the
      // link's header is `a`'s body. Readers that ignore pax see a link nobody checked.
      const paxSize = (n: number): RawEntry => ({ name: 'PaxHeader/a', type: 'x', body: `${String(n).length + 9} size=${n}\n` });
      const err = await rejection(
        inspectArchive(rawTgz([manifestEntry, paxSize(512), { name: 'a', body: '' }, { name: 'link', type: '2', linkname: '/etc/passwd' }])),
      );
      expect(err.code).toBe(BAD);
      expect(err.message).toBe('archive is not a valid tar: entry "a" is 512 bytes by its pax header but 0 by its tar header');
      // A pax size equal to the header's, as node-tar's packer writes them, is fine.
      const info = await inspectArchive(rawTgz([manifestEntry, paxSize(3), { name: 'a', body: 'abc' }]));
      expect(info.files).toBe(2);
    });
  });

  it('rejects a corrupted byte in the compressed stream as bad_request', async () => {
    const bytes = Buffer.from(await buildArchive({ 'manifest.json': manifestJson(), 'a.txt': 'hello '.repeat(500) }));
    const mid = Math.floor(bytes.length / 2);
    bytes[mid] = (bytes[mid] ?? 0) ^ 0xff;
    const err = await rejection(inspectArchive(bytes));
    expect(err.code).toBe(BAD);
    expect(err.message).toMatch(/not a valid (gzip stream|tar)/);
  });
});

describe('assertManifestMatches', () => {
  const manifest: Manifest = { name: 'left-pad', version: '1.2.3', dependencies: {} };

  it('passes when the given fields match, or none are given', () => {
    expect(() => assertManifestMatches(manifest, {})).not.toThrow();
    expect(() => assertManifestMatches(manifest, { name: 'left-pad', version: '1.2.3' })).not.toThrow();
    expect(() => assertManifestMatches(manifest, { version: '1.2.3' })).not.toThrow();
  });

  it.each([
    [{ name: 'right-pad' }, 'name "left-pad" does not match the expected name "right-pad"'],
    [{ version: '1.2.4' }, 'version "1.2.3" does not match the expected version "1.2.4"'],
    [{ name: 'left-pad', version: '2.0.0' }, 'does not match the expected version'],
  ])('rejects a mismatch with %j', (expected, message) => {
    let err: unknown;
    try {
      assertManifestMatches(manifest, expected);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HeraldError);
    expect((err as HeraldError).code).toBe(BAD);
    expect((err as HeraldError).message).toContain(message);
  });
});

describe('assertPackageName', () => {
  it.each(['left-pad', 'a', 'x_1', '0', 'a'.repeat(64)])('accepts %j', (name) => {
    expect(assertPackageName(name)).toBe(name);
    expect(PACKAGE_NAME_RE.test(name)).toBe(true);
  });

  it.each(['..', '.', 'a/b', '%2e%2e', 'a\0b', 'A', 'leftPad', '', 'a'.repeat(65), '-a', '_a', 'a b', 'a.b', 'a\\b', ' a'])('rejects %j', (name) => {
    expect(() => assertPackageName(name)).toThrowError(HeraldError);
    try {
      assertPackageName(name);
    } catch (e) {
      expect((e as HeraldError).code).toBe(BAD);
      expect((e as HeraldError).message).toContain('package name');
      expect((e as HeraldError).message).toContain('is not valid');
    }
  });

  it('rejects non-strings and names the field', () => {
    expect(() => assertPackageName(undefined)).toThrowError('package name must be a string');
    expect(() => assertPackageName(['a'], 'name')).toThrowError('name must be a string');
  });
});
