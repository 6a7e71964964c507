/**
 * The registry's few web pages: home (what this is, how to publish, the protocol in short,
 * live figures), a job's live log, a live event tail, a package's versions from the
 * exported API, and the takedown request form. Plain HTML rendered here (every value
 * escaped), one stylesheet, and small scripts bundled ahead of time into dist/web.
 */
import { existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import express, { type Request, type Response, Router } from 'express';
import { z } from 'zod';
import type { Config } from '../config.ts';
import type { Bucket } from '../exporter/bucket.ts';
import type { JobStore } from '../jobs/store.ts';
import { isPrivateTopic } from '../events/topic.ts';
import { jobTopic } from '../jobs/routes.ts';
import { TokenBucket } from '../token-bucket.ts';
import { submitJob } from './job-types.ts';
import { PACKAGE_NAME_RE } from './names.ts';
import type { TakedownStore } from './takedown-store.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Where the pages' scripts are bundled to (`npm run build`). */
export const WEB_DIST = `${ROOT}dist/web`;

/**
 * The security headers of everything the pages router serves. The pages load only their own
 * stylesheet (/static) and bundled scripts (/assets), and talk only to this origin (fetch,
 * long-poll and the WebSocket, which CSP's 'self' covers as ws:/wss:), so the policy allows
 * 'self' and nothing more: no inline script or style (none is used), no plugins, no <base>;
 * the takedown form posts only here; no page may be framed (clickjacking; X-Frame-Options for
 * browsers without frame-ancestors). Job ids in addresses stay out of Referer headers, and
 * nothing is content-sniffed into a type it was not served as.
 */
export const PAGE_SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
});

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function page(title: string, body: string, opts: { script?: string; noindex?: boolean } = {}): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${opts.noindex ? '<meta name="robots" content="noindex, nofollow">\n' : ''}<title>${esc(title)} · Herald registry</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<header>
  <a class="brand" href="/">Herald registry</a>
  <nav aria-label="Main"><a href="/events">Live events</a><a href="/takedown">Takedown request</a><a href="/api/v1/status">Status</a></nav>
</header>
<main id="main">
${body}
</main>
<footer class="muted"><p>Realtime by Herald: every change is an event you can follow with <code>since=&lt;id&gt;</code>.</p></footer>
${opts.script ? `<script type="module" src="/assets/${opts.script}.js"></script>` : ''}
</body>
</html>`;
}

function home(origin: string): string {
  return page(
    'Home',
    `<h1>A package registry with a live back end</h1>
<p>Every publish, unpublish and transfer runs as a job. Each status change and log line is an event on the log, so you can watch any operation live, here or from your own client, and resume from where you left off.</p>
<ul class="stats" aria-live="polite">
  <li>Log head <strong id="head">…</strong></li>
  <li>Connected clients <strong id="clients">…</strong></li>
  <li>Jobs <strong id="jobs">…</strong></li>
</ul>
<h2>Publish a package</h2>
<p>Get a token from an operator (<code>herald token create --user NAME</code>), then upload a <code>.tar.gz</code> with <code>manifest.json</code> at its root:</p>
<pre><code>curl -X POST "${esc(origin)}/api/v1/publish?name=left-pad&amp;version=1.0.0" \\
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/gzip" \\
  --data-binary @left-pad-1.0.0.tar.gz
# {"jobId":42,"status":"queued"}</code></pre>
<p>Then watch it at <code>/jobs/42</code>, or poll <code>GET /api/v1/jobs/42/logs?since=0</code>.</p>
<h2>The API in short</h2>
<ul>
  <li><code>POST /api/v1/publish | unpublish | transfer | retract | moderate | advisory</code>: returns <code>{jobId}</code>.</li>
  <li><code>GET /api/v1/jobs/&lt;id&gt;</code>, <code>GET /api/v1/jobs/&lt;id&gt;/logs?since=&lt;logId&gt;&amp;level=info</code>.</li>
  <li><code>GET /api/packages/&lt;name&gt;</code>: the exported, cacheable package listing (see <a href="/packages/left-pad">a package page</a>).</li>
