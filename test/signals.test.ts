/**
 * The stop-signal state machine of src/signals.ts, on a stand-in process. The real process
 * tree (npm → node → PostgreSQL, signals from outside) is in test/process.test.ts.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.ts';
import { handleStopSignals, SAME_REQUEST_WINDOW_MS } from '../src/signals.ts';

function fakeProcess() {
  const proc = Object.assign(new EventEmitter(), { exits: [] as number[], exit: (code: number) => void proc.exits.push(code) });
  let clock = 0;
  const signals = handleStopSignals({ logger: createLogger('silent'), process: proc, now: () => clock });
  return { proc, signals, advance: (ms: number) => (clock += ms) };
}

/** A close() the test finishes by hand, counting its calls. */
function deferredClose() {
  let finish!: (err?: Error) => void;
  const calls = { n: 0 };
  const close = () => {
    calls.n++;
    return new Promise<void>((resolve, reject) => (finish = (err) => (err ? reject(err) : resolve())));
  };
  return { close, calls, finish: (err?: Error) => finish(err) };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('stop signals', () => {
  it('the first SIGTERM closes once and exits 0; the same request relayed again within the window is ignored', async () => {
    const { proc, signals, advance } = fakeProcess();
    const c = deferredClose();
    signals.started(c.close);
    expect(signals.state).toBe('running');
    proc.emit('SIGTERM');
    advance(SAME_REQUEST_WINDOW_MS - 1);
    proc.emit('SIGINT');
    expect(c.calls.n).toBe(1);
    expect(signals.state).toBe('stopping');
    c.finish();
    await tick();
    expect(proc.exits).toEqual([0]);
  });

  it('a second signal after the window exits at once with status 1', () => {
    const { proc, signals, advance } = fakeProcess();
    const c = deferredClose();
    signals.started(c.close);
    proc.emit('SIGINT');
    advance(SAME_REQUEST_WINDOW_MS);
    proc.emit('SIGINT');
    expect(proc.exits).toEqual([1]);
    expect(c.calls.n).toBe(1);
  });

  it('a signal during start-up is kept and the close runs as soon as start-up ends', async () => {
    const { proc, signals } = fakeProcess();
    proc.emit('SIGTERM');
    expect(signals.state).toBe('stop-requested');
    expect(proc.exits).toEqual([]);
    const c = deferredClose();
    signals.started(c.close);
    expect(c.calls.n).toBe(1);
    c.finish();
    await tick();
    expect(proc.exits).toEqual([0]);
  });

  it('a failed close exits with status 1', async () => {
    const { proc, signals } = fakeProcess();
    const c = deferredClose();
    signals.started(c.close);
    proc.emit('SIGTERM');
    c.finish(new Error('pool would not end'));
    await tick();
    expect(proc.exits).toEqual([1]);
  });
});
