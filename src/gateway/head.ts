/** `GET /v1/head` → `{epoch, head, oldest}`. */
import type { Request, Response } from 'express';
import type { EventLog } from '../events/log.ts';

/** The `/v1/head` handler: the log's epoch, head and oldest retained id, read from the database. */
export function createHeadHandler(deps: { readonly log: Pick<EventLog, 'readHead'> }) {
  return async (_req: Request, res: Response) => {
    res.json(await deps.log.readHead());
  };
}
