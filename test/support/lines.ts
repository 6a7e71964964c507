/**
 * Collects text (a child's stdout, a logger's output) as whole lines and wakes waiters as
 * each line arrives, so tests wait on the line itself rather than polling or sleeping.
 */
import { Writable } from 'node:stream';

interface Waiter {
  predicate: (line: string) => boolean;
  resolve: (line: string) => void;
}

export class LineCollector {
  /** Every complete line so far, without its newline. */
  readonly lines: string[] = [];
  private partial = '';
  private readonly waiters = new Set<Waiter>();

  /** Adds a chunk of text; a line is complete at its newline. */
  push(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop()!;
    for (const line of parts) {
      this.lines.push(line);
      for (const w of this.waiters) {
        if (w.predicate(line)) {
          this.waiters.delete(w);
          w.resolve(line);
        }
      }
    }
  }

  /** A pino destination (or any Writable) that feeds this collector. */
  writable(): Writable {
    return new Writable({
      write: (chunk: Buffer, _encoding, cb) => {
        this.push(chunk.toString('utf8'));
        cb();
      },
    });
  }

  /** The lines parsed as JSON; throws on the first line that is not JSON, naming it. */
  json(): Record<string, unknown>[] {
    return this.lines.map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON line: ${line}`);
      }
    });
  }

  /** Resolves with the first line, already seen or still to come, that matches; rejects after `timeoutMs`. */
  waitFor(predicate: (line: string) => boolean, timeoutMs = 30_000, what = 'a matching line'): Promise<string> {
    const seen = this.lines.find(predicate);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; lines so far:\n${this.lines.join('\n')}`));
      }, timeoutMs);
      const waiter: Waiter = {
        predicate,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      this.waiters.add(waiter);
    });
  }

  /** waitFor() on JSON lines: resolves with the first parsed line that matches. */
  async waitForJson(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>> {
    const parse = (line: string) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        return undefined;
      }
    };
    const line = await this.waitFor(
      (l) => {
        const j = parse(l);
        return j !== undefined && predicate(j);
      },
      timeoutMs,
      what,
    );
    return parse(line)!;
  }
}