</ul>
<h2>Realtime protocol</h2>
<ul>
  <li>WebSocket <code>/v1/ws</code>: send <code>{"op":"subscribe","topics":["job:42"],"since":0}</code>; receive <code>{"op":"event",id,topic,type,data,at}</code>, each id once, in order.</li>
  <li>Server-Sent Events <code>/v1/events/stream?topic=job:42&amp;since=0</code> (resumes with <code>Last-Event-ID</code>).</li>
  <li>Long-poll <code>/v1/events?topic=job:42&amp;since=0&amp;wait=30</code>; send <code>next</code> as <code>since</code> next time.</li>
  <li>Topics: <code>job:&lt;id&gt;</code>, <code>jobs</code>, <code>package:&lt;name&gt;</code>, <code>index</code>; a trailing <code>*</code> matches a prefix.</li>
</ul>
<p>See also the <a href="/events">live event tail</a> and the <a href="/takedown">takedown request form</a>.</p>`,
    { script: 'home' },
  );
}

function jobPage(id: number): string {
  return page(
    `Job ${id}`,
    `<div data-job="${id}">
<h1>Job ${id} <span id="status" class="status" role="status">loading</span></h1>
<div id="progress" class="progress" hidden aria-label="Job in progress"><span></span></div>
<p class="muted">Connection: <span id="connection">connecting</span></p>
<p id="job-error" role="alert"></p>
<p id="access" class="access" role="alert" hidden></p>
<label for="level">Show log lines at level</label>
<select id="level"><option value="debug">debug and up</option><option value="info" selected>info and up</option><option value="warn">warn and up</option><option value="error">error only</option></select>
<h2>Log</h2>
<ol id="log" class="log" aria-live="polite"></ol>
</div>`,
    { script: 'job', noindex: true },
  );
}

function notAJobPage(raw: string): string {
  const body = `<h1>Not a job id</h1>
<p>${esc(raw)} is not a job id: job ids are positive integers, as in <code>/jobs/42</code>.</p>`;
  return page('Not a job id', body, { noindex: true });
}

function noSuchJobPage(id: number): string {
  const body = `<h1>Job ${id} not found</h1>
<p>There is no job ${id}. A job id comes from the answer to a submission (<code>{"jobId":…}</code>).</p>`;
  return page('Job not found', body, { noindex: true });
}

/** The tail; `topics` is the filter from the URL (`?topic=…`, repeatable, as in GET /v1/events). */
function eventsPage(topics: string): string {
  return page(
    'Live events',
    `<h1>Live events</h1>
<p class="muted">The matching events among the last 50 log positions, then new ones as they commit. The address keeps the filter and the position reached: reload or share it to resume there.</p>
<form id="filter" role="search">
  <label for="topic">Topics (space-separated; <code>prefix*</code> patterns)</label>
  <input id="topic" name="topic" value="${esc(topics)}" autocomplete="off">
  <button type="submit">Follow</button>
  <button type="button" id="pause" aria-pressed="false">Pause</button>
</form>
<p class="muted">Connection: <span id="connection">connecting</span> <span id="pending"></span></p>
<ol id="events" class="log" aria-live="off"></ol>`,
    { script: 'events' },
  );
}

interface Listing {
  name: string;
  latest: string | null;
  versions: { version: string; publishedAt: string; retracted: boolean; sha256: string; archive: string }[];
}
interface Advisories {
  advisories: { id: string; summary: string; affected: string }[];
}

function packagePage(listing: Listing, adv: Advisories | null): string {
  const rows = [...listing.versions]
    .reverse()
    .map(
      (v) =>
        `<tr><td><a href="${esc(v.archive)}">${esc(v.version)}</a>${v.retracted ? ' <em>(retracted)</em>' : ''}</td><td><time datetime="${esc(v.publishedAt)}">${esc(v.publishedAt.slice(0, 10))}</time></td><td><code>${esc(v.sha256.slice(0, 12))}…</code></td></tr>`,
    )
    .join('\n');
  const advs = adv?.advisories.length
    ? `<ul>${adv.advisories.map((a) => `<li><strong>${esc(a.id)}</strong> (affects <code>${esc(a.affected)}</code>): ${esc(a.summary)}</li>`).join('')}</ul>`
    : '<p>No advisories.</p>';
  return page(
    listing.name,
    `<h1>${esc(listing.name)}</h1>
