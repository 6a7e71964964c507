/**
 * Serves the exported static API from the bucket, as a load balancer pointed at it would:
 * `GET /api/packages/<name>`, `/api/packages/<name>/advisories` and `/api/archives/<file>`
 * from the configured prefix (`latest`, or a release's own prefix for a rollback), with the
 * stored Content-Type, Content-Encoding and Cache-Control, an ETag of the content hash, and
 * 304 on If-None-Match.
 */
import { type Request, type Response, Router } from 'express';
import { HeraldError } from '../errors.ts';
import { assertPackageName } from '../registry/archive.ts';
import type { Bucket } from './bucket.ts';

const ARCHIVE_FILE_RE = /^([a-z0-9][a-z0-9_-]{0,63})-(\d[0-9A-Za-z.+-]{0,255})\.tar\.gz$/;

export function createExportRoutes(bucket: Bucket, prefix: string): Router {
  const router = Router();
  const send = async (req: Request, res: Response, key: string, what: string) => {
    const obj = await bucket.get(`${prefix}/${key}`);
    if (!obj) throw new HeraldError('HERALD_ERR_NOT_FOUND', `${what} is not in the exported API`);
    const etag = `"${obj.meta.sha256}"`;
    res.set({ etag, 'cache-control': obj.meta.cacheControl, 'content-type': obj.meta.contentType, vary: 'accept-encoding' });
    if (obj.meta.contentEncoding) res.set('content-encoding', obj.meta.contentEncoding);
    const inm = req.headers['if-none-match'];
    if (inm && inm.split(',').some((t) => t.trim() === etag || t.trim() === `W/${etag}`)) {
      res.status(304).end();
      return;
    }
    res.status(200).end(obj.body);
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
