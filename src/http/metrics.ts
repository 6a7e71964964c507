/** Prometheus metrics. One registry per Herald instance (tests run several in one process). */
import client from 'prom-client';

/** Builds this process's metrics: a fresh prom-client registry with Herald's counters, gauges and histograms. */
export function createMetrics() {
  const registry = new client.Registry();
  const collectors: (() => void)[] = [];
  client.collectDefaultMetrics({ register: registry });
  const m = {
    registry,
    eventsAppended: new client.Counter({
      name: 'herald_events_appended_total',
      help: 'Events appended through POST /v1/events on this process.',
      registers: [registry],
    }),
    eventsRead: new client.Counter({
      name: 'herald_events_read_total',
      help: 'Events read from the log by the listener and published to the hub.',
      registers: [registry],
    }),
    subscribers: new client.Gauge({ name: 'herald_subscribers', help: 'Open subscriptions, by transport.', labelNames: ['transport'], registers: [registry] }),
    deliveries: new client.Counter({
      name: 'herald_deliveries_total',
      help: 'Events (WebSocket: frames) delivered to clients, by transport.',
      labelNames: ['transport'],
      registers: [registry],
    }),
    deliveryLag: new client.Histogram({
      name: 'herald_delivery_lag_seconds',
      help: 'Commit-to-delivery time of the first event of each delivered batch (WebSocket: once per batch, at its first write).',
      labelNames: ['transport'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [registry],
    }),
    listenerReconnects: new client.Counter({
      name: 'herald_listener_reconnects_total',
      help: 'Times the LISTEN connection was re-established.',
      registers: [registry],
    }),
    listenerHead: new client.Gauge({ name: 'herald_listener_head', help: 'Highest event id the listener has published.', registers: [registry] }),
    slowConsumerFallbacks: new client.Counter({
      name: 'herald_slow_consumer_fallbacks_total',
      help: 'Subscribers whose buffer overflowed and went back to table reads.',
      registers: [registry],
    }),
    slowConsumerCloses: new client.Counter({
      name: 'herald_slow_consumer_closes_total',
      help: 'Connections closed because they did not drain in time.',
      labelNames: ['transport'],
      registers: [registry],
    }),
    wsConnections: new client.Gauge({ name: 'herald_ws_connections', help: 'Open WebSocket connections.', registers: [registry] }),
    wsQueuedBytes: new client.Gauge({
      name: 'herald_ws_queued_bytes',
      help: 'Bytes buffered for WebSocket clients (subscription buffers plus unsent socket bytes).',
      registers: [registry],
    }),
    wsQueuedBytesMax: new client.Gauge({
      name: 'herald_ws_queued_bytes_max',
      help: 'Bytes buffered for the most backed-up WebSocket client.',
      registers: [registry],
    }),
    wsBytesOut: new client.Counter({ name: 'herald_ws_bytes_out_total', help: 'Bytes of event frames written to WebSocket clients.', registers: [registry] }),
    wsPolicyCloses: new client.Counter({
      name: 'herald_ws_policy_closes_total',
      help: 'WebSocket connections closed with 1008 (subscribe flood).',
      registers: [registry],
    }),
    fanoutSeconds: new client.Histogram({
      name: 'herald_fanout_seconds',
      help: 'Time to hand one listener batch to every matching subscriber, including the socket writes to live WebSocket clients (per batch).',
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5],
      registers: [registry],
    }),
    exporterLag: new client.Gauge({ name: 'herald_exporter_lag_events', help: 'Log head minus the exporter cursor.', registers: [registry] }),
    exportObjects: new client.Counter({
      name: 'herald_export_objects_total',
      help: 'Bucket objects by outcome: written, skipped (unchanged), deleted.',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    exportFailures: new client.Counter({
      name: 'herald_export_failures_total',
      help: 'Export passes that failed and were retried from the cursor.',
      registers: [registry],
    }),
    eventsPruned: new client.Counter({ name: 'herald_events_pruned_total', help: 'Events deleted by retention.', registers: [registry] }),
    /**
     * The WebSocket write path runs once per client per batch, where one prom-client inc()
     * costs as much as the write it counts: bytes are tallied in a plain number instead,
     * folded into herald_ws_bytes_out_total at each scrape (deliveries: DeliveryTally,
     * src/gateway/stream-policy.ts).
     */
    wsTally: { bytes: 0 },
    /** Registers a callback run before each scrape (for values computed on demand). */
    onCollect(fn: () => void) {
      collectors.push(fn);
    },
    /** Runs the on-demand collectors; called by the /metrics handler. */
    collect() {
      if (m.wsTally.bytes > 0) m.wsBytesOut.inc(m.wsTally.bytes);
      m.wsTally.bytes = 0;
      for (const fn of collectors) fn();
    },
  };
  return m;
}

/** The metrics of one process, as createMetrics() builds them. */
export type Metrics = ReturnType<typeof createMetrics>;
