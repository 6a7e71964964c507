/** /: live figures: the log head (from checkpoints), connected clients and job counts. */
import { connect } from 'herald-client';
import { fragmentToken } from './lib/fragment-token.ts';

const headEl = document.querySelector<HTMLElement>('#head')!;
const clientsEl = document.querySelector<HTMLElement>('#clients')!;
const jobsEl = document.querySelector<HTMLElement>('#jobs')!;

async function refresh(): Promise<void> {
  try {
    const s = (await (await fetch('/api/v1/status')).json()) as {
      listener: { head: number };
      clients: { websockets: number; subscribers: number };
      jobs: Record<string, number> | null;
    };
    headEl.textContent = String(s.listener.head);
    clientsEl.textContent = String(s.clients.websockets);
    jobsEl.textContent = s.jobs ? `${s.jobs.running ?? 0} running · ${s.jobs.queued ?? 0} queued · ${s.jobs.succeeded ?? 0} done` : '—';
  } catch {
    // The next event or tick tries again.
  }
}

/** The token in `#token=…`, if any (docs/auth.md): for a server where `jobs` is private. */
const token = fragmentToken();

// Live figures follow `jobs` (each job's creation and end). Where `jobs` is private and this
// reader may not read it, the subscription is refused and the timer below keeps them fresh.
connect({
  url: location.origin,
  topics: ['jobs'],
  token,
  since: 'now',
  onEvent: () => void refresh(),
  onCheckpoint: (id) => (headEl.textContent = String(id)),
});
void refresh();
setInterval(() => void refresh(), 5000);
