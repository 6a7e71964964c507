/**
 * Under attack (issue 12): for DURATION_MS a producer publishes 20 events/s over HTTP while
 * 100 WebSocket clients follow live, first undisturbed, then while 12 clients send the worst
 * catch-up reads the API allows and abandon them (peers/attackers.ts) and 20 clients loop
 * non-matching since=0 polls. Publish round trip p99, commit-to-client p99 and /readyz in
 * both phases (targets: ≤ 100 ms each during the attack, /readyz always 200). Herald runs
 * with its default limits, in its own process; the attackers in another.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { createPool } from '../src/db/pool.ts';
import { createLogger } from '../src/logger.ts';
import { peer } from './peers/ipc.ts';
import { benchDatabase, percentile, printTable, type Row } from './support.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const spawnPeer = (file: string, env: Record<string, string> = {}) =>
  peer(fork(here(file), [], { execArgv: ['--import', 'tsx'], env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));

const EVENTS = Number(process.env.BENCH_ATTACK_EVENTS ?? 300_000);
const DURATION_MS = Number(process.env.BENCH_ATTACK_MS ?? 15_000);
const FOLLOWERS = 100;
const RATE_PER_S = 20;
const WORST = 12;
const LOOPERS = 20;
/** An abandoned read: the issue's attacker gave up after 2 s. */
const ABANDON_MS = 2000;
const TOKEN = 'bench-attack-publisher-token-0123';
const LIVE_TOPIC = 'live:feed';
/**
 * The worst filter: HERALD_MAX_FILTER_ENTRIES (100) prefix patterns, each broad (150 topics,
 * more than PATTERN_TOPICS_MAX) and rare (together 5% of the log). Unbounded, a read would
 * probe 101 topics of each pattern to tell it is broad, walk 10,000 ids, fall short of a
 * page, then probe every topic of every pattern (25,000 probes); within the read's work
 * budget it stops at PATTERN_PROBES_MAX probes and answers from a shorter walk (events/log.ts).
 */
const PATTERNS = Array.from({ length: 100 }, (_, i) => `a${String(i).padStart(2, '0')}:*`);

// 5% of the events under the attacked namespaces, ~1 event per topic; the rest on 50 bulk topics.
const LOAD_SQL = `
  select count(*) from herald.append((
    select jsonb_agg(jsonb_build_object(
      'topic', case when g % 20 = 0
                    then 'a' || lpad(((g / 20) % 100)::text, 2, '0') || ':t' || ((g / 2000) % 150)
                    else 'bulk:' || (g % 50) end,
      'type', 'x',
      'data', jsonb_build_object('n', g)))
    from generate_series($1::int, $2::int) g))`;

interface Phase {
  publishMs: number[];
  lagMs: number[];
  readyz: { ok: number; other: number; ms: number[] };
  attack: Record<string, number>;
}

