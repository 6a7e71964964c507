/**
 * The running parts of one Herald process, handed to every route and worker. Built once by
 * startHerald() (src/herald.ts).
 */
import type pg from 'pg';
import type { Config } from './config.ts';
import type { Hub } from './events/hub.ts';
import type { Listener } from './events/listener.ts';
import type { EventLog } from './events/log.ts';
import { type OpenOptions, Subscription, type SubscriptionHooks } from './events/subscription.ts';
import type { Reader, TopicAccess } from './gateway/access.ts';
import type { Sessions } from './gateway/sessions.ts';
import type { Metrics } from './http/metrics.ts';
import type { Logger } from './logger.ts';

export interface HeraldContext {
  readonly config: Config;
  readonly logger: Logger;
  readonly pool: pg.Pool;
  readonly log: EventLog;
  readonly hub: Hub;
  readonly listener: Listener;
  readonly metrics: Metrics;
  readonly sessions: Sessions;
  readonly access: TopicAccess;
  /** True once shutdown has begun: new streams are refused. */
  readonly stopping: boolean;
}

/**
 * Opens a Subscription for `transport` after checking that `reader` may read its topics;
 * counted in the subscriber gauge until it closes.
 */
export async function subscribe(
  ctx: HeraldContext,
  transport: string,
  reader: Reader,
  { onReady, ...opts }: Omit<OpenOptions, 'hooks'> & Pick<SubscriptionHooks, 'onReady'>,
): Promise<Subscription> {
  ctx.access.authorize(opts.filter, reader);
  const gauge = ctx.metrics.subscribers.labels(transport);
  const sub = await Subscription.open(
    { log: ctx.log, hub: ctx.hub, limits: ctx.config },
    {
      ...opts,
      hooks: {
        onReady,
        onFallback: () => ctx.metrics.slowConsumerFallbacks.inc(),
        onStateChange: (_from, to) => {
          if (to === 'closed') gauge.dec();
        },
      },
    },
  );
  gauge.inc();
  return sub;
}
