/**
 * Opening a Subscription, counted in the subscriber gauge every transport (and every
 * plug-in's own reader) is counted in: for a client, after the access check, on the filter
 * narrowed to what it may read (access.ts), with the gate for what a filter cannot narrow.
 * One path, so a transport cannot forget the check, the narrowing or the count.
 */
import type { Hub } from '../events/hub.ts';
import type { EventLog } from '../events/log.ts';
import { type OpenOptions, Subscription, type SubscriptionHooks, type SubscriptionLimits } from '../events/subscription.ts';
import type { Metrics } from '../http/metrics.ts';
import type { ReadGate, Reader, TopicAccess } from './access.ts';

/** What opening a counted Subscription needs (Herald's own readers: no access rule). */
export interface OpenDeps {
  /** The buffer and page limits each Subscription gets (the whole Config satisfies it). */
  readonly config: SubscriptionLimits;
  readonly log: EventLog;
  readonly hub: Hub;
  readonly metrics: Pick<Metrics, 'subscribers' | 'slowConsumerFallbacks'>;
}

/** What opening a client's checked, narrowed Subscription needs. */
export interface SubscribeDeps extends OpenDeps {
  readonly access: Pick<TopicAccess, 'authorizeRead'>;
}

/** A Subscription's options as a caller gives them: the only hook it sets is onReady (push mode). */
export type SubscribeOptions = Omit<OpenOptions, 'hooks'> & Pick<SubscriptionHooks, 'onReady'>;

/** A client's Subscription and the per-event check its filter could not express (null: none needed). */
export interface ReaderSubscription {
  readonly sub: Subscription;
  readonly gate: ReadGate | null;
}

/**
 * Opens a Subscription for a client of `transport`: `reader` may read what `opts.filter`
 * asks (403 for an exact private topic it may not, token_expired once its token has
 * expired), and the Subscription reads the filter narrowed to that; counted in the
 * subscriber gauge until it closes.
 */
export async function subscribeReader(deps: SubscribeDeps, transport: string, reader: Reader, opts: SubscribeOptions): Promise<ReaderSubscription> {
  const plan = await deps.access.authorizeRead(opts.filter, reader);
  const sub = await subscribe(deps, transport, { ...opts, filter: plan.filter });
  return { sub, gate: plan.gate };
}

/**
 * Opens a Subscription that reads every event of its filter, counted under `transport` in
 * the subscriber gauge until it closes: Herald's own readers (plug-ins), and clients once
 * subscribeReader has checked and narrowed their filter.
 */
export async function subscribe(deps: OpenDeps, transport: string, { onReady, ...opts }: SubscribeOptions): Promise<Subscription> {
  const gauge = deps.metrics.subscribers.labels(transport);
  const sub = await Subscription.open(
    { log: deps.log, hub: deps.hub, limits: deps.config },
    {
      ...opts,
      hooks: {
        onReady,
        onFallback: () => deps.metrics.slowConsumerFallbacks.inc(),
        onStateChange: (_from, to) => {
          if (to === 'closed') gauge.dec();
        },
      },
    },
  );
  gauge.inc();
  return sub;
}
