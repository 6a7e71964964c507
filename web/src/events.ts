/**
 * /events: a live tail of the event log, with a topic filter and a pause button.
 * Opening it shows recent history: the matching events among the HISTORY_POSITIONS log
 * positions before where it starts, replayed by the same subscription that then goes live.
 * It starts at the head, or at the `since` in the address: the filter (`topic=`, repeatable)
 * and the position reached (`since=`, every matching event up to it shown) are kept there,
 * in the query syntax of GET /v1/events, so a reload or a shared link resumes where it was.
 * A token for private topics comes in the fragment, `/events?topic=job:42#token=<JWT or read
 * token>` (docs/auth.md): a fragment is never sent to the server (not in a request line, an
 * access log or a Referer), and the address updates keep it.
 */
import { connect, type HeraldConnection, type HeraldEvent } from 'herald-client';
import { fragmentToken } from './lib/fragment-token.ts';

const MAX_ROWS = 200;
// Positions, not events: opening the page costs the server a replay of at most this many
// ids whatever the filter (a narrow filter may show fewer). "The last 50 matching" would
// mean scanning back an unbounded distance.
const HISTORY_POSITIONS = 50;
// replaceState at most this often: browsers throttle it (Safari throws past 100 calls in 30 s).
const URL_UPDATE_MS = 500;
const POSITION_RE = /^(0|[1-9][0-9]{0,15})$/;
const form = document.querySelector<HTMLFormElement>('#filter')!;
const topicEl = document.querySelector<HTMLInputElement>('#topic')!;
const pauseEl = document.querySelector<HTMLButtonElement>('#pause')!;
const list = document.querySelector<HTMLOListElement>('#events')!;
const stateEl = document.querySelector<HTMLElement>('#connection')!;
const pendingEl = document.querySelector<HTMLElement>('#pending')!;
/** The token in `#token=…`, if any (see the comment at the top). */
const token = fragmentToken();

let conn: HeraldConnection | null = null;
let generation = 0;
let paused = false;
let held: HeraldEvent[] = [];
let topics: string[] = [];
/** What the address records: every matching event up to it is on the page (not held). */
let position: number | undefined;
let urlTimer: ReturnType<typeof setTimeout> | null = null;

function parseTopics(s: string): string[] {
  const list = s.split(/[\s,]+/).filter(Boolean);
  return list.length ? list : ['*'];
}

function show(e: HeraldEvent): void {
  const li = document.createElement('li');
  li.dataset.id = String(e.id);
  const code = document.createElement('code');
  code.textContent = `#${e.id} ${e.topic} ${e.type} ${JSON.stringify(e.data).slice(0, 300)}`;
  li.append(code);
  list.prepend(li);
  while (list.children.length > MAX_ROWS) list.lastElementChild!.remove();
}

function writeUrl(): void {
  if (urlTimer) return;
  urlTimer = setTimeout(() => {
    urlTimer = null;
    const q = new URLSearchParams();
    if (!(topics.length === 1 && topics[0] === '*')) for (const t of topics) q.append('topic', t);
    if (position !== undefined) q.set('since', String(position));
    history.replaceState(null, '', `${location.pathname}?${q}${location.hash}`);
  }, URL_UPDATE_MS);
}

/** Everything delivered so far is on the page (not paused): record the position. */
function advance(): void {
  if (paused || conn?.position === undefined) return;
  position = Math.max(position ?? 0, conn.position);
  writeUrl();
}

async function follow(filter: string[], resumeAt?: number, retried = false): Promise<void> {
  const gen = ++generation;
  conn?.close();
  conn = null;
  list.replaceChildren();
  held = [];
  pendingEl.textContent = '';
  topics = filter;
  stateEl.textContent = 'connecting';
  let log: { head: number; oldest: number };
  try {
    const r = await fetch('/v1/head');
    if (!r.ok) throw new Error(`GET /v1/head answered ${r.status}`);
    log = (await r.json()) as { head: number; oldest: number };
  } catch (err) {
    if (gen === generation) stateEl.textContent = `stopped: ${(err as Error).message}`;
    return;
  }
  if (gen !== generation) return;
  // Never past the head (a `since` from another, reset database would be cursor_ahead).
  const at = Math.min(resumeAt ?? log.head, log.head);
  position = at;
  writeUrl();
  conn = connect({
    url: location.origin,
    topics: filter,
    token,
    since: Math.max(at - HISTORY_POSITIONS, log.oldest - 1, 0),
    onEvent: (e) => {
      if (paused) {
        held.push(e);
        pendingEl.textContent = `${held.length} new while paused`;
      } else show(e);
      advance();
    },
    onCheckpoint: () => advance(),
    onStateChange: (s) => {
      if (gen === generation) stateEl.textContent = s === 'open' ? 'live' : s;
    },
    onError: (err) => {
      if (gen !== generation) return;
      // Retention pruned the history between reading the head and subscribing: start again.
      if (err.code === 'cursor_expired' && !retried) return void follow(filter, resumeAt, true);
      stateEl.textContent =
        err.code === 'forbidden' && !token
          ? `stopped: ${err.message} (a private topic: open the link with #token=<a token that may read it>)`
          : `stopped: ${err.message}`;
    },
  });
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  void follow(parseTopics(topicEl.value));
});
pauseEl.addEventListener('click', () => {
  paused = !paused;
  pauseEl.textContent = paused ? 'Resume' : 'Pause';
  pauseEl.setAttribute('aria-pressed', String(paused));
  if (!paused) {
    for (const e of held) show(e);
    held = [];
    pendingEl.textContent = '';
    advance();
  }
});
// The server rendered the address's topics into the input; `since` is read here.
const since = new URLSearchParams(location.search).get('since') ?? '';
void follow(parseTopics(topicEl.value), POSITION_RE.test(since) ? Number(since) : undefined);