<p>Latest stable version: <strong>${esc(listing.latest ?? 'none')}</strong></p>
<h2>Versions</h2>
<table><caption class="visually-hidden">Versions of ${esc(listing.name)}</caption><thead><tr><th scope="col">Version</th><th scope="col">Published</th><th scope="col">SHA-256</th></tr></thead><tbody>
${rows}
</tbody></table>
<h2>Advisories</h2>
${advs}`,
  );
}

// PostgreSQL text cannot hold U+0000 (the insert would fail after the job was created).
const noNul = (s: string) => !s.includes('\u0000');
const takedownForm = z.object({
  package: z.string().regex(PACKAGE_NAME_RE, 'Package must be a package name (lower-case letters, digits, - and _).'),
  name: z.string().trim().min(2, 'Your name is required.').max(200, 'Your name is too long.').refine(noNul, 'Your name contains a NUL character; remove it.'),
  email: z.string().trim().email('A valid email address is required, so a trustee can answer.').max(320),
  reason: z
    .string()
    .trim()
    .min(20, 'Describe the request in at least 20 characters.')
    .max(5000, 'The description is limited to 5000 characters.')
    .refine(noNul, 'The description contains a NUL character; remove it.'),
});
type TakedownInput = Partial<Record<keyof z.infer<typeof takedownForm>, string>>;

function takedownPage(values: TakedownInput = {}, errors: string[] = [], done?: { id: number }): string {
  const v = (k: keyof TakedownInput) => esc(values[k] ?? '');
  return page(
    'Takedown request',
    `<h1>Takedown request</h1>
${done ? `<p class="notice" role="status">Request recorded as <a href="/jobs/${done.id}">job ${done.id}</a>. A trustee will review it; keep this number.</p>` : ''}
${errors.length ? `<div class="errors" role="alert"><p>Please fix the following:</p><ul>${errors.map((e) => `<li>${esc(e)}</li>`).join('')}</ul></div>` : ''}
<p>Use this form to ask the registry's trustees to remove a package (copyright, trademark, malware, personal data). Your contact details are seen only by trustees.</p>
<form method="post" action="/takedown">
  <label for="package">Package name</label><input id="package" name="package" required value="${v('package')}" autocomplete="off">
  <label for="name">Your name</label><input id="name" name="name" required value="${v('name')}" autocomplete="name">
  <label for="email">Your email</label><input id="email" name="email" type="email" required value="${v('email')}" autocomplete="email">
  <label for="reason">What is wrong, and what you ask for</label><textarea id="reason" name="reason" rows="6" required>${v('reason')}</textarea>
  <button type="submit">Send request</button>
