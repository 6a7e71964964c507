/**
 * /jobs/<id>: the job's status and log, live. History up to a head read first comes from
 * the logs endpoint; everything after that head comes live over WebSocket through the
 * client library (or long-poll where WebSocket fails), deduplicated by log id, so a server
 * restart or a level change never loses or repeats a line.
 *
 * Private jobs (HERALD_PRIVATE_TOPIC_PREFIXES=job:): the page reads a token from the address's
 * fragment, `/jobs/42#token=<a JWT granting job:42, or a read token>`, and sends it with its
 * requests (docs/auth.md). A fragment is never sent to the server, so the token is not in
 * any request line, access log or Referer; it stays in the address so a reload keeps working.
 * Without a token (or with one that may not read the job) the server refuses `job:<id>` and
 * the page says so, rather than failing silently.
 */
import { connect, type HeraldConnection, type HeraldEvent } from 'herald-client';
import { fragmentToken } from './lib/fragment-token.ts';

interface Job {
  id: number;
  status: string;
  error: string | null;
  attempts: number;
  type: string;
}
interface Line {
  id: number;
  level: string;
  message: string;
  at: string;
  truncated?: boolean;
}

const LEVELS = ['debug', 'info', 'warn', 'error'];
const root = document.querySelector<HTMLElement>('[data-job]')!;
const jobId = Number(root.dataset.job);
const logEl = document.querySelector<HTMLOListElement>('#log')!;
const statusEl = document.querySelector<HTMLElement>('#status')!;
const progressEl = document.querySelector<HTMLElement>('#progress')!;
const connEl = document.querySelector<HTMLElement>('#connection')!;
const levelEl = document.querySelector<HTMLSelectElement>('#level')!;
const errorEl = document.querySelector<HTMLElement>('#job-error')!;
const accessEl = document.querySelector<HTMLElement>('#access')!;
const topic = `job:${jobId}`;
/** The token in `#token=…`, if any: read once (see the comment at the top). */
const token = fragmentToken();
const authHeaders: HeadersInit = token ? { authorization: `Bearer ${token}` } : {};

let seen = new Set<number>();
let conn: HeraldConnection | null = null;
let generation = 0;

function renderStatus(job: Job): void {
  statusEl.textContent = job.status;
  statusEl.className = `status ${job.status}`;
  progressEl.hidden = !(job.status === 'queued' || job.status === 'running');
  errorEl.textContent = job.error ? `Error: ${job.error}` : '';
  root.dataset.status = job.status;
}

function append(line: Line, min: number): void {
  if (seen.has(line.id) || LEVELS.indexOf(line.level) < min) return;
  seen.add(line.id);
  const li = document.createElement('li');
  li.className = line.level;
  li.dataset.id = String(line.id);
  const lvl = document.createElement('span');
  lvl.className = 'lvl';
  lvl.textContent = line.level;
  const time = document.createElement('time');
  time.dateTime = line.at;
  time.textContent = `${line.at.slice(11, 19)} `;
  li.append(time, lvl, document.createTextNode(` ${line.message}${line.truncated ? ' [truncated]' : ''}`));
  logEl.append(li);
}

/** The server refused to stream `job:<id>` to this reader: say why and how to get in. */
function refused(code: string, message: string): void {
  accessEl.hidden = false;
  if (code === 'forbidden' && !token) {
    accessEl.textContent = `This job's events are private: open the link with #token=<a token that may read ${topic}> to follow it live.`;
  } else if (code === 'forbidden') {
    accessEl.textContent = `The token in this link may not read ${topic}: ask for a link with a token that grants it.`;
  } else if (code === 'token_expired') {
    accessEl.textContent = 'The token in this link has expired: open a fresh link to follow this job live.';
  } else {
    accessEl.textContent = `The token in this link was refused (${code}): ${message}`;
  }
  connEl.textContent = `stopped: ${code}`;
}

const ACCESS_CODES = new Set(['forbidden', 'unauthorized', 'token_expired']);

function onEvent(e: HeraldEvent, min: number): void {
  if (e.type === 'status') renderStatus(e.data as Job);
  else if (e.type === 'log') append(e.data as Line, min);
}

async function longPoll(since: number, min: number, gen: number): Promise<void> {
  connEl.textContent = 'following (long-poll)';
  let next = since;
  while (gen === generation) {
    try {
      const r = await fetch(`/v1/events?topic=${topic}&since=${next}&wait=25`, { headers: authHeaders });
      if (r.status === 401 || r.status === 403) {
        const body = (await r.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
        if (gen === generation) refused(body?.error?.code ?? (r.status === 403 ? 'forbidden' : 'unauthorized'), body?.error?.message ?? String(r.status));
        return;
      }
      if (!r.ok) throw new Error(String(r.status));
      const body = (await r.json()) as { events: HeraldEvent[]; next: number };
      if (gen !== generation) return;
      for (const e of body.events) onEvent(e, min);
      next = body.next;
    } catch {
      connEl.textContent = 'reconnecting (long-poll)';
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
}

/** A refused GET: the server's error code (`forbidden` for a private job) and message. */
class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** GET a JSON answer; a non-2xx status is an ApiError naming the route and the server's message. */
async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url, { headers: authHeaders });
  if (r.ok) return (await r.json()) as T;
  const body = (await r.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
  throw new ApiError(body?.error?.code ?? String(r.status), `GET ${url} answered ${r.status}${body?.error?.message ? `: ${body.error.message}` : ''}`);
}

async function start(): Promise<void> {
  const gen = ++generation;
  conn?.close();
  conn = null;
  seen = new Set();
  logEl.replaceChildren();
  accessEl.hidden = true;
  const min = LEVELS.indexOf(levelEl.value);
  const { head } = await getJson<{ head: number }>('/v1/head');
  // History up to `head` (and possibly a little past it: duplicates are dropped by id).
  for (let since = 0; ; ) {
    const r = await getJson<{ logs: Line[]; next: number }>(`/api/v1/jobs/${jobId}/logs?since=${since}&level=${levelEl.value}&limit=1000`);
    for (const l of r.logs) append(l, min);
    if (r.logs.length < 1000) break;
    since = r.next;
  }
  renderStatus(await getJson<Job>(`/api/v1/jobs/${jobId}`));
  if (gen !== generation) return;
  if (typeof WebSocket === 'undefined') return void longPoll(head, min, gen);
  let opened = false;
  let failures = 0;
  conn = connect({
    url: location.origin,
    topics: [topic],
    token,
    since: head,
    onEvent: (e) => onEvent(e, min),
    onStateChange: (s) => {
      if (s === 'open') opened = true;
      if (s === 'reconnecting' && !opened && ++failures >= 3 && gen === generation) {
        // WebSocket does not get through (a proxy?): long-poll from the same cursor.
        conn?.close();
        void longPoll(conn?.position ?? head, min, gen);
        return;
      }
      connEl.textContent = s === 'open' ? 'live' : s;
    },
    onError: (err) => {
      if (gen !== generation) return;
      if (ACCESS_CODES.has(err.code)) refused(err.code, err.message);
      else connEl.textContent = `stopped: ${err.message}`;
    },
  });
}

// A failed start (the server unreachable or refusing) is shown, not left as a script error.
// The job's record and log lines are as private as its events: a refusal there is told the same way.
const begin = () =>
  start().catch((err: Error) => {
    if (err instanceof ApiError && ACCESS_CODES.has(err.code)) refused(err.code, err.message);
    else connEl.textContent = `stopped: ${err.message}`;
  });
levelEl.addEventListener('change', () => void begin());
void begin();
