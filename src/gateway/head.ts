/** `GET /v1/head` → `{epoch, head, oldest}`. */
import type { Request, Response } from 'express';
import type { HeraldContext } from '../context.ts';

export function createHeadHandler(ctx: HeraldContext) {
  return async (_req: Request, res: Response) => {
    res.json(await ctx.log.readHead());
  };
}
