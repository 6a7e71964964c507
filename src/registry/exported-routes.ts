/**
 * Serves the registry's exported static API (what exporter/ writes) from the bucket, as a
 * load balancer pointed at it would:
 * `GET /api/packages/<name>`, `/api/packages/<name>/advisories` and `/api/archives/<file>`
 * from the configured prefix (`latest`, or a release's own prefix for a rollback), with the
 * stored Content-Type, Content-Encoding and Cache-Control, an ETag of the content hash, and
 * 304 on If-None-Match. JSON is stored gzip-encoded; a client whose Accept-Encoding refuses
 * gzip gets it decoded, as a representation with its own ETag.
 */
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import { type Request, type Response, Router } from 'express';
import { HeraldError } from '../errors.ts';
import type { Bucket } from '../exporter/bucket.ts';
import { assertPackageName } from './archive.ts';
import { PACKAGE_NAME_PATTERN } from './names.ts';

// `<name>-<version>.tar.gz`, as exporter/render.ts archiveKey() names archives.
const ARCHIVE_FILE_RE = new RegExp(`^(${PACKAGE_NAME_PATTERN})-(\\d[0-9A-Za-z.+-]{0,255})\\.tar\\.gz$`);
const gunzipAsync = promisify(gunzip);

/**
 * Whether an Accept-Encoding value accepts gzip (RFC 9110 §12.5.3): an absent header accepts
 * any coding; an empty one accepts none; otherwise `gzip` (or `x-gzip`) with q > 0, or, when
 * neither is listed, `*` with q > 0.
 */
function acceptsGzip(header: string | undefined): boolean {
  if (header === undefined) return true;
  let gzip: number | undefined;
  let star: number | undefined;
  for (const entry of header.toLowerCase().split(',')) {
    const [coding = '', ...params] = entry.split(';').map((s) => s.trim());
    // An unreadable q is taken as 1, the default: a malformed header should not cost a
    // client its compression.
    const q = params.map((p) => /^q=([0-9.]{1,5})$/.exec(p.replace(/\s+/g, ''))?.[1]).find((v) => v !== undefined);
    const weight = q === undefined || Number.isNaN(Number(q)) ? 1 : Number(q);
    if (coding === 'gzip' || coding === 'x-gzip') gzip = Math.max(gzip ?? 0, weight);
    else if (coding === '*') star = weight;
  }
  return (gzip ?? star ?? 0) > 0;
}

/** GET /api/packages/<name>, /api/packages/<name>/advisories and /api/archives/<file> from `prefix` in the bucket. */
export function createExportRoutes(bucket: Bucket, prefix: string): Router {
  const router = Router();
  const send = async (req: Request, res: Response, key: string, what: string) => {
    const obj = await bucket.get(`${prefix}/${key}`);
    if (!obj) throw new HeraldError('HERALD_ERR_NOT_FOUND', `${what} is not in the exported API`);
    const encoded = obj.meta.contentEncoding === 'gzip';
    // The decoded bytes are another representation, so another ETag: a cache holding one
    // must never revalidate it with the other's tag. The stored (gzip) one keeps the bare
    // hash, which caches and clients already hold.
    const decode = encoded && !acceptsGzip(req.headers['accept-encoding']);
    const etag = decode ? `"${obj.meta.sha256}-identity"` : `"${obj.meta.sha256}"`;
    res.set({ etag, 'cache-control': obj.meta.cacheControl, 'content-type': obj.meta.contentType });
    // Only an encoded object has two representations; an archive is the same for everyone.
    if (encoded) res.set('vary', 'accept-encoding');
    if (obj.meta.contentEncoding && !decode) res.set('content-encoding', obj.meta.contentEncoding);
    const inm = req.headers['if-none-match'];
    if (inm?.split(',').some((t) => t.trim() === etag || t.trim() === `W/${etag}`)) {
      res.status(304).end();
      return;
    }
    const body = decode ? await gunzipAsync(obj.body) : obj.body;
    res.set('content-length', String(body.length));
    res.status(200).end(body);
  };
  router.get('/api/packages/:name', (req, res) => send(req, res, `api/packages/${assertPackageName(req.params.name)}`, `package ${req.params.name}`));
  router.get('/api/packages/:name/advisories', (req, res) =>
    send(req, res, `api/packages/${assertPackageName(req.params.name)}/advisories`, `advisories of ${req.params.name}`),
  );
  router.get('/api/archives/:file', (req, res) => {
    const m = ARCHIVE_FILE_RE.exec(req.params.file);
    if (!m) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'archive file names are <name>-<version>.tar.gz');
    return send(req, res, `api/archives/${req.params.file}`, `archive ${req.params.file}`);
  });
  return router;
}