</form>`,
  );
}

/** A JSON object from the bucket (stored gzip-encoded by the exporter), or null. */
async function readJson<T>(bucket: Pick<Bucket, 'get'>, key: string): Promise<T | null> {
  const obj = await bucket.get(key);
  if (!obj) return null;
  const text = (obj.meta.contentEncoding === 'gzip' ? gunzipSync(obj.body) : obj.body).toString('utf8');
  return JSON.parse(text) as T;
}

/** A token bucket per client address, in memory (one process; enough to stop a form flood). */
class RateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  constructor(
    private readonly burst: number,
    private readonly perHour: number,
  ) {}
  take(key: string): boolean {
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = new TokenBucket(this.burst, this.perHour / 3600)));
    const ok = b.tryTake();
    if (this.buckets.size > 10_000) this.buckets.clear(); // bounded memory
    return ok;
  }
}

/** What the pages use. */
export interface PageDeps {
  /** Job pages check the job exists; the takedown form submits one. */
  readonly jobs: Pick<JobStore, 'get' | 'submit'>;
  /** Package pages read the exported API from it. */
  readonly bucket: Pick<Bucket, 'get'>;
  readonly takedowns: TakedownStore;
  readonly settings: Pick<Config, 'takedownBurst' | 'takedownPerHour' | 'exportServePrefix' | 'privateTopicPrefixes'>;
}

/** The web pages, their stylesheet and scripts. */
export function createPageRoutes({ jobs, bucket, takedowns, settings }: PageDeps): Router {
  const router = Router();
  const limiter = new RateLimiter(settings.takedownBurst, settings.takedownPerHour);
  const secure = (res: Response) => res.set(PAGE_SECURITY_HEADERS);
  const html = (res: Response, status: number, body: string) => secure(res).status(status).type('html').set('cache-control', 'no-store').send(body);
  const origin = (req: Request) => `${req.protocol}://${req.get('host') ?? 'localhost'}`;

  router.use('/static', express.static(`${ROOT}web/static`, { maxAge: '1h', index: false, setHeaders: secure }));
  router.use('/assets', express.static(WEB_DIST, { maxAge: '1h', index: false, setHeaders: secure }));
  router.get('/', (req, res) => html(res, 200, home(origin(req))));
  router.get('/events', (req, res) => {
    const topics = ([] as unknown[]).concat(req.query.topic ?? []).filter((t): t is string => typeof t === 'string');
    html(res, 200, eventsPage(topics.join(' ').trim() || '*'));
  });
  router.get('/jobs/:id', async (req, res) => {
    res.set('x-robots-tag', 'noindex, nofollow');
    // Checked here, not left to the page's script: a page for a job that does not exist
    // would only fail later, in the browser, with nothing to follow.
    if (!/^[1-9][0-9]{0,15}$/.test(req.params.id)) return html(res, 400, notAJobPage(req.params.id));
    const id = Number(req.params.id);
    // A private job's page is served whether or not the job exists (the request carries no
    // token: it is in the fragment), so the page tells no stranger which jobs exist; its
    // script then reads the job under the reader's token.
    if (!isPrivateTopic(jobTopic(id), settings.privateTopicPrefixes) && !(await jobs.get(id))) return html(res, 404, noSuchJobPage(id));
    html(res, 200, jobPage(id));
  });
  router.get('/packages/:name', async (req, res) => {
    const name = req.params.name;
    if (!PACKAGE_NAME_RE.test(name)) return html(res, 400, page('Bad name', `<h1>Not a package name</h1><p>${esc(name)} is not a valid package name.</p>`));
    // The exported API: the same objects GET /api/packages/<name> serves from the bucket.
    const prefix = settings.exportServePrefix;
    const listing = await readJson<Listing>(bucket, `${prefix}/api/packages/${name}`);
    if (!listing) return html(res, 404, page('Not found', `<h1>${esc(name)}</h1><p>No such package in the exported API.</p>`));
    html(res, 200, packagePage(listing, await readJson<Advisories>(bucket, `${prefix}/api/packages/${name}/advisories`)));
  });
  router.get('/takedown', (_req, res) => html(res, 200, takedownPage()));
  router.post('/takedown', express.urlencoded({ extended: false, limit: '16kb' }), async (req, res) => {
    const values = (req.body ?? {}) as TakedownInput;
    if (!limiter.take(req.ip ?? 'unknown')) {
      return html(res, 429, takedownPage(values, ['Too many requests from your address; try again later.']));
    }
    const parsed = takedownForm.safeParse(values);
    if (!parsed.success)
      return html(
        res,
        400,
        takedownPage(
          values,
          parsed.error.issues.map((i) => i.message),
        ),
      );
    const f = parsed.data;
    const { job } = await submitJob(jobs, 'takedown', { package: f.package }, { maxAttempts: 1 });
    await takedowns.record({ jobId: job.id, package: f.package, requesterName: f.name, requesterEmail: f.email, reason: f.reason });
    html(res, 201, takedownPage({}, [], { id: job.id }));
  });
  return router;
}

/** True when the page scripts are built. */
export const webBuilt = () => existsSync(`${WEB_DIST}/job.js`);
