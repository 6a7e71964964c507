/**
 * Reading a publish upload: the `.tar.gz` as the raw body, or as the `archive` file of a
 * multipart form (with `name` and `version` as fields). Bounded by the archive limit as it
 * arrives; stored as it arrives, so it must arrive without a Content-Encoding.
 */
import busboy from 'busboy';
import type { Request } from 'express';
import { HeraldError } from '../errors.ts';

/** Content types a raw-body upload may carry. */
const ARCHIVE_TYPES = ['application/gzip', 'application/x-gzip', 'application/octet-stream', 'application/x-tar+gzip'];

/** Reads the archive from a raw body or from the `archive` part of a multipart form. */
export function readArchive(req: Request, limit: number): Promise<{ archive: Buffer; fields: Record<string, string> }> {
  return new Promise((resolve, reject) => {
    const type = req.headers['content-type'] ?? '';
    const tooBig = () => new HeraldError('HERALD_ERR_PAYLOAD_TOO_LARGE', `the archive is larger than ${limit} bytes`);
    if (Number(req.headers['content-length'] ?? 0) > limit + 64 * 1024) return reject(tooBig());
    // The body is stored as it arrives, so it must arrive as itself: a Content-Encoding would
    // have to be undone first, and compressing a .tar.gz again gains nothing.
    const encoding = req.headers['content-encoding']?.trim().toLowerCase();
    if (encoding && encoding !== 'identity') {
      const shown = JSON.stringify(encoding.slice(0, 40));
      return reject(new HeraldError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', `Content-Encoding ${shown} is not supported here: send the archive without one`));
    }
    if (type.startsWith('multipart/form-data')) {
      let bb: busboy.Busboy;
      try {
        bb = busboy({ headers: req.headers, limits: { files: 1, fileSize: limit, fields: 10, fieldSize: 1024 } });
      } catch {
        return reject(new HeraldError('HERALD_ERR_BAD_REQUEST', 'malformed multipart body'));
      }
      const fields: Record<string, string> = {};
      let archive: Buffer | null = null;
      let failed: HeraldError | null = null;
      bb.on('field', (k, v) => (fields[k] = v));
      bb.on('file', (field, stream) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('limit', () => (failed = tooBig()));
        stream.on('close', () => {
          if (field === 'archive') archive = Buffer.concat(chunks);
        });
      });
      bb.on('error', () => reject(new HeraldError('HERALD_ERR_BAD_REQUEST', 'malformed multipart body')));
      bb.on('close', () => {
        if (failed) return reject(failed);
        if (!archive) return reject(new HeraldError('HERALD_ERR_BAD_REQUEST', 'the multipart form needs a file field named "archive"'));
        resolve({ archive, fields });
      });
      req.pipe(bb);
      return;
    }
    if (!ARCHIVE_TYPES.some((t) => type.startsWith(t))) {
      return reject(new HeraldError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', `send the .tar.gz as the body (${ARCHIVE_TYPES[0]}) or as multipart/form-data`));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        // Stop reading and answer 413 (as body-parser does); destroying the socket instead
        // would leave the client with a reset rather than the error.
        req.off('data', onData);
        req.pause();
        chunks.length = 0;
        reject(tooBig());
      } else chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve({ archive: Buffer.concat(chunks), fields: {} }));
    req.on('error', () => reject(new HeraldError('HERALD_ERR_BAD_REQUEST', 'the request body could not be read')));
  });
}