async function phase(url: string, attackers: ReturnType<typeof spawnPeer> | null, durationMs = DURATION_MS): Promise<Phase> {
  const out: Phase = { publishMs: [], lagMs: [], readyz: { ok: 0, other: 0, ms: [] }, attack: {} };
  const followers = await Promise.all(
    Array.from(
      { length: FOLLOWERS },
      () =>
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/ws`);
          ws.on('error', reject);
          ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', topics: [LIVE_TOPIC], since: 'now' })));
          ws.on('message', (data: WebSocket.RawData) => {
            const m = JSON.parse(data.toString()) as { op: string; at?: string };
            if (m.op === 'subscribed') resolve(ws);
            else if (m.op === 'event') out.lagMs.push(Date.now() - Date.parse(m.at!));
          });
        }),
    ),
  );
  const end = Date.now() + durationMs;
  const attack = attackers?.call<Record<string, number>>('attack', {
    url,
    worst: WORST,
    loopers: LOOPERS,
    durationMs,
    abandonMs: ABANDON_MS,
    patterns: PATTERNS,
  });
  const producer = (async () => {
    for (let i = 0; Date.now() < end; i++) {
      const due = Date.now() + 1000 / RATE_PER_S;
      const t0 = performance.now();
      const res = await fetch(`${url}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify({ topic: LIVE_TOPIC, type: 'tick', data: { i } }),
      });
      await res.body?.cancel();
      if (res.status !== 201) throw new Error(`publish answered ${res.status}`);
      out.publishMs.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
    }
  })();
  const readyz = (async () => {
    while (Date.now() < end) {
      const t0 = performance.now();
      const res = await fetch(`${url}/readyz`);
      await res.body?.cancel();
      out.readyz.ms.push(performance.now() - t0);
      if (res.status === 200) out.readyz.ok++;
      else out.readyz.other++;
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  await Promise.all([producer, readyz]);
  out.attack = (await attack) ?? {};
  // The last events' deliveries.
  await new Promise((r) => setTimeout(r, 500));
  for (const ws of followers) ws.terminate();
  return out;
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const pool = createPool(db.url, 2, createLogger('silent'));
  // Loaded before Herald starts: its catch-up window then starts at the head, and since=0
  // reads go to the table, as they would on a server that has run for a while.
  const t0 = Date.now();
  for (let from = 1; from <= EVENTS; from += 10_000) await pool.query(LOAD_SQL, [from, Math.min(EVENTS, from + 9999)]);
  console.error(`attack: loaded ${EVENTS} events in ${Date.now() - t0} ms`);
  const herald = spawnPeer('./peers/herald-server.ts', {
    BENCH_DATABASE_URL: db.url,
    // BENCH_HERALD_CONFIG (JSON) over the bench's own settings, e.g. to try other limits.
    BENCH_HERALD_CONFIG: JSON.stringify({ workers: 0, exporter: false, publishTokens: [TOKEN], ...JSON.parse(process.env.BENCH_HERALD_CONFIG ?? '{}') }),
  });
  const attackers = spawnPeer('./peers/attackers.ts');
  try {
    await Promise.all([herald.ready, attackers.ready]);
    const url = await herald.call<string>('url');
    // Unmeasured: JIT, connection pools, the first subscribes.
    await phase(url, null, 3000);
    // What one worst read costs alone, to the statement timeout (HERALD_READ_TIMEOUT_MS).
    const w0 = performance.now();
    const alone = await fetch(`${url}/v1/events?since=0&limit=1000&${PATTERNS.map((p) => `topic=${encodeURIComponent(p)}`).join('&')}`);
    await alone.body?.cancel();
    console.error(`attack: one worst read alone answered ${alone.status} in ${Math.round(performance.now() - w0)} ms`);
    const quiet = await phase(url, null);
    const attacked = await phase(url, attackers);
    const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
    const rows: Row[] = [
      ['no attack', quiet],
      ['under attack', attacked],
    ].map(([name, p]) => {
      const ph = p as Phase;
      const pub = sorted(ph.publishMs);
      const lag = sorted(ph.lagMs);
      const rz = sorted(ph.readyz.ms);
      return {
        phase: name as string,
        publishes: pub.length,
        'publish p50 ms': percentile(pub, 50),
        'publish p99 ms': percentile(pub, 99),
        deliveries: lag.length,
        'commit→client p50 ms': percentile(lag, 50),
        'commit→client p99 ms': percentile(lag, 99),
        '/readyz 200': `${ph.readyz.ok}/${ph.readyz.ok + ph.readyz.other}`,
        '/readyz p99 ms': percentile(rz, 99),
        'attack answers':
          Object.entries(ph.attack)
            .sort()
            .map(([k, v]) => `${k}×${v}`)
            .join(', ') || '—',
      };
    });
    printTable(
      `Under attack: ${RATE_PER_S} events/s published over HTTP, ${FOLLOWERS} WebSocket followers, ${DURATION_MS / 1000} s per phase, log of ${EVENTS} events; attack = ${WORST} clients sending since=0 with ${PATTERNS.length} broad rare prefix patterns (limit 1000) abandoned after ${ABANDON_MS} ms, plus ${LOOPERS} clients looping since=0&topic=nope:x (targets: publish and commit→client p99 ≤ 100 ms under attack, /readyz always 200)`,
      rows,
    );
    return rows;
  } finally {
    herald.kill();
    attackers.kill();
    await pool.end();
    await db.stop();
  }
}
